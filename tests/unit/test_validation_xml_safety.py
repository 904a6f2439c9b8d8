"""Hostile and broken XML bodies: refused with 400 (or 415), quickly, naming the rule and the place, and never
echoing anything an entity could have pulled in."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from docbus.errors import FieldError, NotWellFormed, UnsupportedMediaType, ValidationFailed
from docbus.schemas import SchemaRegistry
from docbus.validation import MessageValidator, XmlLimits

Refusal = Callable[..., list[FieldError]]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"

XXE_FILE = f"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<edXML xmlns="{NS}"><x>&xxe;</x></edXML>"""

XXE_NETWORK = f"""<?xml version="1.0"?>
<!DOCTYPE edXML [<!ENTITY xxe SYSTEM "http://127.0.0.1:9/secret">]>
<edXML xmlns="{NS}"><x>&xxe;</x></edXML>"""

PARAMETER_ENTITY = f"""<?xml version="1.0"?>
<!DOCTYPE edXML [
  <!ENTITY % file SYSTEM "file:///etc/passwd">
  <!ENTITY % eval "<!ENTITY &#x25; leak SYSTEM 'http://127.0.0.1:9/?%file;'>">
  %eval; %leak;
]>
<edXML xmlns="{NS}"/>"""

BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + "".join(f'<!ENTITY lol{i} "{("&lol" + (str(i - 1) if i > 1 else "") + ";") * 10}">\n' for i in range(1, 10))
    + f']>\n<edXML xmlns="{NS}">&lol9;</edXML>'
)

ENTITY_FILE_CONTENT_MARKERS = ("root:", "/bin/", "daemon")


def _text_of(errors: list[FieldError]) -> str:
    return " ".join(f"{e.path} {e.rule} {e.message_en} {e.message_vi} {e.expected}" for e in errors)


@pytest.mark.parametrize(
    ("name", "body", "line"),
    [
        ("xxe-file", XXE_FILE, 2),
        ("xxe-network", XXE_NETWORK, 2),
        ("parameter-entities", PARAMETER_ENTITY, 2),
        ("billion-laughs", BILLION_LAUGHS, 2),
    ],
)
def test_any_doctype_is_refused_before_parsing(refused: Refusal, name: str, body: str, line: int) -> None:
    started = time.perf_counter()
    errors = refused(NotWellFormed, body)
    elapsed = time.perf_counter() - started
    assert elapsed < 0.1, name
    assert [(e.rule, e.line, e.column) for e in errors] == [("dtd-forbidden", line, 1)]
    assert errors[0].message_vi == "Không được khai báo DOCTYPE (DTD, thực thể)"
    text = _text_of(errors)
    assert not any(marker in text for marker in ENTITY_FILE_CONTENT_MARKERS)


def test_billion_laughs_is_refused_in_well_under_100_ms(validator: MessageValidator) -> None:
    body = BILLION_LAUGHS.encode()
    runs = []
    for _ in range(20):
        started = time.perf_counter()
        with pytest.raises(NotWellFormed):
            validator.validate(body, "application/xml")
        runs.append(time.perf_counter() - started)
    assert min(runs) < 0.001  # it is refused on sight: far under a millisecond
    assert max(runs) < 0.1


def test_doctype_after_comments_and_processing_instructions_is_found(refused: Refusal) -> None:
    body = (
        f'<?xml version="1.0"?>\n<!-- a comment -->\n<?pi data?>\n<!DOCTYPE x [<!ENTITY a "b">]><edXML xmlns="{NS}"/>'
    )
    errors = refused(NotWellFormed, body)
    assert [(e.rule, e.line, e.column) for e in errors] == [("dtd-forbidden", 4, 1)]


def test_the_word_doctype_inside_a_comment_is_harmless(refused: Refusal) -> None:
    body = f'<?xml version="1.0"?>\n<!-- <!DOCTYPE x> -->\n<edXML xmlns="{NS}"/>'
    errors = refused(ValidationFailed, body)  # it parses; the schema then complains about the empty edXML
    assert errors[0].rule == "required"


