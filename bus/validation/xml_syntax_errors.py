"""libxml2's well-formedness complaints as :class:`FieldError`, with a stable rule and Vietnamese text."""

from __future__ import annotations

import re

from lxml import etree

from docbus.errors import FieldError, NotWellFormed

# Without XML_PARSE_HUGE libxml2 stops at these on its own.
LIBXML2_MAX_DEPTH = 256
LIBXML2_MAX_TEXT = 10_000_000

# libxml2's commonest complaints, said in Vietnamese; anything else keeps libxml2's words after a prefix.
_VIETNAMESE = (
    (
        re.compile(r"Opening and ending tag mismatch: (\S+) line (\d+) and (\S+)"),
        "Thẻ mở {0} (dòng {1}) không khớp với thẻ đóng {2}",
    ),
    (
        re.compile(r"Premature end of data in tag (\S+) line (\d+)"),
        "Nội dung kết thúc khi thẻ {0} (dòng {1}) chưa được đóng",
    ),
    (re.compile(r"Extra content at the end of the document"), "Có nội dung thừa sau phần tử gốc"),
    (re.compile(r"Start tag expected, '<' not found"), "Không tìm thấy thẻ mở của phần tử gốc"),
    (
        re.compile(r"Namespace prefix (\S+) (?:for \S+ )?on (\S+) is not defined"),
        "Tiền tố không gian tên {0} dùng trên {1} chưa được khai báo",
    ),
    (re.compile(r"Couldn't find end of Start Tag (\S+)"), "Thẻ mở {0} không được kết thúc đúng cách"),
    (re.compile(r"EndTag: '</' not found"), "Thiếu thẻ đóng"),
    (re.compile(r"StartTag: invalid element name"), "Tên phần tử không hợp lệ"),
    (re.compile(r"AttValue: \" or ' expected"), "Giá trị thuộc tính phải được đặt trong dấu nháy"),
    (re.compile(r"xmlParseEntityRef: no name"), "Ký tự & phải được viết là &amp;"),
    (re.compile(r"Entity '([^']*)' not defined"), "Thực thể {0} không được phép (chỉ dùng các thực thể chuẩn của XML)"),
)


def _in_vietnamese(message: str) -> str:
    for pattern, template in _VIETNAMESE:
        match = pattern.search(message)
        if match is not None:
            return template.format(*match.groups())
    return f"XML không đúng cú pháp: {message}"


def not_well_formed(exc: etree.XMLSyntaxError, log: etree._ListErrorLog, limit: int) -> NotWellFormed:
    """Every error libxml2 logged while failing to parse (at most ``limit``), first one in the detail."""
    errors: list[FieldError] = []
    for entry in log:
        if entry.level < etree.ErrorLevels.ERROR:
            continue
        errors.append(_complaint(entry.type_name, entry.message, entry.line, entry.column))
        if len(errors) >= limit:
            break
    if not errors:
        line, column = exc.position
        errors.append(_complaint("", exc.msg, line, column))
    first = errors[0]
    return NotWellFormed(
        f"The body is not well-formed XML: {first.message_en} (line {first.line}, column {first.column})",
        errors,
    )


def _complaint(type_name: str, message: str, line: int | None, column: int | None) -> FieldError:
    text = message.strip()
    rule, vi = "not-well-formed", _in_vietnamese(text)
    if type_name == "ERR_INVALID_ENCODING" or "not proper UTF-8" in text:
        rule, vi = "invalid-utf8", "Nội dung có chuỗi byte không phải UTF-8 hợp lệ"
        text = "Invalid UTF-8 byte sequence"
    elif type_name == "ERR_RESOURCE_LIMIT" and "depth" in text:
        rule = "max-depth"
        text = f"Elements are nested deeper than {LIBXML2_MAX_DEPTH} levels"
        vi = f"Các phần tử lồng nhau quá {LIBXML2_MAX_DEPTH} cấp"
    elif type_name == "ERR_RESOURCE_LIMIT":
        rule = "text-too-large"
        text = f"A text node or attribute value is longer than {LIBXML2_MAX_TEXT} bytes"
        vi = f"Có nội dung văn bản hoặc thuộc tính dài quá {LIBXML2_MAX_TEXT} byte"
    elif type_name == "ERR_UNDECLARED_ENTITY":
        rule = "undefined-entity"
    elif type_name == "ERR_RESERVED_XML_NAME" and "declaration" in text:
        rule, vi = "bytes-before-declaration", "Khai báo XML phải đứng đầu nội dung"
    elif type_name == "ERR_INVALID_CHAR":
        rule, vi = "invalid-char", f"Ký tự không hợp lệ trong XML: {text}"
    return FieldError(path="/", rule=rule, message_en=text, message_vi=vi, line=line or None, column=column or None)
