"""How docbus' Kafka clients connect: plain, TLS, SASL, or SASL over TLS.

A province's Kafka is shared by many systems and spans machines: its brokers ask clients to authenticate
(SASL, SCRAM-SHA-512 by default, or PLAIN) and speak TLS, whose certificates are checked against the system's CAs
or a CA file of the operator's, with the broker's host name verified; a client certificate and key can be given
for brokers that ask for one (mutual TLS). The same options go to every producer, consumer and admin client one
process makes.

aiokafka reports a failed connection as "Unable to bootstrap" and logs the reason; :func:`connection_problem`
opens one connection the same way and returns that reason (bad credentials, an untrusted certificate, a refused
port), for ``docbus config check`` and the log.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from docbus.tls_client import checking_context

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DEFAULT_MECHANISM: Mechanism = "SCRAM-SHA-512"


@dataclass(frozen=True)
class KafkaSecurity:
    """What a client needs to connect; the default is a plain connection (a broker on loopback or a closed net)."""

    protocol: Protocol = "PLAINTEXT"
    mechanism: Mechanism = DEFAULT_MECHANISM
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None  # unset: the system's CAs
    cert_file: Path | None = None  # client certificate (and its key, if key_file is unset)
    key_file: Path | None = None
    key_password: str | None = None

    def __post_init__(self) -> None:
        if self.uses_sasl and (not self.username or self.password is None):
            raise ValueError(f"{self.protocol} needs a SASL user name and password")
        if not self.uses_sasl and (self.username or self.password is not None):
            raise ValueError(f"a SASL user name or password is set, but the security protocol is {self.protocol}")
        tls_files = (self.ca_file, self.cert_file, self.key_file)
        if not self.uses_tls and any(tls_files):
            raise ValueError(f"TLS files are set, but the security protocol is {self.protocol} (SSL or SASL_SSL?)")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("a client key needs its client certificate")

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin client (one TLS context for all)."""
        options: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            try:
                options["ssl_context"] = checking_context(
                    self.ca_file, cert_file=self.cert_file, key_file=self.key_file, key_password=self.key_password
                )
            except (OSError, ssl.SSLError, ValueError) as exc:  # a CA, certificate or key file it cannot use
                raise ValueError(f"cannot use the Kafka TLS files: {exc}") from exc
        if self.uses_sasl:
            options |= {
                "sasl_mechanism": self.mechanism,
                "sasl_plain_username": self.username,
                "sasl_plain_password": self.password,
            }
        return options

    def describe(self) -> str:
        """How clients connect, for a check's report (never the password)."""
        parts: list[str] = [self.protocol]
        if self.uses_sasl:
            parts.append(f"{self.mechanism} as {self.username}")
        if self.uses_tls:
            parts.append(f"CA {self.ca_file}" if self.ca_file else "system CAs")
            if self.cert_file:
                parts.append("client certificate")
        return ", ".join(parts)


async def connection_problem(bootstrap: str, security: KafkaSecurity, *, timeout: float) -> str | None:
    """``None`` as soon as one connection to a server of ``bootstrap`` (with TLS and authentication as a client
    makes it) succeeds; otherwise why the last server tried could not be reached. Servers are tried in turn."""
    from aiokafka.conn import create_conn

    options = security.client_options()
    problem = "no bootstrap server given"
    for server in filter(None, (s.strip() for s in bootstrap.split(","))):
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(timeout):
                conn = await create_conn(host.strip("[]"), int(port), request_timeout_ms=int(timeout * 1000), **options)
        except TimeoutError:
            problem = f"{server}: no answer within {timeout:g} s"
            continue
        except ssl.SSLCertVerificationError as exc:
            problem = f"{server}: the broker's TLS certificate is not trusted: {exc.verify_message}"
            continue
        except Exception as exc:  # aiokafka's errors, ssl's and the operating system's all say it here
            problem = f"{server}: {type(exc).__name__}: {exc}"
            continue
        conn.close()
        return None
    return problem
