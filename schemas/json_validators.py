"""Building the JSON Schema validators: the one custom format, and local ``$ref`` inlined before use.

The served schema files keep their ``$defs``; the validator works on a copy with local references replaced by
what they point at, which makes ``jsonschema`` about a third faster (no reference resolution per value).
"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

DATETIME14_FORMAT = "docbus-datetime14"
# The shape of a yyyyMMddHHmmss date, exactly as the dossier schemas' "pattern" says it.
DATETIME14_PATTERN = "^[0-9]{4}(0[1-9]|1[0-2])(0[1-9]|[12][0-9]|3[01])([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]$"
_DATETIME14 = re.compile(DATETIME14_PATTERN)
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# Keywords that only annotate: a $ref's siblings may override these when the reference is inlined.
_ANNOTATIONS = frozenset({"description", "title", "$comment", "examples", "default"})


def is_real_datetime14(value: str) -> bool:
    """``value`` has the yyyyMMddHHmmss shape (checked by the pattern); is it a day that exists?"""
    year, month, day = int(value[0:4]), int(value[4:6]), int(value[6:8])
    if day <= 28:
        return True
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS_IN_MONTH[month - 1]


def datetime14_format_checker() -> FormatChecker:
    """A format checker that knows only ``docbus-datetime14``: a real calendar date as yyyyMMddHHmmss.

    Strings of the wrong shape pass here: the schema's ``pattern`` reports those, so a value gets one error.
    """
    checker = FormatChecker(formats=())

    @checker.checks(DATETIME14_FORMAT)
    def _is_datetime14(value: object) -> bool:
        if not isinstance(value, str) or _DATETIME14.search(value) is None:
            return True
        # "$" lets a final newline through the pattern; the date itself must be exactly 14 digits.
        return len(value) == 14 and is_real_datetime14(value)

    return checker


def inline_local_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` whose ``{"$ref": "#/$defs/name"}`` are replaced by the definitions (not recursive)."""
    definitions: dict[str, Any] = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, list):
            return [resolve(item) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("$ref")
        if not (isinstance(reference, str) and reference.startswith("#/$defs/")):
            return {key: resolve(value) for key, value in node.items()}
        target = resolve(definitions[reference.removeprefix("#/$defs/")])
        siblings = {key: resolve(value) for key, value in node.items() if key != "$ref"}
        if set(siblings) & set(target) - _ANNOTATIONS:
            return {"allOf": [target, siblings]}
        return {**target, **siblings}

    return {key: resolve(value) for key, value in schema.items() if key != "$defs"}


def build_validator(schema: dict[str, Any]) -> Draft202012Validator:
    """Checks the schema itself, then builds its validator (format checking on, for our one format)."""
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(inline_local_refs(schema), format_checker=datetime14_format_checker())
