"""The agency directory (danh bạ đơn vị): who may talk to the bus, in which role, with which API key.

Keys are random 256-bit secrets shown once; only their SHA-256 is stored. A slow password hash buys nothing for
keys of that entropy and would cost every request, so the lookup is one indexed equality on the hash, cached in
process for a few seconds (a rotated key stops working within that window).

An agency's system cannot switch keys at the instant an operator rotates one, so a rotation may keep the old key
working for a while (``keep_old_for``, at most :data:`MAX_KEY_OVERLAP`): both keys authenticate until then. A
rotation without an overlap ends the old key, and any earlier one still overlapping, at once.

A key can be bound to the TLS client certificate of the agency's system (SHA-256 of its DER): it is then accepted
only from a request that showed that certificate. Binding a renewed certificate may keep the one bound so far
accepted for a while, the same way (``keep_old_for``, at most :data:`MAX_KEY_OVERLAP`).

An operator can suspend an agency: its key is then refused with 403 and the reason (the caller learns why, and
that its key is right) until the agency is resumed with the same key.

Every change is recorded, in the transaction that makes it, in the agency's hash-chained history
(:mod:`docbus.store.agency_history`) with its actor: ``by``, an operator's organ id, or :data:`CLI_ACTOR`.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, insert, or_, select, update

from docbus.errors import Forbidden, Unauthenticated, ValidationFailed
from docbus.store.agency_history import AgencyEvent, agency_history, append_agency_event
from docbus.store.audit import as_utc
from docbus.store.database import Database
from docbus.store.tables import agencies
from docbus.validation.organ_id import InvalidOrganId, parse_organ_id

KEY_PREFIX = "dbk_"
MAX_KEY_OVERLAP = timedelta(days=30)
CLI_ACTOR = "operator-cli"  # who made a change from the command line (the directory's history names it)


class Role(StrEnum):
    """What a credential may do: an agency sends its own messages, an axis posts receipts, an operator sees all."""

    AGENCY = "agency"
    AXIS = "axis"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class Agency:
    organ_id: str
    name: str
    parent: str | None
    level: int
    role: Role
    key_prefix: str
    created_at: datetime
    key_rotated_at: datetime
    previous_key_expires_at: datetime | None = None  # while set and in the future, the old key works too
    suspended_at: datetime | None = None
    suspended_by: str | None = None
    suspended_reason: str | None = None
    client_cert_sha256: str | None = None  # the key works only over mutual TLS with this certificate
    previous_client_cert_sha256: str | None = None  # ... or with this one, until the instant below
    previous_client_cert_expires_at: datetime | None = None

    def previous_certificate(self, now: datetime | None = None) -> tuple[str, datetime] | None:
        """The certificate bound before and until when it is accepted, while it still is; ``None`` otherwise."""
        sha256, until = self.previous_client_cert_sha256, self.previous_client_cert_expires_at
        if sha256 is None or until is None or until <= (now or datetime.now(UTC)):
            return None
        return sha256, until

    def as_dict(self) -> dict[str, object]:
        """What an operator sees of an agency (never its key: keys are shown once)."""

        def instant(at: datetime | None) -> str | None:
            return at.isoformat() if at is not None else None

        previous = self.previous_certificate()  # only while it is still accepted
        previous_sha256, previous_until = previous if previous is not None else (None, None)

        return {
            "organ_id": self.organ_id,
            "name": self.name,
            "parent": self.parent,
            "level": self.level,
            "role": self.role.value,
            "key_prefix": self.key_prefix,
            "created_at": instant(self.created_at),
            "key_rotated_at": instant(self.key_rotated_at),
            "previous_key_expires_at": instant(self.previous_key_expires_at),
            "suspended_at": instant(self.suspended_at),
            "suspended_by": self.suspended_by,
            "suspended_reason": self.suspended_reason,
            "client_cert_sha256": self.client_cert_sha256,
            "previous_client_cert_sha256": previous_sha256,
            "previous_client_cert_expires_at": instant(previous_until),
        }


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


class AgencyDirectory:
    """Registers agencies, issues and rotates their keys, and resolves a presented key to its agency."""

    def __init__(self, db: Database, *, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Agency]] = {}
        self._lookups: dict[str, asyncio.Future[Agency | None]] = {}
        self._generation = 0  # bumped when keys change: a lookup that started before must not refill the cache

    async def add(
        self, organ_id: str, *, name: str, role: Role = Role.AGENCY, parent: str | None = None, by: str = CLI_ACTOR
    ) -> tuple[Agency, str]:
        """Register an agency and return it with its new API key (shown once, never stored)."""
        try:
            parsed = parse_organ_id(organ_id)
        except InvalidOrganId as exc:
            raise ValidationFailed(str(exc)) from exc
        key = new_key()
        now = datetime.now(UTC)
        row = {
            "organ_id": organ_id,
            "name": name,
            "parent": parent if parent is not None else (str(parsed.parent) if parsed.parent else None),
            "level": parsed.level,
            "role": role.value,
            "key_hash": hash_key(key),
            "key_prefix": key[: len(KEY_PREFIX) + 6],
            "created_at": now,
            "key_rotated_at": now,
        }
        async with self._db.transaction() as conn:
            found = await conn.execute(select(agencies.c.organ_id).where(agencies.c.organ_id == organ_id))
            if found.first() is not None:
                raise ValidationFailed(f"agency {organ_id} is already registered; use rotate-key for a new key")
            await conn.execute(insert(agencies).values(**row))
            detail = {k: row[k] for k in ("name", "role", "parent", "level", "key_prefix")}
            await append_agency_event(conn, organ_id, "registered", at=now, actor=by, detail=detail)
        return _agency(row), key

    async def rotate_key(self, organ_id: str, *, keep_old_for: timedelta | None = None, by: str = CLI_ACTOR) -> str:
        """Issue a new key for ``organ_id``. The old one stops working (within the cache window), or with
        ``keep_old_for`` keeps working that much longer, so the agency's system can switch without a gap."""
        if keep_old_for is not None and not timedelta(0) < keep_old_for <= MAX_KEY_OVERLAP:
            raise ValidationFailed(f"the old key may be kept for more than 0 and at most {MAX_KEY_OVERLAP.days} days")
        key = new_key()
        now = datetime.now(UTC)
        async with self._db.transaction() as conn:
            current = await conn.scalar(select(agencies.c.key_hash).where(agencies.c.organ_id == organ_id))
            if current is None:
                raise ValidationFailed(f"no agency {organ_id} is registered")
            await conn.execute(
                update(agencies)
                .where(agencies.c.organ_id == organ_id)
                .values(
                    key_hash=hash_key(key),
                    key_prefix=key[: len(KEY_PREFIX) + 6],
                    key_rotated_at=now,
                    previous_key_hash=current if keep_old_for is not None else None,
                    previous_key_expires_at=now + keep_old_for if keep_old_for is not None else None,
                )
            )
            detail = {
                "key_prefix": key[: len(KEY_PREFIX) + 6],
                "old_key_until": (now + keep_old_for).isoformat() if keep_old_for is not None else None,
            }
            await append_agency_event(conn, organ_id, "key-rotated", at=now, actor=by, detail=detail)
        self._cache.clear()
        self._generation += 1
        return key

    async def suspend(self, organ_id: str, reason: str, *, by: str) -> None:
        """Refuse ``organ_id``'s key (403 with ``reason``) until :meth:`resume`; within the cache window elsewhere.
        ``by``: who decided (an operator's organ id, or the command line)."""
        reason = reason.strip()
        if not reason or len(reason) > 500:
            raise ValidationFailed("give a reason of 1 to 500 characters: the agency is told it")
        now = datetime.now(UTC)
        values = {"suspended_at": now, "suspended_by": by[:128], "suspended_reason": reason}
        await self._update(organ_id, values, ("suspended", by, {"reason": reason}), at=now)

    async def resume(self, organ_id: str, *, by: str = CLI_ACTOR) -> None:
        """Accept ``organ_id``'s key again."""
        values = {"suspended_at": None, "suspended_by": None, "suspended_reason": None}
        await self._update(organ_id, values, ("resumed", by, {}))

    async def bind_certificate(
        self, organ_id: str, sha256: str | None, *, keep_old_for: timedelta | None = None, by: str = CLI_ACTOR
    ) -> Agency:
        """Accept ``organ_id``'s key only over mutual TLS showing the certificate with this SHA-256 fingerprint
        (hex); ``None`` unbinds it (and any certificate still in its change-over). With ``keep_old_for`` the
        certificate bound so far stays accepted that much longer, so the agency's system can switch without a
        gap. Takes effect within the cache window elsewhere; returns the agency as it is now."""
        if sha256 is not None and not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValidationFailed("a certificate fingerprint is 64 hexadecimal digits (SHA-256)")
        if keep_old_for is not None and not timedelta(0) < keep_old_for <= MAX_KEY_OVERLAP:
            raise ValidationFailed(
                f"the old certificate may be kept for more than 0 and at most {MAX_KEY_OVERLAP.days} days"
            )
        if keep_old_for is not None and sha256 is None:
            raise ValidationFailed("unbinding keeps no certificate: the old one is kept only while a new one is bound")
        async with self._db.transaction() as conn:  # what was bound, and what replaces it, in one transaction
            bound_now = select(agencies.c.client_cert_sha256).where(agencies.c.organ_id == organ_id)
            row = (await conn.execute(bound_now.with_for_update())).first()
            if row is None:
                raise ValidationFailed(f"no agency {organ_id} is registered")
            current = row.client_cert_sha256
            if keep_old_for is not None and current in (None, sha256):
                state = "none bound" if current is None else "this very one bound already"
                raise ValidationFailed(f"there is no old certificate to keep: {organ_id} has {state}")
            now = datetime.now(UTC)
            kept_until = now + keep_old_for if keep_old_for is not None else None
            await conn.execute(
                update(agencies)
                .where(agencies.c.organ_id == organ_id)
                .values(
                    client_cert_sha256=sha256,
                    previous_client_cert_sha256=current if kept_until is not None else None,
                    previous_client_cert_expires_at=kept_until,
                )
            )
            if sha256 is None:
                action, detail = "certificate-unbound", {"sha256": current}
            else:
                until = kept_until.isoformat() if kept_until is not None else None
                action, detail = "certificate-bound", {"sha256": sha256, "previous": current, "previous_until": until}
            await append_agency_event(conn, organ_id, action, at=now, actor=by, detail=detail)
        self._cache.clear()
        self._generation += 1
        bound = await self.get(organ_id)
        assert bound is not None  # its row was just updated
        return bound

    async def _update(
        self,
        organ_id: str,
        values: Mapping[str, object],
        event: tuple[str, str, dict[str, Any]],
        *,
        at: datetime | None = None,
    ) -> None:
        """Change ``organ_id``'s row and record ``event`` (action, actor, detail) in its history at ``at`` (now),
        in one transaction; every gateway process sees the change once its cached verdicts expire."""
        action, actor, detail = event
        async with self._db.transaction() as conn:
            result = await conn.execute(update(agencies).where(agencies.c.organ_id == organ_id).values(**values))
            if result.rowcount != 1:
                raise ValidationFailed(f"no agency {organ_id} is registered")
            await append_agency_event(conn, organ_id, action, at=at or datetime.now(UTC), actor=actor, detail=detail)
        self._cache.clear()
        self._generation += 1

    async def history(self, organ_id: str) -> list[AgencyEvent]:
        """What was done to ``organ_id``'s entry, oldest first (see :mod:`docbus.store.agency_history`)."""
        async with self._db.reader.connect() as conn:
            return await agency_history(conn, organ_id)

    async def list(self) -> list[Agency]:
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(select(agencies).order_by(agencies.c.organ_id))
            return [_agency(r._asdict()) for r in rows]

    async def organ_ids(self, role: Role = Role.AGENCY) -> frozenset[str]:
        async with self._db.reader.connect() as conn:
            rows = await conn.execute(select(agencies.c.organ_id).where(agencies.c.role == role.value))
            return frozenset(r.organ_id for r in rows)

    async def get(self, organ_id: str) -> Agency | None:
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(select(agencies).where(agencies.c.organ_id == organ_id))).first()
        return _agency(row._asdict()) if row is not None else None

    async def authenticate(self, key: str | None, client_cert_sha256: str | None = None) -> Agency:
        """Resolve a bearer key to its agency, or raise ``Unauthenticated``; ``client_cert_sha256``: the
        fingerprint of the TLS client certificate the request came with (``None``: none, or no TLS)."""
        if not key:
            raise Unauthenticated("send your API key as 'Authorization: Bearer <key>'")
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return _active(cached[1], client_cert_sha256)
        # One lookup per key at a time: when an entry expires under load, every request in flight with that key
        # would otherwise query the database at once (a burst of queries every cache period).
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = asyncio.ensure_future(self._lookup(digest, now))
            self._lookups[digest] = lookup
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        agency = await asyncio.shield(lookup)
        if agency is None:
            raise Unauthenticated("the API key is not known to this bus")
        return _active(agency, client_cert_sha256)

    async def _lookup(self, digest: str, now: float) -> Agency | None:
        generation = self._generation
        previous = and_(agencies.c.previous_key_hash == digest, agencies.c.previous_key_expires_at > datetime.now(UTC))
        async with self._db.reader.connect() as conn:
            row = (await conn.execute(select(agencies).where(or_(agencies.c.key_hash == digest, previous)))).first()
        if row is None:
            self._cache.pop(digest, None)
            return None
        agency = _agency(row._asdict())
        if len(self._cache) > 10_000:
            self._cache.clear()
        if generation == self._generation:
            self._cache[digest] = (now, agency)
        return agency


