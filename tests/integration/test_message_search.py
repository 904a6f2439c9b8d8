"""Searching messages by receiver and arrival time, on SQLite and on a real PostgreSQL: in the store, over HTTP
(with what each caller may see) and from the command line."""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from docbus.ids import encode_ulid
from docbus.store.agencies import Role
from docbus.store.database import Database
from docbus.store.intake_writer import Submission
from docbus.store.messages import MessageStore
from docbus.store.migrate import upgrade_async

from ..conftest import RunningGateway
from .test_cli import docbus
from .test_forwarding import document
from .test_payload_retention import accept, submission

XML = {"Content-Type": "application/xml"}
T0 = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def received_at(at: datetime, receivers: tuple[str, ...]) -> Submission:
    """A submission whose message id says it arrived at ``at`` (ids are ULIDs: their first 48 bits are the
    arrival time in milliseconds, and that is what time bounds search on)."""
    sub = submission(receivers)
    ms = int(at.timestamp() * 1000)
    envelope = dataclasses.replace(sub.envelope, message_id=encode_ulid((ms << 80) | 12345), received_at=at)
    return dataclasses.replace(sub, envelope=envelope)


async def test_the_store_searches_by_receiver_and_arrival_time(db: Database) -> None:
    subs = [
        received_at(T0, ("000.00.00.H41",)),  # 0
        received_at(T0 + timedelta(minutes=10), ("000.00.00.H41", "000.00.00.H14")),  # 1
        received_at(T0 + timedelta(minutes=20), ("000.00.00.H14",)),  # 2
        received_at(T0 + timedelta(minutes=30), ("000.00.00.H411",)),  # 3: an id that merely starts like H41
    ]
    ids = await accept(db, subs)
    store = MessageStore(db)

    async def found(**filters: object) -> list[str]:
        return [m.id for m in await store.search(visible_to=None, **filters)]  # type: ignore[arg-type]

    assert await found(receiver="000.00.00.H41") == [ids[1], ids[0]]
    assert await found(receiver="000.00.00.H14") == [ids[2], ids[1]]
    assert await found(since=T0 + timedelta(minutes=10)) == [ids[3], ids[2], ids[1]]  # since is included
    assert await found(until=T0 + timedelta(minutes=20)) == [ids[1], ids[0]]  # until is not
    assert await found(since=T0 + timedelta(minutes=5), until=T0 + timedelta(minutes=25)) == [ids[2], ids[1]]
    assert await found(since=T0 + timedelta(minutes=10, milliseconds=1), until=T0 + timedelta(minutes=20)) == []
    assert await found(receiver="000.00.00.H14", since=T0 + timedelta(minutes=15)) == [ids[2]]
    for wildcard in ("%", "000.00.00.H4_", "000.00.00.H41%"):  # LIKE's wildcards match only themselves
        assert await found(receiver=wildcard) == []
    # An agency's own view narrows further, never widens.
    assert [m.id for m in await store.search(visible_to="000.00.00.H14", receiver="000.00.00.H41")] == [ids[1]]


async def test_searching_over_http(gateway: RunningGateway, sample_bytes: dict[str, bytes]) -> None:
    await gateway.register("000.00.00.G22")
    await gateway.register("000.00.00.H14")
    await gateway.register("H41.01", Role.OPERATOR)
    template = sample_bytes["edoc_with_attachment_dc0bdef0.edxml"]
    async with gateway.client("000.00.00.G22") as sender:
        first = (await sender.post("/v1/messages", content=document(template, ("000.00.00.H41",)), headers=XML)).json()
        between = datetime.now(UTC)
        second = await sender.post(
            "/v1/messages", content=document(template, ("000.00.00.H14", "000.00.00.G17")), headers=XML
        )
        second_id = second.json()["message_id"]

        def ids(answer: object) -> list[str]:
            return [m["message_id"] for m in answer.json()["items"]]  # type: ignore[attr-defined]

        assert ids(await sender.get("/v1/messages", params={"receiver": "000.00.00.H14"})) == [second_id]
        assert ids(await sender.get("/v1/messages", params={"since": between.isoformat()})) == [second_id]
        assert ids(await sender.get("/v1/messages", params={"until": between.isoformat()})) == [first["message_id"]]
        assert ids(await sender.get("/v1/messages", params={"since": "1h"})) == [second_id, first["message_id"]]
        assert ids(await sender.get("/v1/messages", params={"until": "1h"})) == []
        for params, path in [
            ({"since": "yesterday"}, "/query/since"),
            ({"until": "5x"}, "/query/until"),
            ({"since": "1h", "until": "2h"}, "/query/until"),  # crossed: until before since
        ]:
            refused = await sender.get("/v1/messages", params=params)
            assert refused.status_code == 400, params
            assert refused.headers["content-type"].startswith("application/problem+json")
            assert [e["path"] for e in refused.json()["errors"]] == [path]
    async with gateway.client("000.00.00.H14") as receiver:  # sees only what was sent to it
        assert ids(await receiver.get("/v1/messages", params={"receiver": "000.00.00.H41"})) == []
        assert ids(await receiver.get("/v1/messages", params={"since": "1h"})) == [second_id]
    async with gateway.client("H41.01") as operator:
        assert ids(await operator.get("/v1/messages", params={"receiver": "000.00.00.H41"})) == [first["message_id"]]


async def test_searching_from_the_command_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    url = f"sqlite+aiosqlite:///{data / 'docbus.sqlite3'}"
    await upgrade_async(url)
    db = Database(url)
    try:
        ids = await accept(
            db,
            [
                received_at(T0, ("000.00.00.H41",)),
                received_at(T0 + timedelta(hours=1), ("000.00.00.H14",)),
            ],
        )
    finally:
        await db.dispose()
    env = {**os.environ, "DOCBUS_DATA_DIR": str(data)}
    env.pop("DOCBUS_DATABASE_URL", None)

    def listed(*args: str) -> list[str]:
        done = docbus(env, "messages", "list", *args)
        assert done.returncode == 0, done.stderr
        return [line.split("\t")[0] for line in done.stdout.splitlines()]

    assert listed("--receiver", "000.00.00.H14") == [ids[1]]
    assert listed("--since", "2026-11-27T08:30:00") == [ids[1]]
    assert listed("--until", "2026-11-27T08:30:00+00:00") == [ids[0]]
    assert listed("--since", "2026-11-27T07:00:00", "--until", "2026-11-27T10:00:00") == [ids[1], ids[0]]
    for bad in (("--since", "soon"), ("--since", "2026-11-27T09:00:00", "--until", "2026-11-27T08:00:00")):
        refused = docbus(env, "messages", "list", *bad)
        assert refused.returncode == 2 and refused.stderr.startswith("error:"), bad
