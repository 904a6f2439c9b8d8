"""Agency ids in both forms: what parses, what level it is, who its parent is, and what is refused."""

from __future__ import annotations

import pytest

from docbus.validation import InvalidOrganId, OrganId, parse_organ_id


@pytest.mark.parametrize(
    ("text", "form", "level", "level1", "canonical", "parent"),
    [
        ("000.00.00.G22", "qcvn102", 1, "G22", "000.00.00.G22", None),
        ("000.00.00.H41", "qcvn102", 1, "H41", "000.00.00.H41", None),
        ("000.00.04.G14", "qcvn102", 2, "G14", "000.00.04.G14", "000.00.00.G14"),
        ("000.02.03.H37", "qcvn102", 3, "H37", "000.02.03.H37", "000.00.03.H37"),
        ("001.02.03.H37", "qcvn102", 4, "H37", "001.02.03.H37", "000.02.03.H37"),
        # Real senders leave out the leading zero groups.
        ("28.22.H17", "qcvn102", 3, "H17", "000.28.22.H17", "000.00.22.H17"),
        ("22.H17", "qcvn102", 2, "H17", "000.00.22.H17", "000.00.00.H17"),
        ("H41", "qd20", 1, "H41", "H41", None),
        ("G12.18", "qd20", 2, "G12", "G12.18", "G12"),
        ("H37.02.02", "qd20", 3, "H37", "H37.02.02", "H37.02"),
        ("  000.00.00.A80\n", "qcvn102", 1, "A80", "000.00.00.A80", None),
    ],
)
def test_valid_ids(text: str, form: str, level: int, level1: str, canonical: str, parent: str | None) -> None:
    organ = parse_organ_id(text)
    assert isinstance(organ, OrganId)
    assert (organ.form, organ.level, organ.level1, organ.canonical) == (form, level, level1, canonical)
    assert str(organ) == canonical
    assert (str(organ.parent) if organ.parent else None) == parent


def test_walking_up_ends_at_level_one() -> None:
    chain = []
    organ: OrganId | None = parse_organ_id("001.02.03.H37")
    while organ is not None:
        chain.append(organ.canonical)
        organ = organ.parent
    assert chain == ["001.02.03.H37", "000.02.03.H37", "000.00.03.H37", "000.00.00.H37"]


def test_the_same_agency_written_short_and_long_is_equal() -> None:
    assert parse_organ_id("28.22.H17") == parse_organ_id("000.28.22.H17")
    assert parse_organ_id("H41") != parse_organ_id("000.00.00.H41")  # two forms are not convertible


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("vxp.saas.03", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("000.00.00.h41", "letters must be upper case"),
        ("h37.02", "letters must be upper case"),
        ("", "empty"),
        ("   ", "empty"),
        ("000.00.00.H4", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("0000.00.00.H41", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("000.00.00.41H", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("000.A0.00.H41", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("H41.", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("000.00.00.H41.02", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
        ("000 00 00 H41", "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)"),
    ],
)
def test_invalid_ids(text: str, reason: str) -> None:
    with pytest.raises(InvalidOrganId) as caught:
        parse_organ_id(text)
    assert isinstance(caught.value, ValueError)
    assert caught.value.reason == reason
    assert caught.value.text == text
    assert repr(text) in str(caught.value)