def _active(agency: Agency, client_cert_sha256: str | None) -> Agency:
    """The agency, unless it is suspended (403 with since when and why) or its key is bound to a client
    certificate the request did not come with (403 saying which one it showed)."""
    if agency.suspended_at is not None:
        raise Forbidden(
            f"agency {agency.organ_id} is suspended since {agency.suspended_at:%Y-%m-%d %H:%M} UTC: "
            f"{agency.suspended_reason}; ask the bus' operators to resume it"
        )
    bound = agency.client_cert_sha256
    if bound is None or client_cert_sha256 == bound:
        return agency
    previous = agency.previous_certificate()
    if previous is not None and client_cert_sha256 == previous[0]:
        return agency
    shown = "none" if client_cert_sha256 is None else f"the certificate with SHA-256 {client_cert_sha256[:16]}…"
    also = ""
    if previous is not None:
        also = f" (or, until {previous[1]:%Y-%m-%d %H:%M} UTC, the one whose fingerprint begins {previous[0][:16]})"
    raise Forbidden(
        f"the key of agency {agency.organ_id} is accepted only over mutual TLS with the certificate whose SHA-256 "
        f"fingerprint begins {bound[:16]}{also}; this request showed {shown}"
    )


def _agency(row: Mapping[str, object]) -> Agency:
    return Agency(
        organ_id=str(row["organ_id"]),
        name=str(row["name"]),
        parent=str(row["parent"]) if row["parent"] is not None else None,
        level=int(str(row["level"])),
        role=Role(str(row["role"])),
        key_prefix=str(row["key_prefix"]),
        created_at=as_utc(row["created_at"]),
        key_rotated_at=as_utc(row["key_rotated_at"]),
        previous_key_expires_at=as_utc(expires) if (expires := row.get("previous_key_expires_at")) else None,
        suspended_at=as_utc(suspended) if (suspended := row.get("suspended_at")) else None,
        suspended_by=str(row["suspended_by"]) if row.get("suspended_by") is not None else None,
        suspended_reason=str(row["suspended_reason"]) if row.get("suspended_reason") is not None else None,
        client_cert_sha256=str(row["client_cert_sha256"]) if row.get("client_cert_sha256") is not None else None,
        previous_client_cert_sha256=str(cert) if (cert := row.get("previous_client_cert_sha256")) else None,
        previous_client_cert_expires_at=as_utc(until)
        if (until := row.get("previous_client_cert_expires_at"))
        else None,
    )
