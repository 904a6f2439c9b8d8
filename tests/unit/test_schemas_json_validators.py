"""How the JSON Schema validators are built: the calendar check and the inlining of local references."""

from __future__ import annotations

import pytest

from docbus.schemas.json_validators import (
    build_validator,
    datetime14_format_checker,
    inline_local_refs,
    is_real_datetime14,
)


@pytest.mark.parametrize(
    ("value", "real"),
    [
        ("20240229000000", True),
        ("20000229000000", True),  # divisible by 400
        ("19000229000000", False),  # divisible by 100, not by 400
        ("20230229000000", False),
        ("20240230000000", False),
        ("20240431235959", False),
        ("20241231235959", True),
        ("20240131000000", True),
    ],
)
def test_calendar(value: str, real: bool) -> None:
    assert is_real_datetime14(value) is real


def test_format_leaves_bad_shapes_to_the_pattern_but_not_a_final_newline() -> None:
    checker = datetime14_format_checker()
    assert checker.conforms("2024-03-15", "docbus-datetime14")  # the pattern complains about this one
    assert checker.conforms(12, "docbus-datetime14")  # and "type" about this one
    assert not checker.conforms("20240315083000\n", "docbus-datetime14")  # "$" in the pattern lets it through
    assert not checker.conforms("20240230083000", "docbus-datetime14")


def test_local_references_are_inlined() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/short", "description": "overrides an annotation"},
            "b": {"$ref": "#/$defs/short", "maxLength": 2},
        },
        "$defs": {"short": {"type": "string", "maxLength": 3, "description": "short text"}},
    }
    inlined = inline_local_refs(schema)
    assert "$defs" not in inlined
    assert inlined["properties"]["a"] == {"type": "string", "maxLength": 3, "description": "overrides an annotation"}
    # A validation keyword on both sides must keep both: allOf.
    assert inlined["properties"]["b"] == {
        "allOf": [{"type": "string", "maxLength": 3, "description": "short text"}, {"maxLength": 2}]
    }
    validator = build_validator(schema)
    assert [error.validator for error in validator.iter_errors({"a": "abcd", "b": "abc"})] == ["maxLength", "maxLength"]
