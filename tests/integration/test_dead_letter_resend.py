"""Bulk resend of dead letters on SQLite and on a real PostgreSQL: every waiting letter of a destination goes back
once, oldest first, with its history; refusals, limits, dry runs, one bulk resend at a time, a failed publish;
the HTTP endpoint and the command."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy import delete, select, update

from docbus.audit_verify import verify_all
from docbus.broker.base import BrokerUnavailable, OutgoingRecord, PublishedRecord
from docbus.broker.embedded import EmbeddedBroker
from docbus.delivery.dead_letters import DeadLetterStore, resend_lease
from docbus.errors import Conflict
from docbus.settings import Settings
from docbus.store.agencies import Role
from docbus.store.database import Database
from docbus.store.leases import give_up_lease, take_lease
from docbus.store.messages import MessageStore
from docbus.store.migrate import upgrade_async
from docbus.store.tables import dead_letters, messages, payloads
from docbus.topics import Topics

from ..conftest import RunningGateway
from .test_broker_contract import drain
from .test_cli import docbus
from .test_payload_retention import NATIONAL, accept, publish, submission

ROUTES_TOML = """
[[destination]]
name = "national"
adapter = "file"

[[destination]]
name = "provincial"
adapter = "file"

[[rule]]
prefixes = ["000.01."]
destination = "provincial"

[[rule]]
any = true
destination = "national"
"""


async def dead(db: Database, message_id: str, destination: str, *, resent: bool = False) -> int:
    """A dead letter of ``message_id`` at ``destination``, as a destination worker leaves it (row, DEAD event,
    and its record on the dead-letter topic)."""
    store = DeadLetterStore(db, EmbeddedBroker(db), Topics())
    record = OutgoingRecord("unused", b"k", b"v", (("message-id", message_id.encode()),))
    dead_id = await store.add(
        message_id=message_id,
        destination=destination,
        receivers=(NATIONAL,),
        reason="refused for good (22)",
        attempts=[{"status": 200, "remote_code": "22", "retriable": False}],
        record=record,
    )
    if resent:
        async with db.transaction() as conn:
            await conn.execute(
                update(dead_letters).where(dead_letters.c.id == dead_id).values(resent_at=datetime.now(UTC))
            )
    return dead_id


async def messages_with_payloads(db: Database, count: int, receivers: tuple[str, ...] = (NATIONAL,)) -> list[str]:
    subs = [submission(receivers) for _ in range(count)]
    ids = await accept(db, subs)
    await publish(db, ids)
    return ids


async def resent_records(db: Database, destination: str, expected: int) -> list[tuple[str, str, bytes]]:
    """(message id, resend-of, value) of every record on the destination's resend topic."""
    consumer = EmbeddedBroker(db).consumer(f"reader-{destination}", topics=[Topics().resend(destination)])
    async with consumer:
        got = await drain(consumer, expected, within=5 if expected == 0 else 30)
    out = []
    for record in got:
        headers = {k: v.decode() for k, v in record.headers}
        out.append((headers["message-id"], headers["resend-of"], record.value))
    return out


async def event_types(db: Database, message_id: str) -> list[tuple[str, str | None]]:
    return [(e.type, e.destination) for e in await MessageStore(db).timeline(message_id)]


async def test_bulk_resend_puts_back_every_waiting_letter_once_oldest_first(db: Database) -> None:
    ids = await messages_with_payloads(db, 5)
    letters = [
        await dead(db, ids[0], "national"),
        await dead(db, ids[1], "national"),
        await dead(db, ids[2], "national"),
        await dead(db, ids[3], "provincial"),  # another destination: untouched
        await dead(db, ids[4], "national", resent=True),  # already resent: untouched
        await dead(db, ids[1], "national"),  # a second waiting letter of ids[1]: the message goes back once
    ]
    store = DeadLetterStore(db, EmbeddedBroker(db), Topics())
    assert await store.waiting("national") == 4

    outcome = await store.resend_waiting("national", actor="H41.01", batch=2)

    assert outcome.resent == [letters[0], letters[1], letters[2], letters[5]]
    assert (outcome.refused, outcome.remaining, outcome.dry_run) == ([], 0, False)
    records = await resent_records(db, "national", 3)
    assert [(m, int(of)) for m, of, _ in records] == [(ids[0], letters[0]), (ids[1], letters[1]), (ids[2], letters[2])]
    async with db.reader.connect() as conn:
        bodies = dict((await conn.execute(select(payloads.c.message_id, payloads.c.body))).all())
    assert [value for _, _, value in records] == [bodies[ids[0]], bodies[ids[1]], bodies[ids[2]]]
    for message_id, resent_events in ((ids[0], 1), (ids[1], 2), (ids[2], 1), (ids[3], 0), (ids[4], 0)):
        timeline = await event_types(db, message_id)
        assert timeline.count(("RESENT", "national")) == resent_events
    for letter in (letters[0], letters[1], letters[2], letters[5]):
        got = await store.get(letter)
        assert got.resent_by == "H41.01" and got.resent_at is not None
    assert await store.waiting("provincial") == 1
    assert (await store.get(letters[3])).resent_at is None

    again = await store.resend_waiting("national", actor="H41.01")
    assert (again.resent, again.remaining) == ([], 0)
    assert len(await resent_records(db, "national", 3)) == 3  # nothing more went out
    _messages, _events, broken = await verify_all(db)
    assert broken == []  # the RESENT events joined the hash chains
    # The lease was handed back: another process may take it at once.
    now = datetime.now(UTC)
    assert await take_lease(db, resend_lease("national"), "someone-else", now, now + timedelta(seconds=5)) is not None


