"""docbus on a Kafka that asks its clients to authenticate: SASL (SCRAM-SHA-512) over TLS, as a province's shared
cluster does. The test Kafka opens such a listener beside its plain one (``kafka.sh``), with a CA of its own.

- A bus configured for it accepts a document and publishes it; the record is read back through the same listener.
- With a wrong password intake still answers 202 (the message waits in the outbox), ``/readyz`` says the broker
  is degraded, and nothing reaches Kafka; ``docbus config check`` names the reason: bad credentials, a
  certificate no trusted CA signed, a plain client at a TLS port.
- The contract suite runs on this listener too (``test_broker_contract.py``, ``kafka-sasl-ssl``).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from docbus.broker import BrokerUnavailable, KafkaBroker

from ..conftest import running_gateway
from .helpers import config_check_finding, with_unique_document_id
from .kafka_support import read_topic, secure_kafka_env, secure_kafka_settings

pytestmark = pytest.mark.kafka

SENDER = "000.00.00.G22"
DOC = "edoc_with_attachment_dc0bdef0.edxml"  # sent by SENDER
XML = {"Content-Type": "application/xml"}


def check_broker(env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return config_check_finding("broker", env, tmp_path / "check")


async def test_a_bus_on_sasl_ssl_publishes_what_it_accepts(tmp_path: Path, sample_bytes: dict[str, bytes]) -> None:
    prefix = f"sec{uuid.uuid4().hex[:8]}"
    settings = secure_kafka_settings(DOCBUS_DATA_DIR=str(tmp_path / "data"), DOCBUS_TOPIC_PREFIX=prefix)
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_bootstrap
    (tmp_path / "data").mkdir()
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            answer = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
            assert answer.status_code == 202, answer.text
            message_id = answer.json()["message_id"]
            timeline: dict = {}
            for _ in range(100):
                timeline = (await client.get(f"/v1/messages/{message_id}")).json()
                if timeline["status"] == "PUBLISHED":
                    break
                await asyncio.sleep(0.1)
            ready = (await client.get("/readyz")).json()
    assert timeline["status"] == "PUBLISHED", timeline
    assert ready["checks"]["broker"] == "ok"
    (published,) = [e for e in timeline["events"] if e["type"] == "PUBLISHED"]
    topic = published["detail"]["topic"]
    assert topic == f"{prefix}.agency.{SENDER}"
    records = await read_topic(
        settings.kafka_bootstrap, topic, expect=1, client_options=settings.kafka_security().client_options()
    )
    assert [r["headers"]["message-id"] for r in records] == [message_id]
    assert (records[0]["partition"], records[0]["offset"]) == (
        published["detail"]["partition"],
        published["detail"]["offset"],
    )


async def test_with_a_wrong_password_intake_still_accepts_and_readiness_says_the_broker_is_degraded(
    tmp_path: Path, sample_bytes: dict[str, bytes]
) -> None:
    settings = secure_kafka_settings(
        DOCBUS_DATA_DIR=str(tmp_path / "data"),
        DOCBUS_TOPIC_PREFIX=f"sec{uuid.uuid4().hex[:8]}",
        DOCBUS_KAFKA_SASL_PASSWORD="not-the-password",
        DOCBUS_BROKER_PUBLISH_TIMEOUT_SECONDS="2",
    )
    (tmp_path / "data").mkdir()
    async with running_gateway(settings) as gateway:
        await gateway.register(SENDER)
        async with gateway.client(SENDER) as client:
            answer = await client.post("/v1/messages", content=with_unique_document_id(sample_bytes[DOC]), headers=XML)
            ready = await client.get("/readyz")
            timeline = (await client.get(f"/v1/messages/{answer.json()['message_id']}")).json()
    assert answer.status_code == 202, answer.text
    assert ready.status_code == 200 and ready.json()["status"] == "degraded"
    assert ready.json()["checks"]["broker"].startswith("degraded")
    assert ready.json()["outbox_backlog"] == 1
    assert timeline["status"] == "ACCEPTED"
    assert "not-the-password" not in ready.text


async def test_a_broker_client_with_bad_credentials_gives_up_within_its_bound() -> None:
    settings = secure_kafka_settings(DOCBUS_KAFKA_SASL_PASSWORD="not-the-password")
    assert settings.kafka_bootstrap is not None
    broker = KafkaBroker(settings.kafka_bootstrap, ping_timeout=2.0, security=settings.kafka_security())
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(BrokerUnavailable):
            await broker.ping()
        assert asyncio.get_running_loop().time() - started < 10
    finally:
        await broker.aclose()


def test_config_check_says_why_it_cannot_connect(tmp_path: Path) -> None:
    env = secure_kafka_env()
    good = check_broker(env, tmp_path)
    assert good["verdict"] == "ok", good
    assert "SASL_SSL, SCRAM-SHA-512 as docbus" in good["detail"]

    wrong_password = check_broker({**env, "DOCBUS_KAFKA_SASL_PASSWORD": "not-the-password"}, tmp_path)
    assert wrong_password["verdict"] == "fail"
    assert "SaslAuthenticationFailed" in wrong_password["detail"] and "invalid credentials" in wrong_password["detail"]

    untrusted = check_broker({k: v for k, v in env.items() if k != "DOCBUS_KAFKA_SSL_CA_FILE"}, tmp_path)
    assert untrusted["verdict"] == "fail"
    assert "TLS certificate is not trusted" in untrusted["detail"], untrusted

    plain = check_broker({"DOCBUS_KAFKA_BOOTSTRAP": env["DOCBUS_KAFKA_BOOTSTRAP"]}, tmp_path)
    assert plain["verdict"] == "fail" and "(PLAINTEXT)" in plain["detail"], plain

    missing_ca = check_broker({**env, "DOCBUS_KAFKA_SSL_CA_FILE": str(tmp_path / "nowhere.pem")}, tmp_path)
    assert missing_ca["verdict"] == "fail" and "cannot use the Kafka TLS files" in missing_ca["detail"], missing_ca
