"""Finding adapters by name: the entry-point group ``docbus.adapters`` (name → ``module:Class``).

docbus registers its own (``national_axis``, ``provincial_axis``, ``webhook``, ``file``) the same way a third
party does, in its ``pyproject.toml``::

    [project.entry-points."docbus.adapters"]
    echo = "docbus_echo_adapter:EchoAdapter"

An entry point that fails to load, or does not name an :class:`Adapter` subclass, is logged and left out: one
broken plug-in never takes the others down; asking for it by name explains what went wrong. When two
distributions claim one name, docbus' own wins, then the first found.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from docbus.adapters.base import Adapter
from docbus.errors import DocbusError

GROUP = "docbus.adapters"
OWN_DISTRIBUTION = "docbus"

log = logging.getLogger(__name__)


class AdapterConfigError(DocbusError):
    """Raised when an adapter cannot be built: unknown name, broken plug-in, or settings that do not validate."""

    def __init__(self, adapter: str, problems: list[str]) -> None:
        super().__init__(f"adapter {adapter!r}: " + "; ".join(problems))
        self.adapter = adapter
        self.problems = problems


def discover_adapters() -> dict[str, type[Adapter]]:
    """Every adapter installed in this environment, by entry-point name (read afresh on each call)."""
    found, _ = _load_all()
    return found


def build_adapter(name: str, config: dict[str, Any]) -> Adapter:
    """An adapter ``name`` built from raw settings (keys case-insensitive, values as read from the environment).

    Raises :class:`AdapterConfigError` naming the adapter and each offending key (never its value: it may be
    a secret).
    """
    found, broken = _load_all()
    if name in broken:
        raise AdapterConfigError(name, [broken[name]])
    cls = found.get(name)
    if cls is None:
        known = ", ".join(sorted(found)) or "none"
        raise AdapterConfigError(name, [f"no such adapter (installed: {known})"])
    try:
        return cls.from_config(config)
    except ValidationError as exc:
        raise AdapterConfigError(name, [_describe(error) for error in exc.errors()]) from None


def _load_all() -> tuple[dict[str, type[Adapter]], dict[str, str]]:
    points = sorted(entry_points(group=GROUP), key=lambda ep: ep.dist is None or ep.dist.name != OWN_DISTRIBUTION)
    found: dict[str, type[Adapter]] = {}
    broken: dict[str, str] = {}
    for point in points:
        if point.name in found:
            if _target(found[point.name]) != point.value:
                log.warning("adapter %r from %s ignored: the name is taken", point.name, _origin(point))
            continue
        try:
            loaded = point.load()
        except Exception as exc:
            broken.setdefault(point.name, f"entry point {point.value!r} failed to load: {exc!r}")
            log.warning("adapter %r from %s failed to load: %r", point.name, _origin(point), exc)
            continue
        if not (isinstance(loaded, type) and issubclass(loaded, Adapter)):
            broken.setdefault(point.name, f"entry point {point.value!r} is not an Adapter subclass")
            log.warning("adapter %r from %s is not an Adapter subclass", point.name, _origin(point))
            continue
        found[point.name] = loaded
        broken.pop(point.name, None)
    return found, broken


def _describe(error: ErrorDetails) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown setting {key!r}"
    if error["type"] == "missing":
        return f"setting {key!r} is required"
    # A check of the model's own (e.g. settings that do not go together) names its settings in its message.
    raised = error.get("ctx", {}).get("error") if error["type"] == "value_error" else None
    message = str(raised) if raised is not None else error["msg"]
    return f"setting {key!r}: {message}" if key else message


def _target(cls: type[Adapter]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _origin(point: EntryPoint) -> str:
    return point.dist.name if point.dist is not None else "an unknown distribution"