def test_entity_references_without_a_dtd_are_refused(refused: Refusal) -> None:
    errors = refused(NotWellFormed, f'<edXML xmlns="{NS}">\n  <x>&xxe;</x>\n</edXML>')
    assert [(e.rule, e.line) for e in errors] == [("undefined-entity", 2)]
    assert errors[0].message_vi.startswith("Thực thể xxe không được phép")


def test_predefined_and_character_entities_are_fine(validator: MessageValidator, edoc_text: str) -> None:
    body = edoc_text.replace("V/v kết nối", "V/v &lt;kết&gt; &amp; n&#7889;i")
    assert validator.validate(body.encode(), "application/xml").facts["subject"].startswith("V/v <kết> & nối")


def test_ten_thousand_levels_are_refused_fast(refused: Refusal) -> None:
    body = '<?xml version="1.0"?>\n' + "<a>" * 10_000 + "</a>" * 10_000
    started = time.perf_counter()
    errors = refused(NotWellFormed, body)
    assert time.perf_counter() - started < 0.1
    assert errors[0].rule == "max-depth"
    assert errors[0].line == 2


def test_depth_over_the_configured_limit_is_refused(
    refused: Refusal, validator: MessageValidator, registry: SchemaRegistry
) -> None:
    body = f'<edXML xmlns="{NS}">\n' + "<a>" * 64 + "\n" + "</a>" * 64 + "</edXML>"  # 65 levels
    errors = refused(NotWellFormed, body)
    assert [(e.rule, e.line, e.expected) for e in errors] == [("max-depth", 2, "at most 64 levels")]
    assert errors[0].message_vi == "Các phần tử lồng nhau quá 64 cấp"
    # 64 levels are fine as far as safety goes (the schema then refuses the unknown element).
    ok = f'<edXML xmlns="{NS}">' + "<a>" * 63 + "</a>" * 63 + "</edXML>"
    assert refused(ValidationFailed, ok)[0].rule == "unexpected-element"
    shallow = MessageValidator(registry, XmlLimits(max_depth=8))
    assert refused(NotWellFormed, ok, using=shallow)[0].rule == "max-depth"


def test_text_node_over_the_limit_is_refused(
    refused: Refusal, validator: MessageValidator, registry: SchemaRegistry, edoc_text: str
) -> None:
    small = MessageValidator(registry, XmlLimits(max_text_chars=1000))
    body = edoc_text.replace("JVBERi0xLjQK\nJSVFT0YK", "QUJD" * 300)  # 1,200 characters of base64
    errors = refused(NotWellFormed, body, using=small)
    assert [(e.rule, e.expected) for e in errors] == [("text-too-large", "at most 1000 characters")]
    assert errors[0].line == edoc_text.count("\n", 0, edoc_text.index("<ContentTransferEncoded>")) + 1
    # Attribute values count too.
    attribute = edoc_text.replace('Manifest version="1.0"', f'Manifest version="{"1" * 1001}"')
    assert refused(NotWellFormed, attribute, using=small)[0].rule == "text-too-large"
    # The same packet passes the default limit.
    assert validator.validate(body.encode(), "application/xml").sender == "000.00.00.G22"


def test_text_node_over_libxml2_ceiling_is_refused(refused: Refusal) -> None:
    body = b"<edXML>" + b"x" * 10_000_001 + b"</edXML>"
    errors = refused(NotWellFormed, body)
    assert errors[0].rule == "text-too-large"


def test_invalid_utf8_names_the_place(refused: Refusal) -> None:
    body = f'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="{NS}">\n  <x>ok \xff bad</x>\n</edXML>'
    errors = refused(NotWellFormed, body.encode("latin-1"))
    assert [(e.rule, e.line) for e in errors] == [("invalid-utf8", 3)]
    assert errors[0].message_vi == "Nội dung có chuỗi byte không phải UTF-8 hợp lệ"


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [
        (b'\n<?xml version="1.0"?><edXML/>', 1, 1),
        (b'   <?xml version="1.0"?><edXML/>', 1, 1),
        (b'junk<?xml version="1.0"?><edXML/>', 1, 1),
        (b'\xef\xbb\xbf \n<?xml version="1.0"?><edXML/>', 1, 1),
    ],
)
def test_bytes_before_the_declaration_are_refused(refused: Refusal, body: bytes, line: int, column: int) -> None:
    errors = refused(NotWellFormed, body)
    assert [(e.rule, e.line, e.column) for e in errors] == [("bytes-before-declaration", line, column)]
    assert "khai báo XML" in errors[0].message_vi


