"""Routing: which destination serves which receiver.

Rules come from a TOML file (``DOCBUS_ROUTES_FILE``)::

    # The province this bus serves: receivers under its level-1 code stay on the provincial axis.
    [[destination]]
    name = "provincial_axis"          # settings: DOCBUS_ADAPTERS__PROVINCIAL_AXIS__*
    adapter = "provincial_axis"       # entry point in docbus.adapters (defaults to name)

    [[destination]]
    name = "national_axis"

    [[rule]]                          # first matching rule wins
    level1 = ["H41"]                  # receivers whose organ id is under these level-1 bodies
    destination = "provincial_axis"

    [[rule]]
    any = true                        # everything else
    destination = "national_axis"

    [overrides]                       # per-agency: this receiver always goes here
    "000.00.12.H41" = "national_axis"

Receivers registered in the agency directory as local agencies are served by the bus itself (destination
``local``: they read their inbox over the API, the event stream, or their webhook) and need no rule. A receiver
that nothing covers is refused at intake (422), so no message is accepted that could never be delivered.
A message fans out to each destination once, carrying the receivers that destination serves.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docbus.validation.organ_id import InvalidOrganId, parse_organ_id

LOCAL = "local"


@dataclass(frozen=True, slots=True)
class Destination:
    name: str
    adapter: str


@dataclass(frozen=True, slots=True)
class Rule:
    destination: str
    level1: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    any: bool = False

    def matches(self, receiver: str) -> bool:
        if self.any:
            return True
        if self.prefixes and any(receiver.startswith(p) for p in self.prefixes):
            return True
        if self.level1:
            try:
                return parse_organ_id(receiver).level1 in self.level1
            except InvalidOrganId:
                return False
        return False

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"destination": self.destination}
        if self.any:
            out["any"] = True
        if self.level1:
            out["level1"] = sorted(self.level1)
        if self.prefixes:
            out["prefixes"] = list(self.prefixes)
        return out


@dataclass(frozen=True)
class RouteTable:
    """Destinations, ordered rules and per-agency overrides; immutable once loaded."""

    destinations: tuple[Destination, ...] = ()
    rules: tuple[Rule, ...] = ()
    overrides: dict[str, str] = field(default_factory=dict)
    source: str | None = None

    @property
    def enabled(self) -> bool:
        """Without a routes file the bus only accepts and publishes; nothing is forwarded."""
        return bool(self.destinations)

    @classmethod
    def load(cls, path: Path | None) -> RouteTable:
        if path is None:
            return cls()
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str | None = None) -> RouteTable:
        destinations = tuple(
            Destination(str(d["name"]), str(d.get("adapter", d["name"]))) for d in raw.get("destination", [])
        )
        names = {d.name for d in destinations} | {LOCAL}
        if len(names) != len(destinations) + 1:
            raise ValueError("destination names must be unique (and 'local' is reserved)")
        rules = []
        for index, r in enumerate(raw.get("rule", [])):
            rule = Rule(
                destination=str(r["destination"]),
                level1=frozenset(str(x) for x in r.get("level1", [])),
                prefixes=tuple(str(x) for x in r.get("prefixes", [])),
                any=bool(r.get("any", False)),
            )
            if rule.destination not in names:
                raise ValueError(f"rule {index + 1} names unknown destination {rule.destination!r}")
            if not (rule.any or rule.level1 or rule.prefixes):
                raise ValueError(f"rule {index + 1} matches nothing: give level1, prefixes or any = true")
            rules.append(rule)
        overrides = {str(k): str(v) for k, v in raw.get("overrides", {}).items()}
        for agency, destination in overrides.items():
            if destination not in names:
                raise ValueError(f"override for {agency} names unknown destination {destination!r}")
        return cls(destinations, tuple(rules), overrides, source)

    def destination(self, name: str) -> Destination | None:
        return next((d for d in self.destinations if d.name == name), None)

    def resolve(self, receiver: str, local_agencies: frozenset[str] = frozenset()) -> str | None:
        """The destination serving ``receiver``, or ``None`` when nothing covers it."""
        if receiver in self.overrides:
            return self.overrides[receiver]
        if receiver in local_agencies:
            return LOCAL
        for rule in self.rules:
            if rule.matches(receiver):
                return rule.destination
        return None

    def plan(
        self, receivers: Iterable[str], local_agencies: frozenset[str] = frozenset()
    ) -> tuple[dict[str, tuple[str, ...]], list[str]]:
        """Group receivers by destination (each destination once) and list the receivers nothing covers."""
        plan: dict[str, list[str]] = {}
        uncovered: list[str] = []
        for receiver in receivers:
            destination = self.resolve(receiver, local_agencies)
            if destination is None:
                uncovered.append(receiver)
            else:
                plan.setdefault(destination, []).append(receiver)
        return {d: tuple(r) for d, r in plan.items()}, uncovered

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destinations": [{"name": d.name, "adapter": d.adapter} for d in self.destinations],
            "rules": [r.as_dict() for r in self.rules],
            "overrides": self.overrides,
            "local": "receivers registered as agencies in this bus are served locally",
        }