async def test_dry_runs_limits_and_letters_that_cannot_go_back(db: Database) -> None:
    ids = await messages_with_payloads(db, 4)
    letters = [await dead(db, message_id, "national") for message_id in ids]
    async with db.transaction() as conn:  # the payload of ids[1] went (retention; a second line)
        await conn.execute(delete(payloads).where(payloads.c.message_id == ids[1]))
        await conn.execute(update(messages).where(messages.c.id == ids[1]).values(payload_purged_at=datetime.now(UTC)))
    store = DeadLetterStore(db, EmbeddedBroker(db), Topics())

    dry = await store.resend_waiting("national", actor="op", dry_run=True)
    assert dry.resent == [letters[0], letters[2], letters[3]]
    assert [(r["id"], r["message_id"]) for r in dry.refused] == [(letters[1], ids[1])]
    assert "payload retention" in dry.refused[0]["reason"]
    assert dry.remaining == 1
    assert dry.as_dict()["resent"] == 3 and dry.as_dict()["dry_run"] is True
    assert await resent_records(db, "national", 0) == []  # a dry run sends nothing and marks nothing
    assert await store.waiting("national") == 4
    assert ("RESENT", "national") not in await event_types(db, ids[0])

    first = await store.resend_waiting("national", actor="op", limit=1)
    assert (first.resent, first.remaining) == ([letters[0]], 3)
    rest = await store.resend_waiting("national", actor="op", limit=5)
    assert rest.resent == [letters[2], letters[3]]
    assert [r["id"] for r in rest.refused] == [letters[1]]
    assert rest.remaining == 1  # the refused one still waits
    assert [m for m, _, _ in await resent_records(db, "national", 3)] == [ids[0], ids[2], ids[3]]
    with pytest.raises(ValueError, match="at least 1"):
        await store.resend_waiting("national", actor="op", limit=0)


async def test_one_bulk_resend_of_a_destination_at_a_time(db: Database) -> None:
    ids = await messages_with_payloads(db, 2)
    letters = [await dead(db, message_id, "national") for message_id in ids]
    other = await dead(db, (await messages_with_payloads(db, 1))[0], "provincial")
    store = DeadLetterStore(db, EmbeddedBroker(db), Topics())
    now = datetime.now(UTC)
    assert await take_lease(db, resend_lease("national"), "another-gateway", now, now + timedelta(seconds=60)) == 0

    with pytest.raises(Conflict):
        await store.resend_waiting("national", actor="op")
    with pytest.raises(Conflict):  # a single resend of that destination waits too
        await store.resend(letters[0], actor="op")
    assert (await store.resend_waiting("national", actor="op", dry_run=True)).resent == letters  # reads only
    assert (await store.resend_waiting("provincial", actor="op")).resent == [other]  # other destinations go on
    assert await store.waiting("national") == 2

    await give_up_lease(db, resend_lease("national"), "another-gateway")
    assert (await store.resend_waiting("national", actor="op")).resent == letters


class RefusingBroker(EmbeddedBroker):
    """The embedded log, except that publishing fails as if Kafka were down."""

    async def publish(self, records: object) -> list[PublishedRecord]:
        raise BrokerUnavailable("Kafka is away")


async def test_a_publish_that_fails_marks_nothing_and_frees_the_destination(db: Database) -> None:
    ids = await messages_with_payloads(db, 3)
    letters = [await dead(db, message_id, "national") for message_id in ids]

    with pytest.raises(BrokerUnavailable):
        await DeadLetterStore(db, RefusingBroker(db), Topics()).resend_waiting("national", actor="op")

    store = DeadLetterStore(db, EmbeddedBroker(db), Topics())
    assert await store.waiting("national") == 3
    for message_id in ids:
        assert ("RESENT", "national") not in await event_types(db, message_id)
    assert (await store.resend_waiting("national", actor="op")).resent == letters  # not locked out


@pytest.fixture
def gateway_settings(tmp_path: Path, database_url: str) -> Settings:
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES_TOML)
    drops = {name: {"directory": str(tmp_path / name)} for name in ("national", "provincial")}
    return Settings(data_dir=tmp_path / "data", database_url=database_url, routes_file=routes, adapters=drops)


