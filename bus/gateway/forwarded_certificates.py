"""Client certificates that a TLS-terminating proxy in front of the gateway forwards in a header.

Behind a proxy that ends TLS the gateway itself sees no client certificate, so a key bound to one
(``docbus agency bind-certificate``) would always be refused. A proxy that checked the client's certificate can
pass it on in a request header, and the gateway believes that header only when the request comes from one of the
addresses in ``DOCBUS_TRUSTED_PROXIES``: anyone else could write it. A request from a trusted proxy is judged by
the header alone (the proxy's own connection, even over mutual TLS, shows the proxy's certificate, not the
agency's, so an absent header means no certificate); any other request by its own TLS connection, the header
ignored.

The header's value may be written the ways common proxies write it:

- a PEM certificate, URL-escaped or not (nginx ``$ssl_client_escaped_cert``, ``$ssl_client_cert``);
- base64 DER, with or without URL-escaping (HAProxy ``ssl_c_der,base64``, Traefik's ``PassTLSClientCert``);
- Envoy's ``X-Forwarded-Client-Cert`` (``Hash=…;Cert="…"``; the last element, the one the proxy nearest the
  gateway added, describes its client);
- a SHA-256 fingerprint in hex, with or without colons.

An empty header is no certificate. A value none of these can read is treated as no certificate too, and logged,
because it means the proxy is set up wrongly, not that the client did something.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import logging
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote

from cryptography import x509

from docbus.gateway.tls_peer import certificate_sha256, client_certificate_sha256

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_FINGERPRINT = re.compile(r"[0-9a-fA-F]{64}")
_XFCC_KEY = re.compile(r"\s*(by|hash|cert|chain|subject|uri|dns)\s*=", re.IGNORECASE)
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"
_PEM_END = "-----END CERTIFICATE-----"


def parse_networks(value: str) -> tuple[Network, ...]:
    """``DOCBUS_TRUSTED_PROXIES``: addresses or networks (CIDR), separated by commas or spaces; ``ValueError``
    naming the entry that is neither."""
    networks = []
    for entry in re.split(r"[,\s]+", value.strip()):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (such as 10.0.0.5 or 10.0.0.0/24)") from None
    return tuple(networks)


class ClientCertificates:
    """Which client certificate a request came with: its own TLS connection's, or, from a trusted proxy, the one
    that proxy forwarded in ``header``."""

    def __init__(self, trusted_proxies: Sequence[Network] = (), header: str = "X-Client-Cert") -> None:
        self.trusted_proxies = tuple(trusted_proxies)
        self.header = header.lower().encode("latin-1")
        self._header_name = header

    def sha256(self, scope: Any) -> str | None:
        """The SHA-256 fingerprint (hex) of the client's certificate, or ``None`` when it showed none."""
        if not self.trusted_proxies:
            return client_certificate_sha256(scope)
        peer = _peer(scope)
        if peer is None or not any(peer in network for network in self.trusted_proxies):
            return client_certificate_sha256(scope)
        values = [value for name, value in scope.get("headers", ()) if name.lower() == self.header]
        if not values:
            return None
        if len(values) > 1:
            log.warning("the proxy at %s sent %d %s headers; none is believed", peer, len(values), self._header_name)
            return None
        try:
            return forwarded_certificate_sha256(values[0].decode("latin-1"))
        except ValueError as exc:
            log.warning("the proxy at %s forwarded a %s header docbus cannot read: %s", peer, self._header_name, exc)
            return None


def forwarded_certificate_sha256(value: str) -> str | None:
    """The fingerprint of the certificate a header value carries (see the module docstring for the forms it
    may take); ``None`` when it is empty or carries none, ``ValueError`` when it cannot be read."""
    value = value.strip()
    if not value:
        return None
    if _XFCC_KEY.match(value):
        return _xfcc_sha256(value)
    text = unquote(value) if "%" in value else value
    compact = text.replace(":", "")
    if _FINGERPRINT.fullmatch(compact):
        return compact.lower()
    return certificate_sha256(_certificate_der(text))


def _certificate_der(text: str) -> bytes:
    """The DER of the (first) certificate in PEM or bare base64; ``ValueError`` when it is not a certificate."""
    if _PEM_BEGIN in text:
        text = text.split(_PEM_BEGIN, 1)[1].split(_PEM_END, 1)[0]
    try:
        der = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither PEM, base64 DER nor a SHA-256 fingerprint") from None
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        raise ValueError("it decodes to something that is not an X.509 certificate") from None
    return der


def _xfcc_sha256(value: str) -> str | None:
    """Envoy's ``X-Forwarded-Client-Cert``: the last element's ``Hash``, or else its ``Cert``."""
    elements = list(_split_outside_quotes(value, ","))
    fields: dict[str, str] = {}
    for pair in _split_outside_quotes(elements[-1], ";"):
        key, sep, field = pair.partition("=")
        if sep:
            fields[key.strip().lower()] = field.strip().strip('"')
    if "hash" in fields:
        if not _FINGERPRINT.fullmatch(fields["hash"]):
            raise ValueError("its Hash is not a SHA-256 fingerprint in hex")
        return fields["hash"].lower()
    if "cert" in fields:
        return certificate_sha256(_certificate_der(unquote(fields["cert"])))
    return None  # the element names no certificate: the client showed none


def _split_outside_quotes(text: str, separator: str) -> Iterable[str]:
    """``text`` split at ``separator`` where it is not inside double quotes (a backslash escapes a quote)."""
    part: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            yield "".join(part)
            part = []
            continue
        part.append(char)
    yield "".join(part)


def _peer(scope: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address the connection came from; the server must not have rewritten it from the request's
    ``X-Forwarded-For`` (docbus' own commands run uvicorn with its proxy headers off)."""
    client = scope.get("client")
    if not client:
        return None
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # a dual-stack listener: ::ffff:10.0.0.5 is 10.0.0.5
    return address
