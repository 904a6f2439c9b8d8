"""Route tables: rules by organ-id hierarchy, overrides, local agencies, fan-out and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from docbus.routing import LOCAL, RouteTable

PROVINCE = {
    "destination": [{"name": "provincial_axis"}, {"name": "national_axis"}, {"name": "archive", "adapter": "file"}],
    "rule": [
        {"level1": ["H41"], "destination": "provincial_axis"},
        {"prefixes": ["000.00.00.G"], "destination": "national_axis"},
    ],
    "overrides": {"000.00.07.H41": "archive"},
}


def test_rules_in_order_overrides_and_local_agencies() -> None:
    table = RouteTable.from_dict(PROVINCE)
    assert table.resolve("000.00.01.H41") == "provincial_axis"
    assert table.resolve("H41.02") == "provincial_axis"  # QĐ 20 form, same province
    assert table.resolve("000.00.00.G22") == "national_axis"
    assert table.resolve("000.00.07.H41") == "archive"
    assert table.resolve("000.00.00.H14") is None
    assert table.resolve("000.00.00.H14", frozenset({"000.00.00.H14"})) == LOCAL
    assert table.destination("archive") is not None
    assert table.destination("archive").adapter == "file"  # type: ignore[union-attr]


def test_plan_fans_out_each_destination_once_and_lists_the_uncovered() -> None:
    table = RouteTable.from_dict(PROVINCE)
    plan, uncovered = table.plan(["000.00.01.H41", "000.00.02.H41", "000.00.00.G22", "000.00.00.H14"])
    assert plan == {"provincial_axis": ("000.00.01.H41", "000.00.02.H41"), "national_axis": ("000.00.00.G22",)}
    assert uncovered == ["000.00.00.H14"]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"destination": [{"name": "a"}], "rule": [{"any": True, "destination": "b"}]}, "unknown destination"),
        ({"destination": [{"name": "a"}], "rule": [{"destination": "a"}]}, "matches nothing"),
        ({"destination": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"destination": [{"name": "local"}]}, "reserved"),
        ({"destination": [{"name": "a"}], "overrides": {"000.00.00.G22": "b"}}, "unknown destination"),
    ],
)
def test_bad_tables_are_refused_with_a_reason(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RouteTable.from_dict(raw)  # type: ignore[arg-type]


def test_loads_toml_and_reports_itself(tmp_path: Path) -> None:
    path = tmp_path / "routes.toml"
    path.write_text('[[destination]]\nname = "national_axis"\n\n[[rule]]\nany = true\ndestination = "national_axis"\n')
    table = RouteTable.load(path)
    assert table.enabled
    assert table.as_dict()["rules"] == [{"destination": "national_axis", "any": True}]
    assert not RouteTable.load(None).enabled