def test_the_declaration_position_is_named(refused: Refusal) -> None:
    errors = refused(NotWellFormed, b'\n\n  <?xml version="1.0"?><edXML/>')
    assert "found at line 3, column 3" in errors[0].message_en
    assert "(ở dòng 3, cột 3)" in errors[0].message_vi


def test_utf8_byte_order_mark_is_accepted_unless_configured(
    refused: Refusal, validator: MessageValidator, registry: SchemaRegistry, edoc_text: str
) -> None:
    body = b"\xef\xbb\xbf" + edoc_text.encode()
    assert validator.validate(body, "application/xml").sender == "000.00.00.G22"
    strict = MessageValidator(registry, XmlLimits(accept_utf8_bom=False))
    errors = refused(NotWellFormed, body, using=strict)
    assert [(e.rule, e.line, e.column) for e in errors] == [("bytes-before-declaration", 1, 1)]


@pytest.mark.parametrize(
    "body",
    [
        "\ufeff<edXML/>".encode("utf-16-le"),
        "\ufeff<edXML/>".encode("utf-16-be"),
        "<edXML/>".encode("utf-16-le"),
        b'<?xml version="1.0" encoding="ISO-8859-1"?><edXML/>',
        b'<?xml version="1.0" encoding="windows-1258"?><edXML/>',
    ],
)
def test_encodings_other_than_utf8_are_refused(refused: Refusal, body: bytes) -> None:
    errors = refused(NotWellFormed, body)
    assert [(e.rule, e.expected) for e in errors] == [("encoding-unsupported", "UTF-8")]


@pytest.mark.parametrize("body", [b"", b"   \r\n\t"])
def test_empty_body_is_refused(refused: Refusal, body: bytes) -> None:
    errors = refused(NotWellFormed, body)
    assert [(e.rule, e.message_vi) for e in errors] == [("empty-body", "Nội dung thông điệp trống")]


def test_truncated_body_names_the_unclosed_element(refused: Refusal) -> None:
    errors = refused(NotWellFormed, f'<?xml version="1.0"?>\n<edXML xmlns="{NS}">\n<edXMLEnvelope>')
    assert errors[0].rule == "not-well-formed"
    assert errors[0].line == 3
    assert "edXMLEnvelope" in errors[0].message_vi


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/octet-stream", "multipart/form-data; boundary=x", "", "application/xhtml+xml"],
)
def test_wrong_content_type_is_415(refused: Refusal, edoc_text: str, content_type: str) -> None:
    errors = refused(UnsupportedMediaType, edoc_text, content_type)
    assert errors[0].rule == "media-type"
    assert errors[0].expected == "application/edxml+xml, application/json, application/xml, text/xml"


@pytest.mark.parametrize(
    "content_type",
    [
        "application/xml",
        "text/xml",
        "application/edxml+xml",
        "Application/XML; charset=utf-8",
        'text/xml;charset="UTF-8"',
    ],
)
def test_xml_content_types_with_charset_parameters_are_accepted(
    validator: MessageValidator, edoc_text: str, content_type: str
) -> None:
    assert validator.validate(edoc_text.encode(), content_type).business_id.startswith("000.00.00.G22,")


def test_a_charset_other_than_utf8_is_415(refused: Refusal, edoc_text: str) -> None:
    errors = refused(UnsupportedMediaType, edoc_text, "application/xml; charset=iso-8859-1")
    assert [(e.rule, e.expected) for e in errors] == [("charset", "utf-8")]


def test_limits_are_checked_when_built() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        XmlLimits(max_depth=300)
    with pytest.raises(ValueError, match="max_text_chars"):
        XmlLimits(max_text_chars=20_000_000)