async def test_the_bulk_resend_endpoint(gateway: RunningGateway) -> None:
    db = gateway.db
    ids = await messages_with_payloads(db, 3)
    letters = [await dead(db, message_id, "national") for message_id in ids]
    await gateway.register("H41.01", Role.OPERATOR)
    await gateway.register("000.00.00.G22")
    url = "/v1/dead-letters/resend"

    async with gateway.client("000.00.00.G22") as agency:
        refused = await agency.post(url, params={"destination": "national"})
    assert refused.status_code == 403
    async with gateway.client("H41.01") as operator:
        unknown = await operator.post(url, params={"destination": "nowhere"})
        missing = await operator.post(url)
        zero = await operator.post(url, params={"destination": "national", "limit": 0})
        dry = await operator.post(url, params={"destination": "national", "dry_run": "true"})
        first = await operator.post(url, params={"destination": "national", "limit": 2})
        rest = await operator.post(url, params={"destination": "national"})
        timeline = (await operator.get(f"/v1/messages/{ids[2]}")).json()

    assert unknown.status_code == 422
    assert unknown.headers["content-type"] == "application/problem+json"
    assert unknown.json()["errors"][0]["rule"] == "unknown-destination"
    assert "national, provincial" in unknown.json()["detail"]
    for bad in (missing, zero):  # the query is not what the endpoint takes
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert dry.status_code == 200
    assert dry.json() == {
        "destination": "national",
        "dry_run": True,
        "resent": 3,
        "dead_letter_ids": letters,
        "refused": [],
        "remaining": 0,
    }
    assert first.status_code == 202
    assert (first.json()["dead_letter_ids"], first.json()["remaining"]) == (letters[:2], 1)
    assert (rest.json()["dead_letter_ids"], rest.json()["remaining"]) == (letters[2:], 0)
    resent = [e for e in timeline["events"] if e["type"] == "RESENT"]
    assert [(e["actor"], e["destination"], e["detail"]["dead_letter_id"]) for e in resent] == [
        ("H41.01", "national", letters[2])
    ]
    assert [m for m, _, _ in await resent_records(db, "national", 3)] == ids


async def test_the_bulk_resend_command(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"sqlite+aiosqlite:///{data / 'docbus.sqlite3'}"
    data.mkdir()
    await upgrade_async(url)
    db = Database(url)
    try:
        ids = await messages_with_payloads(db, 2)
        letters = [await dead(db, message_id, "national") for message_id in ids]
    finally:
        await db.dispose()
    routes = tmp_path / "routes.toml"
    routes.write_text(ROUTES_TOML)
    env = {**os.environ, "DOCBUS_DATA_DIR": str(data), "DOCBUS_ROUTES_FILE": str(routes)}
    for name in ("DOCBUS_DATABASE_URL", "DOCBUS_KAFKA_BOOTSTRAP"):
        env.pop(name, None)

    for usage in (
        ("dlq", "resend"),
        ("dlq", "resend", "1", "--destination", "national"),
        ("dlq", "resend", "1", "--dry-run"),
        ("dlq", "resend", "--destination", "national", "--limit", "0"),
    ):
        wrong = docbus(env, *usage)
        assert wrong.returncode == 2, usage
        assert wrong.stderr.startswith("error:")
    unknown = docbus(env, "dlq", "resend", "--destination", "nowhere")
    assert unknown.returncode == 1 and "configured: national, provincial" in unknown.stderr

    dry = docbus(env, "dlq", "resend", "--destination", "national", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert orjson.loads(dry.stdout)["dead_letter_ids"] == letters
    done = docbus(env, "dlq", "resend", "--destination", "national", "--actor", "night-shift")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout) == {
        "destination": "national",
        "dry_run": False,
        "resent": 2,
        "dead_letter_ids": letters,
        "refused": [],
        "remaining": 0,
    }
    listed = docbus(env, "dlq", "list").stdout
    assert listed.count("\tresent ") == 2
    db = Database(url)
    try:
        assert [m for m, _, _ in await resent_records(db, "national", 2)] == ids
        assert (await DeadLetterStore(db, EmbeddedBroker(db), Topics()).get(letters[0])).resent_by == "night-shift"
    finally:
        await db.dispose()


async def test_marking_is_tried_again_when_another_writer_extended_a_timeline(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another destination's worker may append to a message's event chain between our read of its tail and our
    insert (PostgreSQL): the mark is tried again rather than leaving published letters unmarked."""
    from sqlalchemy.exc import IntegrityError

    from docbus.delivery import dead_letters as module

    ids = await messages_with_payloads(db, 2)
    letters = [await dead(db, message_id, "national") for message_id in ids]
    real, collisions = module._mark_resent, []

    async def colliding_once(*args: object, **kwargs: object) -> set[int]:
        if not collisions:
            collisions.append(1)
            raise IntegrityError("INSERT INTO events", {}, Exception("duplicate (message_id, seq)"))
        return await real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_mark_resent", colliding_once)
    outcome = await DeadLetterStore(db, EmbeddedBroker(db), Topics()).resend_waiting("national", actor="op")
    assert outcome.resent == letters and collisions == [1]
    assert len(await resent_records(db, "national", 2)) == 2  # published once
    for message_id in ids:
        assert (await event_types(db, message_id)).count(("RESENT", "national")) == 1
