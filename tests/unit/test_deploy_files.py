"""The production files in ``deploy/systemd`` stay true to the code: every variable of the example environment
is a setting docbus reads (and the example validates), the example routes load and their adapters accept the
example's settings, every unit's command line is one the ``docbus`` command accepts, and the nginx proxy in
``deploy/nginx`` forwards what the gateway reads."""

from __future__ import annotations

import configparser
import os
import re
import shlex
from pathlib import Path

import pytest

from docbus.cli import _parser
from docbus.delivery.node import configure_destination
from docbus.routing import LOCAL, RouteTable
from docbus.settings import Settings

from ..pki import Pki

SYSTEMD = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))


def example_environment(include_commented: bool) -> dict[str, str]:
    values = {}
    for line in (SYSTEMD / "docbus.env.example").read_text().splitlines():
        text = line.strip()
        if include_commented and text.startswith("# DOCBUS_"):
            text = text[2:]
        if text.startswith("DOCBUS_") and "=" in text:
            name, _, value = text.partition("=")
            values[name] = value
    return values


def test_every_example_variable_is_a_setting_and_the_example_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    fields = {f"DOCBUS_{name.upper()}" for name in Settings.model_fields}
    for name in example_environment(include_commented=True):
        top = name.split("__")[0]
        assert top in fields, f"{name} in docbus.env.example is not a docbus setting"
    for name in [n for n in os.environ if n.startswith("DOCBUS_")]:
        monkeypatch.delenv(name)
    for name, value in example_environment(include_commented=True).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.kafka_replication_factor == 3
    assert settings.adapters["national"]["secret"] == "CHANGE-ME"


def test_the_example_routes_load_and_their_adapters_take_the_example_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    routes = RouteTable.load(SYSTEMD / "routes.toml.example")
    assert routes.resolve("000.00.00.H41") == "provincial"
    assert routes.resolve("000.00.00.G22") == "national"
    government_ca = Pki(tmp_path, "Government CA").ca_file  # the adapters load their CA files when read
    for name, value in example_environment(include_commented=False).items():
        monkeypatch.setenv(name, str(government_ca) if name.endswith("__CA_FILE") else value)
    settings = Settings()
    for destination in routes.destinations:
        if destination.name != LOCAL:
            configure_destination(settings.adapters, destination)  # raises on a missing or unknown setting


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_each_unit_runs_a_command_docbus_accepts(unit: Path) -> None:
    parsed = configparser.ConfigParser(interpolation=None, strict=False)
    parsed.optionxform = str  # type: ignore[assignment,method-assign]
    parsed.read(unit)
    assert parsed["Install"]["WantedBy"] == "multi-user.target"
    service = parsed["Service"]
    assert service["User"] == "docbus" and service["NoNewPrivileges"] == "yes"
    command = shlex.split(service["ExecStart"].replace("%i", "1"))
    assert command[0] == "/opt/docbus/venv/bin/docbus"
    args = _parser().parse_args(command[1:])  # exits (fails the test) on an option docbus does not have
    assert callable(args.func)


ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "docbus-alerts.yml"
# What the exposition adds to a metric's name: counters' _total, histograms' series.
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def test_every_alert_reads_metrics_docbus_exports() -> None:
    """The rules file parses, each rule is whole, and every docbus_* series an expression reads is one docbus
    exports (a renamed metric would otherwise leave an alert silently never firing)."""
    import re

    import yaml

    from docbus import metrics

    exported = set()
    for collector in vars(metrics).values():
        describe = getattr(collector, "describe", None)
        if callable(describe) and hasattr(collector, "_name"):
            exported.update(family.name for family in describe())
    assert "docbus_destination_breaker_open" in exported
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    assert len({rule["alert"] for rule in rules}) == len(rules) >= 8
    for rule in rules:
        assert rule["expr"] and rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
        for series in re.findall(r"\bdocbus_[a-z_]+", rule["expr"]):
            base = next(
                (series[: -len(s)] for s in SUFFIXES if series.endswith(s) and series[: -len(s)] in exported), series
            )
            assert base in exported, f"{rule['alert']} reads {series}, which docbus does not export"


def test_the_nginx_proxy_forwards_what_the_gateway_reads_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """``deploy/nginx/docbus.conf`` and the gateway's defaults agree: the header the certificate travels in, the
    body cap, and the gateway's address in the units (the nginx test runs the file itself, with its own ports)."""
    for name in [n for n in os.environ if n.startswith("DOCBUS_")]:
        monkeypatch.delenv(name)
    conf = (SYSTEMD.parent / "nginx" / "docbus.conf").read_text()
    settings = Settings()
    assert f"proxy_set_header    {settings.proxy_client_cert_header} $docbus_client_cert;" in conf
    cap = re.search(r"client_max_body_size\s+(\d+)m;", conf)
    assert cap is not None and int(cap.group(1)) * 1024 * 1024 == settings.max_body_bytes
    upstream = re.search(r"server (127\.0\.0\.1:\d+);", conf)
    gateway_unit = (SYSTEMD / "docbus-gateway.service").read_text()
    assert upstream is not None
    host, port = upstream.group(1).split(":")
    assert f"--host {host}" in gateway_unit and f"--port {port}" in gateway_unit
