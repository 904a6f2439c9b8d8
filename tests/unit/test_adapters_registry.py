"""Adapter discovery through the entry-point group and building adapters from raw settings."""

from __future__ import annotations

from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from docbus.adapters import registry
from docbus.adapters.base import Adapter
from docbus.adapters.file import FileAdapter, FileSettings
from docbus.adapters.national_axis import NationalAxisAdapter
from docbus.adapters.provincial_axis import ProvincialAxisAdapter
from docbus.adapters.registry import AdapterConfigError, build_adapter, discover_adapters
from docbus.adapters.webhook import WebhookAdapter

BUILT_IN = {
    "national_axis": NationalAxisAdapter,
    "provincial_axis": ProvincialAxisAdapter,
    "webhook": WebhookAdapter,
    "file": FileAdapter,
}


def test_built_in_adapters_are_found_by_their_names() -> None:
    found = discover_adapters()
    for name, cls in BUILT_IN.items():
        assert found[name] is cls
        assert cls.name == name


async def test_build_adapter_validates_settings_case_insensitively(tmp_path: Path) -> None:
    adapter = build_adapter("file", {"DIRECTORY": str(tmp_path), "Fsync": "false"})
    assert isinstance(adapter, FileAdapter)
    assert adapter.settings == FileSettings(directory=tmp_path, fsync=False)
    await adapter.aclose()


@pytest.mark.parametrize(
    ("name", "config", "complaints"),
    [
        ("webhook", {"url": "https://127.0.0.1/x", "secret": "s" * 20, "retries": "3"}, ["unknown setting 'retries'"]),
        ("national_axis", {"url": "http://127.0.0.1:9"}, ["'system_id' is required", "'secret' is required"]),
        ("webhook", {"url": "http://192.0.2.10/hook", "secret": "s" * 20}, ["setting 'url'", "loopback"]),
        ("provincial_axis", {"url": "ftp://127.0.0.1", "system_id": "x", "secret": "y"}, ["setting 'url'"]),
        ("file", {"directory": "/tmp", "timeout": "1"}, ["unknown setting 'timeout'"]),
    ],
)
def test_bad_settings_name_the_adapter_and_the_key(name: str, config: dict[str, str], complaints: list[str]) -> None:
    with pytest.raises(AdapterConfigError) as caught:
        build_adapter(name, config)
    message = str(caught.value)
    assert message.startswith(f"adapter {name!r}: ")
    for complaint in complaints:
        assert complaint in message
    assert caught.value.adapter == name


def test_settings_errors_never_repeat_a_secret_value() -> None:
    with pytest.raises(AdapterConfigError) as caught:
        build_adapter("webhook", {"url": "https://127.0.0.1/x", "secret": "short-secret"})
    assert "secret" in str(caught.value)
    assert "short-secret" not in str(caught.value)


def test_an_unknown_adapter_lists_the_installed_ones() -> None:
    with pytest.raises(AdapterConfigError, match=r"adapter 'carrier-pigeon': no such adapter \(installed: .*file"):
        build_adapter("carrier-pigeon", {})


def test_a_broken_plugin_is_left_out_and_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    points = [
        EntryPoint(name="missing", value="docbus_no_such_module_anywhere:Adapter", group=registry.GROUP),
        EntryPoint(name="not_an_adapter", value="json:dumps", group=registry.GROUP),
        EntryPoint(name="file", value="docbus.adapters.file:FileAdapter", group=registry.GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: [p for p in points if p.group == group])

    assert discover_adapters() == {"file": FileAdapter}
    with pytest.raises(AdapterConfigError, match="failed to load"):
        build_adapter("missing", {})
    with pytest.raises(AdapterConfigError, match="not an Adapter subclass"):
        build_adapter("not_an_adapter", {})


def test_every_built_in_adapter_has_its_own_settings_model() -> None:
    for cls in BUILT_IN.values():
        assert issubclass(cls, Adapter)
        assert cls.Settings is not Adapter.Settings
        assert cls.Settings.model_config.get("extra") == "forbid"
