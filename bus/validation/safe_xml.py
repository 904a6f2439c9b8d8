"""Parsing untrusted XML: no DTD, no entities, no network, bounded depth and text.

A body is refused (``NotWellFormed``, 400) before libxml2 sees it when it is empty, is not UTF-8 (UTF-16/32 byte
order marks or NUL bytes, or another declared encoding), has anything before its XML declaration, or has a
``<!DOCTYPE``: the prolog is scanned on the raw bytes, so external entities (XXE), parameter entities and
entity-expansion bombs ("billion laughs") are refused without expanding or fetching anything. The parser itself
runs with ``resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False`` as a second line.

libxml2 refuses on its own anything deeper than 256 levels or any text node over 10,000,000 bytes; tighter
limits come from :class:`XmlLimits`. Depth is checked with one compiled XPath probe (C speed, no Python walk);
text size is checked in Python only when the body is larger than the limit, since no text node can be larger
than the body that holds it.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass

from lxml import etree

from docbus.errors import FieldError, NotWellFormed
from docbus.validation.paths import line_of
from docbus.validation.xml_syntax_errors import LIBXML2_MAX_DEPTH, LIBXML2_MAX_TEXT, not_well_formed

_UTF8_BOM = b"\xef\xbb\xbf"
_WHITESPACE = b" \t\r\n"
_XML_DECL = re.compile(rb"<\?xml[ \t\r\n]")
_ENCODING = re.compile(rb"""encoding[ \t\r\n]*=[ \t\r\n]*["']([A-Za-z0-9._-]*)["']""")
_UTF8_NAMES = frozenset({b"utf-8", b"utf8"})


@dataclass(frozen=True, slots=True)
class XmlLimits:
    """Limits applied to every XML body.

    ``max_depth`` counts the root as depth 1. ``max_text_chars`` bounds each text node and attribute value
    (libxml2's own ceiling is 10,000,000 bytes, so that is also the highest value allowed here).
    ``accept_utf8_bom``: XML 1.0 allows a UTF-8 byte order mark before the declaration and some Windows
    senders emit one; set it to ``False`` to refuse it like any other byte before the declaration.
    ``max_errors`` caps how many complaints one answer lists.
    """

    max_depth: int = 64
    max_text_chars: int = LIBXML2_MAX_TEXT
    accept_utf8_bom: bool = True
    max_errors: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth < LIBXML2_MAX_DEPTH:
            raise ValueError(f"max_depth must be between 1 and {LIBXML2_MAX_DEPTH - 1}")
        if not 1 <= self.max_text_chars <= LIBXML2_MAX_TEXT:
            raise ValueError(f"max_text_chars must be between 1 and {LIBXML2_MAX_TEXT}")
        if self.max_errors < 1:
            raise ValueError("max_errors must be at least 1")


def position(body: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters, a leading byte order mark not counted) of a byte offset."""
    line = body.count(b"\n", 0, offset) + 1
    line_start = body.rfind(b"\n", 0, offset) + 1
    if line_start == 0 and body.startswith(_UTF8_BOM) and offset >= len(_UTF8_BOM):
        line_start = len(_UTF8_BOM)
    column = len(body[line_start:offset].decode("utf-8", "replace")) + 1
    return line, column


def _refuse(body: bytes, offset: int, rule: str, en: str, vi: str, expected: str | None = None) -> NotWellFormed:
    line, column = position(body, offset)
    error = FieldError(path="/", rule=rule, message_en=en, message_vi=vi, line=line, column=column, expected=expected)
    return NotWellFormed(f"{en} (line {line}, column {column})", [error])


class SafeXmlParser:
    """Parses bodies into lxml trees under :class:`XmlLimits`; one instance serves every thread."""

    def __init__(self, limits: XmlLimits) -> None:
        self.limits = limits
        self._local = threading.local()
        self._probe_path = "/*" * (limits.max_depth + 1)

    def _tools(self) -> tuple[etree.XMLParser, etree.XPath]:
        tools: tuple[etree.XMLParser, etree.XPath] | None = getattr(self._local, "tools", None)
        if tools is None:
            parser = etree.XMLParser(
                encoding="utf-8",
                resolve_entities=False,
                no_network=True,
                load_dtd=False,
                dtd_validation=False,
                attribute_defaults=False,
                huge_tree=False,
                collect_ids=False,
            )
            tools = self._local.tools = (parser, etree.XPath(f"boolean({self._probe_path})"))
        return tools

    def parse(self, body: bytes) -> etree._ElementTree:
        """The parsed document, or :class:`NotWellFormed` listing what is wrong and where."""
        start = self._check_prolog(body)
        parser, too_deep = self._tools()
        try:
            root = etree.fromstring(body, parser)
        except etree.XMLSyntaxError as exc:
            raise not_well_formed(exc, parser.error_log, self.limits.max_errors) from None
        tree = root.getroottree()
        if tree.docinfo.internalDTD is not None:  # unreachable after the prolog scan; kept as a second line
            raise _refuse(body, start, "dtd-forbidden", "DTDs are not allowed", "Không được dùng DTD")
        if too_deep(tree):
            deepest = tree.xpath(self._probe_path)
            first = deepest[0] if isinstance(deepest, list) and deepest else None
            line = line_of(first) if isinstance(first, etree._Element) else None
            raise self._too_deep(line)
        if len(body) > self.limits.max_text_chars:
            self._check_text_sizes(root)
        return tree

    # ---------------------------------------------------------------------------------------- before parsing

    def _check_prolog(self, body: bytes) -> int:
        """Checks everything before the root element; returns the offset where the XML starts."""
        if not body or body.isspace():
            error = FieldError("/", "empty-body", "The body is empty", "Nội dung thông điệp trống", line=1, column=1)
            raise NotWellFormed("The body is empty", [error])
        if body[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in body[:4]:
            raise _refuse(
                body,
                0,
                "encoding-unsupported",
                "Only UTF-8 is accepted; the body looks like UTF-16 or UTF-32",
                "Chỉ chấp nhận mã hóa UTF-8; nội dung có vẻ được mã hóa UTF-16 hoặc UTF-32",
                expected="UTF-8",
            )
        start = 0
        if body.startswith(_UTF8_BOM):
            if not self.limits.accept_utf8_bom:
                raise _refuse(
                    body,
                    0,
                    "bytes-before-declaration",
                    "A byte order mark precedes the XML declaration",
                    "Có dấu BOM trước khai báo XML",
                    expected="<?xml at the first byte",
                )
            start = 3
        index = start
        end = len(body)
        while index < end:
            while index < end and body[index] in _WHITESPACE:
                index += 1
            if body.startswith(b"<?", index):
                close = body.find(b"?>", index + 2)
                if _XML_DECL.match(body, index):
                    if index != start:
                        raise self._misplaced_declaration(body, start, index)
                    self._check_declared_encoding(body, index, close)
                if close < 0:
                    return start  # unterminated: libxml2 names the place
                index = close + 2
            elif body.startswith(b"<!--", index):
                close = body.find(b"-->", index + 4)
                if close < 0:
                    return start
                index = close + 3
            elif body.startswith(b"<!", index) and body[index + 2 : index + 9].upper() == b"DOCTYPE":
                raise _refuse(
                    body,
                    index,
                    "dtd-forbidden",
                    "DOCTYPE declarations (DTDs, entities) are not allowed",
                    "Không được khai báo DOCTYPE (DTD, thực thể)",
                )
            elif index < end and body[index] != ord("<"):
                declaration = _XML_DECL.search(body, index, index + 1024)
                if declaration is not None:
                    raise self._misplaced_declaration(body, start, declaration.start())
                return start  # text before the root: libxml2 names the place
            else:
                return start  # the root element
        return start

    @staticmethod
    def _misplaced_declaration(body: bytes, start: int, declaration: int) -> NotWellFormed:
        line, column = position(body, declaration)
        stray = declaration - start
        return _refuse(
            body,
            start,
            "bytes-before-declaration",
            f"{stray} byte(s) precede the XML declaration (found at line {line}, column {column}); "
            "it must be the very first thing in the body",
            f"Có {stray} byte trước khai báo XML (ở dòng {line}, cột {column}); khai báo XML phải đứng đầu nội dung",
            expected="<?xml at the first byte",
        )

    @staticmethod
    def _check_declared_encoding(body: bytes, index: int, close: int) -> None:
        declaration = body[index : close if close >= 0 else index + 200]
        match = _ENCODING.search(declaration)
        if match is not None and match[1].lower() not in _UTF8_NAMES:
            name = match[1].decode("ascii")
            raise _refuse(
                body,
                index + match.start(),
                "encoding-unsupported",
                f"Only UTF-8 is accepted, the declaration says {name}",
                f"Chỉ chấp nhận mã hóa UTF-8, khai báo XML ghi {name}",
                expected="UTF-8",
            )

    # ---------------------------------------------------------------------------------------- after parsing

    def _too_deep(self, line: int | None) -> NotWellFormed:
        limit = self.limits.max_depth
        error = FieldError(
            "/",
            "max-depth",
            f"Elements are nested deeper than {limit} levels",
            f"Các phần tử lồng nhau quá {limit} cấp",
            line=line,
            expected=f"at most {limit} levels",
        )
        return NotWellFormed(error.message_en, [error])

    def _check_text_sizes(self, root: etree._Element) -> None:
        limit = self.limits.max_text_chars
        for element in root.iter():
            sizes = [len(element.text or ""), len(element.tail or "")]
            sizes.extend(len(value) for value in element.attrib.values())
            if max(sizes) > limit:
                error = FieldError(
                    "/",
                    "text-too-large",
                    f"A text node or attribute value is longer than {limit} characters",
                    f"Có nội dung văn bản hoặc thuộc tính dài quá {limit} ký tự",
                    line=line_of(element),
                    expected=f"at most {limit} characters",
                )
                raise NotWellFormed(error.message_en, [error])
