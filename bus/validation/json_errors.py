"""JSON Schema complaints (``jsonschema`` errors) as :class:`FieldError`: JSON pointer, keyword, two languages.

The rule is the JSON Schema keyword that failed (``required``, ``type``, ``enum``, ``pattern``, ``format``,
``additionalProperties``, ...). ``required`` and ``additionalProperties`` point at the missing or extra field
itself, one complaint per field.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import ValidationError

from docbus.errors import FieldError
from docbus.schemas import DATETIME14_FORMAT
from docbus.validation.paths import json_pointer

_TYPES = {
    "string": ("a string", "chuỗi ký tự"),
    "integer": ("an integer", "số nguyên"),
    "number": ("a number", "số"),
    "object": ("an object", "đối tượng"),
    "array": ("an array", "mảng"),
    "boolean": ("true or false", "giá trị đúng/sai"),
    "null": ("null", "null"),
}


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _label(parts: list[str | int]) -> str:
    """``['dossier', 'TaiLieuNop', 0]`` → ``TaiLieuNop[0]``: the field as a person names it."""
    label = ""
    for part in parts:
        label = f"{label}[{part}]" if isinstance(part, int) else part
    return label or "the message"


def _shown(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 60 else text[:59] + "…"


def complaints(error: ValidationError) -> Iterator[FieldError]:
    """The :class:`FieldError` (one or more) for one ``jsonschema`` error."""
    keyword = str(error.validator)
    value: Any = error.validator_value
    instance = error.instance
    schema = error.schema if isinstance(error.schema, dict) else {}
    path = json_pointer(error.absolute_path)
    field = _label(list(error.absolute_path))

    if keyword == "required":
        missing = [name for name in value if isinstance(instance, dict) and name not in instance]
        named = [name for name in missing if error.message.startswith(repr(name))] or missing[:1]
        for name in named:
            yield FieldError(
                path=f"{path}/{name}",
                rule="required",
                message_en=f"Missing required field {name}",
                message_vi=f"Thiếu trường bắt buộc {name}",
                expected=name,
            )
        return
    if keyword == "additionalProperties" and isinstance(instance, dict):
        known = schema.get("properties", {})
        for name in instance:
            if name not in known:
                yield FieldError(
                    path=f"{path}/{name}",
                    rule="additionalProperties",
                    message_en=f"Field {name} is not allowed here",
                    message_vi=f"Trường {name} không được phép ở đây",
                    expected=", ".join(known) or None,
                )
        return

    message_en, message_vi = _texts(keyword, value, instance, schema, field, error.message)
    yield FieldError(path, keyword, message_en, message_vi, expected=_expected(keyword, value, schema))


def _expected(keyword: str, value: Any, schema: dict[str, Any]) -> str | None:
    if schema.get("format") == DATETIME14_FORMAT and keyword in ("pattern", "format", "type"):
        return "yyyyMMddHHmmss"
    if keyword == "type":
        names = value if isinstance(value, list) else [value]
        return " or ".join(_TYPES.get(name, (name, name))[0] for name in names)
    if keyword == "enum":
        return ", ".join(_shown(item) for item in value)
    if keyword in ("const", "minLength", "maxLength", "minimum", "maximum", "minItems", "maxItems", "pattern"):
        return str(value)
    return None


def _texts(
    keyword: str, value: Any, instance: Any, schema: dict[str, Any], field: str, fallback: str
) -> tuple[str, str]:
    """English and Vietnamese text for one failed keyword."""
    shown = _shown(instance)
    if keyword == "type":
        names = value if isinstance(value, list) else [value]
        want_en = " or ".join(_TYPES.get(name, (name, name))[0] for name in names)
        want_vi = " hoặc ".join(_TYPES.get(name, (name, name))[1] for name in names)
        got_en, got_vi = _TYPES.get(json_type(instance), ("?", "?"))
        return f"{field} must be {want_en}, not {got_en}", f"{field} phải là {want_vi}, không phải {got_vi}"
    if keyword == "pattern" and schema.get("format") == DATETIME14_FORMAT:
        return (
            f"{field} must be a date and time written yyyyMMddHHmmss, not {shown}",
            f"{field} phải là ngày giờ theo định dạng yyyyMMddHHmmss, giá trị {shown} không hợp lệ",
        )
    if keyword == "format" and value == DATETIME14_FORMAT:
        return (
            f"{field} is not a real date and time: {shown}",
            f"{field} không phải ngày giờ có thật: {shown}",
        )
    if keyword == "pattern":
        return (
            f"{field} value {shown} does not match {value}",
            f"Giá trị {shown} của {field} không đúng định dạng {value}",
        )
    if keyword == "enum":
        allowed = ", ".join(_shown(item) for item in value)
        return (
            f"{field} value {shown} is not one of {allowed}",
            f"Giá trị {shown} của {field} không thuộc các giá trị cho phép: {allowed}",
        )
    if keyword == "const":
        return (
            f"{field} must be {_shown(value)}, not {shown}",
            f"{field} phải là {_shown(value)}, không phải {shown}",
        )
    if keyword == "minLength" and value == 1:
        return f"{field} must not be empty", f"{field} không được để trống"
    if keyword == "minLength":
        return f"{field} must have at least {value} characters", f"{field} phải có ít nhất {value} ký tự"
    if keyword == "maxLength":
        return f"{field} has more than {value} characters", f"{field} dài quá {value} ký tự"
    if keyword == "minimum":
        return (
            f"{field} must be at least {value}, not {shown}",
            f"{field} phải lớn hơn hoặc bằng {value}, giá trị {shown} không hợp lệ",
        )
    if keyword == "maximum":
        return (
            f"{field} must be at most {value}, not {shown}",
            f"{field} phải nhỏ hơn hoặc bằng {value}, giá trị {shown} không hợp lệ",
        )
    if keyword == "minItems":
        return f"{field} needs at least {value} item(s)", f"{field} cần ít nhất {value} phần tử"
    if keyword == "minProperties":
        return f"{field} must not be an empty object", f"{field} không được để trống"
    return f"{field}: {fallback}", f"Giá trị của {field} không hợp lệ"
