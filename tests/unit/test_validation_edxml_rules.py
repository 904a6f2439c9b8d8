"""edXML schema and header rules on small hand-written packets: each refusal names the rule, the element's
XPath and its line, in English and Vietnamese; several problems are reported together."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from docbus.envelope import MessageKind
from docbus.errors import FieldError, ValidationFailed
from docbus.schemas import SchemaRegistry
from docbus.validation import MessageValidator, ValidationPolicy

Refusal = Callable[..., list[FieldError]]
LineIn = Callable[..., int]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
HEADER = "/edXML/edXMLEnvelope/edXMLHeader/MessageHeader"


def _element(text: str, name: str) -> str:
    """The first ``<edXML:name>...</edXML:name>`` block (with its leading indentation and newline)."""
    match = re.search(rf"\n *<edXML:{name}>.*?</edXML:{name}>", text, re.S)
    assert match is not None, name
    return match.group(0)


def _without(text: str, name: str) -> str:
    return text.replace(_element(text, name), "", 1)


def test_the_hand_written_packets_are_valid(validator: MessageValidator, edoc_text: str, status_text: str) -> None:
    document = validator.validate(edoc_text.encode(), "application/xml")
    assert document.kind is MessageKind.EDOC
    assert document.receivers == ("000.00.00.H41", "000.00.00.H14")
    assert document.facts["priority"] == "1"
    assert document.facts["code"] == "123/VPCP-TTĐT"
    receipt = validator.validate(status_text.encode(), "application/xml")
    assert receipt.kind is MessageKind.STATUS
    assert (receipt.sender, receipt.receivers, receipt.status_code) == ("000.00.00.H41", ("000.00.00.G22",), "03")
    assert receipt.business_id == "000.00.00.G22,2024/03/15,123/VPCP-TTĐT:03:2024/03/15 09:00:00"


def test_message_header_children_may_come_in_any_order(validator: MessageValidator, edoc_text: str) -> None:
    names = "|".join(["From", "To", "DocumentId", "Code", "PromulgationInfo", "DocumentType", "Subject"])
    names += "|SignerInfo|OtherInfo"
    blocks = re.findall(rf"\n *<edXML:(?:{names})>.*?</edXML:(?:{names})>", edoc_text, re.S)
    header = _element(edoc_text, "MessageHeader")
    shuffled_header = header
    for block in blocks:
        shuffled_header = shuffled_header.replace(block, "", 1)
    reordered = list(reversed(blocks))  # Subject first, From after the receivers, ...
    shuffled_header = shuffled_header.replace("<edXML:MessageHeader>", "<edXML:MessageHeader>" + "".join(reordered))
    body = edoc_text.replace(header, shuffled_header)
    assert body.index("<edXML:OtherInfo>") < body.index("<edXML:From>")
    message = validator.validate(body.encode(), "application/xml")
    # Receivers stay in document order (now H14 before H41).
    assert (message.sender, message.receivers) == ("000.00.00.G22", ("000.00.00.H14", "000.00.00.H41"))


def test_missing_organ_id_in_the_second_receiver(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace("<edXML:OrganId>000.00.00.H14</edXML:OrganId>", "<edXML:OrganName>UBND</edXML:OrganName>")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/To[2]/OrganId", "required", line_in(body, "<edXML:To>", 2))
    ]
    assert errors[0].message_en == "Missing required element OrganId in To"
    assert errors[0].message_vi == "Thiếu phần tử bắt buộc OrganId trong To"
    assert errors[0].expected == "OrganId"


@pytest.mark.parametrize("name", ["DocumentId", "Subject", "Code", "From", "SignerInfo"])
def test_missing_required_header_element(refused: Refusal, edoc_text: str, line_in: LineIn, name: str) -> None:
    body = _without(edoc_text, name)
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/{name}", "required", line_in(body, "<edXML:MessageHeader>"))
    ]
    assert errors[0].message_vi == f"Thiếu phần tử bắt buộc {name} trong MessageHeader"


def test_a_document_needs_a_receiver(refused: Refusal, edoc_text: str) -> None:
    body = _without(_without(edoc_text, "To"), "To")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/To", "required")]
    assert errors[0].message_vi == "Cần ít nhất một nơi nhận (phần tử To)"


def test_a_singleton_given_twice(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    subject = _element(edoc_text, "Subject")
    body = edoc_text.replace(subject, subject + subject.replace("V/v", "Lặp lại"))
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/Subject[2]", "max-occurs", line_in(body, "<edXML:Subject>", 2))
    ]


def test_status_elements_do_not_belong_in_a_document(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace(
        "</edXML:MessageHeader>", "  <edXML:StatusCode>01</edXML:StatusCode>\n</edXML:MessageHeader>"
    )
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/StatusCode", "unexpected-element", line_in(body, "<edXML:StatusCode>"))
    ]


def test_unknown_edxml_element_in_the_header(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace("<edXML:Subject>", "<edXML:Subjekt>x</edXML:Subjekt>\n<edXML:Subject>")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/Subjekt", "unexpected-element", line_in(body, "<edXML:Subjekt>"))
    ]
    assert errors[0].message_vi.startswith("Phần tử Subjekt không được phép ở vị trí này")


def test_extensions_in_other_namespaces_are_carried(validator: MessageValidator, edoc_text: str) -> None:
    body = edoc_text.replace(
        "<edXML:Subject>", '<x:Extra xmlns:x="urn:example:extension"><x:Any>1</x:Any></x:Extra>\n<edXML:Subject>'
    )
    body = body.replace(
        "</edXML:edXMLHeader>",
        '<Signature xmlns="http://www.w3.org/2000/09/xmldsig#"><SignedInfo/></Signature>\n'
        "<edXML:DigitalSignature/>\n</edXML:edXMLHeader>",
    )
    assert validator.validate(body.encode(), "application/xml").sender == "000.00.00.G22"


def test_subject_longer_than_500_characters(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = re.sub(r"<edXML:Subject>[^<]*<", "<edXML:Subject>" + "ă" * 501 + "<", edoc_text)
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line, e.expected) for e in errors] == [
        (f"{HEADER}/Subject", "max-length", line_in(body, "<edXML:Subject>"), "at most 500 characters")
    ]
    assert errors[0].message_en == "Subject has 501 characters; at most 500 are allowed"
    assert errors[0].message_vi == "Subject dài 501 ký tự, vượt quá giới hạn 500 ký tự"


def test_exactly_500_characters_are_fine(validator: MessageValidator, edoc_text: str) -> None:
    body = re.sub(r"<edXML:Subject>[^<]*<", "<edXML:Subject>" + "ă" * 500 + "<", edoc_text)
    assert validator.validate(body.encode(), "application/xml").facts["subject"] == "ă" * 500


@pytest.mark.parametrize(
    ("old", "new", "path", "rule", "expected"),
    [
        ("<edXML:CodeNumber>123<", "<edXML:CodeNumber>123456789012<", "Code/CodeNumber", "max-length", None),
        ("<edXML:CodeNumber>123<", "<edXML:CodeNumber><", "Code/CodeNumber", "min-length", None),
        (">2024/03/15<", ">15-03-2024<", "PromulgationInfo/PromulgationDate", "pattern", "yyyy/MM/dd"),
        ("<edXML:Priority>1<", "<edXML:Priority>7<", "OtherInfo/Priority", "range", "at most 4"),
        ("<edXML:Type>1<", "<edXML:Type>một<", "DocumentType/Type", "type", "an integer"),
    ],
)  # fmt: skip
def test_field_types_and_lengths(
    refused: Refusal, edoc_text: str, old: str, new: str, path: str, rule: str, expected: str | None
) -> None:
    errors = refused(ValidationFailed, edoc_text.replace(old, new))
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/{path}", rule)]
    if expected is not None:
        assert errors[0].expected == expected
    assert errors[0].line is not None


def test_bad_trace_timestamp_is_named(refused: Refusal, edoc_text: str) -> None:
    errors = refused(ValidationFailed, edoc_text.replace("2024/03/15 08:30:00", "2024-03-15T08:30:00"))
    assert [(e.path, e.rule, e.expected) for e in errors] == [
        (
            "/edXML/edXMLEnvelope/edXMLHeader/TraceHeaderList/TraceHeader/Timestamp",
            "pattern",
            "yyyy/MM/dd HH:mm:ss",
        )
    ]


def test_duplicate_receiver_names_the_second(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace("000.00.00.H14", "000.00.00.H41")
    errors = refused(ValidationFailed, body)
    second = line_in(body, "000.00.00.H41", 2)
    assert [(e.path, e.rule, e.line) for e in errors] == [(f"{HEADER}/To[2]/OrganId", "duplicate-receiver", second)]
    first_line = line_in(body, "000.00.00.H41")
    assert errors[0].message_en == (
        f"Receiver 000.00.00.H41 is listed twice; first at {HEADER}/To[1]/OrganId (line {first_line})"
    )
    assert errors[0].message_vi.startswith("Nơi nhận 000.00.00.H41 bị trùng")


def test_duplicate_receiver_in_another_spelling(refused: Refusal, edoc_text: str) -> None:
    body = edoc_text.replace("000.00.00.H41", "000.28.22.H17").replace("000.00.00.H14", "28.22.H17")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/To[2]/OrganId", "duplicate-receiver")]


@pytest.mark.parametrize("bad", ["vxp.saas.03", "000.00.00.h41", "H41.", "000.00.00.H4", "00.00.00.H41", ""])
def test_bad_receiver_ids_are_named(refused: Refusal, edoc_text: str, line_in: LineIn, bad: str) -> None:
    body = edoc_text.replace("<edXML:OrganId>000.00.00.H14<", f"<edXML:OrganId>{bad}<")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/To[2]/OrganId", "organ-id", line_in(body, "<edXML:To>", 2) + 1)
    ]
    if bad:
        assert f"'{bad}'" in errors[0].message_en
        assert errors[0].message_vi == f"Mã định danh cơ quan nhận '{bad}' không hợp lệ"
    else:
        assert errors[0].message_vi == "Mã định danh cơ quan nhận bị để trống"
    assert errors[0].expected is not None and "000.00.00.H41" in errors[0].expected


def test_bad_sender_id(refused: Refusal, edoc_text: str) -> None:
    sender = "<edXML:OrganId>000.00.00.G22</edXML:OrganId>\n          <edXML:OrganName>"
    body = edoc_text.replace(sender, sender.replace("000.00.00.G22", "vxp.saas.03"))
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/From/OrganId", "organ-id")]
    assert "'vxp.saas.03' is not a valid sender agency id" in errors[0].message_en


def test_both_id_forms_are_accepted(validator: MessageValidator, edoc_text: str) -> None:
    body = edoc_text.replace("000.00.00.H41", "H37.02.02").replace("000.00.00.H14", "001.02.03.H37")
    assert validator.validate(body.encode(), "application/xml").receivers == ("H37.02.02", "001.02.03.H37")


def test_manifest_reference_without_attachment(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace("<ContentId>1</ContentId>", "<ContentId>2</ContentId>")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (
            "/edXML/edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId",
            "attachment-missing",
            line_in(body, "<edXML:ContentId>"),
        )
    ]
    assert errors[0].message_vi == "Không có tệp đính kèm với ContentId cid:1"


def test_attachment_content_must_be_base64(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = edoc_text.replace("JVBERi0xLjQK", "${__StringFromFile(test.txt,,,)}")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (
            "/edXML/AttachmentEncoded/Attachment/ContentTransferEncoded",
            "base64",
            line_in(body, "<ContentTransferEncoded>"),
        )
    ]


def test_attachment_checks_can_be_turned_off(refused: Refusal, registry: SchemaRegistry, edoc_text: str) -> None:
    lenient = MessageValidator(registry, policy=ValidationPolicy(check_attachments=False))
    body = edoc_text.replace("<ContentId>1</ContentId>", "<ContentId>2</ContentId>")
    assert lenient.validate(body.encode(), "application/xml").sender == "000.00.00.G22"


def test_wrong_root_is_named(refused: Refusal) -> None:
    errors = refused(ValidationFailed, '<?xml version="1.0"?>\n<Document xmlns="urn:other"><x/></Document>')
    assert [(e.path, e.rule, e.line, e.expected) for e in errors] == [("/Document", "root", 2, f"{{{NS}}}edXML")]
    assert (
        errors[0].message_en
        == f"Unknown root element Document in namespace urn:other; expected edXML in namespace {NS}"
    )
    assert errors[0].message_vi.startswith("Phần tử gốc Document không được hỗ trợ")


def test_edxml_root_without_its_namespace(refused: Refusal) -> None:
    errors = refused(ValidationFailed, "<edXML><edXMLEnvelope/></edXML>")
    assert [(e.rule, e.path) for e in errors] == [("root", "/edXML")]
    assert "without a namespace" in errors[0].message_en


def test_many_problems_are_reported_together(refused: Refusal, edoc_text: str, line_in: LineIn) -> None:
    body = (
        edoc_text.replace("000.00.00.H14", "vxp.saas.03")
        .replace("<edXML:CodeNumber>123<", "<edXML:CodeNumber>123456789012<")
        .replace(_element(edoc_text, "SignerInfo"), "")
        .replace(re.search(r"<edXML:Subject>[^<]*<", edoc_text).group(0), "<edXML:Subject>" + "x" * 600 + "<")  # type: ignore[union-attr]
        .replace("<ContentId>1</ContentId>", "<ContentId>9</ContentId>")
    )
    errors = refused(ValidationFailed, body)
    found = {(e.rule, e.path) for e in errors}
    assert found == {
        ("organ-id", f"{HEADER}/To[2]/OrganId"),
        ("max-length", f"{HEADER}/Code/CodeNumber"),
        ("max-length", f"{HEADER}/Subject"),
        ("required", f"{HEADER}/SignerInfo"),
        ("attachment-missing", "/edXML/edXMLEnvelope/edXMLBody/edXMLManifest/Reference/ContentId"),
    }
    assert [e.line for e in errors] == sorted(e.line or 0 for e in errors)
    assert all(e.message_en and e.message_vi and e.message_vi != e.message_en for e in errors)


# ------------------------------------------------------------------------------------------------ receipts


def test_status_code_must_be_known(refused: Refusal, status_text: str, line_in: LineIn) -> None:
    body = status_text.replace("<StatusCode>03<", "<StatusCode>07<")
    errors = refused(ValidationFailed, body)
    expected = "01, 02, 03, 04, 05, 06, 13, 14, 15, 16"
    assert [(e.path, e.rule, e.line, e.expected) for e in errors] == [
        (f"{HEADER}/StatusCode", "status-code", line_in(body, "<StatusCode>"), expected)
    ]
    assert errors[0].message_vi == f"Mã trạng thái 07 không hợp lệ; các mã được phép: {expected}"


def test_status_code_must_be_two_digits(refused: Refusal, status_text: str) -> None:
    errors = refused(ValidationFailed, status_text.replace("<StatusCode>03<", "<StatusCode>3<"))
    assert [(e.path, e.rule, e.expected) for e in errors] == [(f"{HEADER}/StatusCode", "pattern", "two digits")]


def test_status_code_14_is_read_as_15(validator: MessageValidator, status_text: str) -> None:
    message = validator.validate(status_text.replace("<StatusCode>03<", "<StatusCode>14<").encode(), "text/xml")
    assert message.status_code == "15"
    assert message.facts["status_code_sent"] == "14"
    assert message.business_id.endswith(":15:2024/03/15 09:00:00")


def test_status_code_aliases_are_configurable(refused: Refusal, registry: SchemaRegistry, status_text: str) -> None:
    strict = MessageValidator(registry, policy=ValidationPolicy(status_code_aliases={}))
    errors = refused(ValidationFailed, status_text.replace("<StatusCode>03<", "<StatusCode>14<"), using=strict)
    assert [e.rule for e in errors] == ["status-code"]
    with pytest.raises(ValueError, match="unknown codes"):
        ValidationPolicy(status_code_aliases={"14": "99"})


@pytest.mark.parametrize(
    ("name", "element"),
    [
        ("DocumentId", "<DocumentId>000.00.00.G22,2024/03/15,123/VPCP-TTĐT</DocumentId>"),
        ("OrganId", "<OrganId>000.00.00.G22</OrganId>"),
    ],
)
def test_receipt_must_say_what_it_answers(
    refused: Refusal, status_text: str, line_in: LineIn, name: str, element: str
) -> None:
    body = status_text.replace(element, "")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/ResponseFor/{name}", "required", line_in(body, "<ResponseFor>"))
    ]


def test_receipt_receiver_must_be_an_organ_id(refused: Refusal, status_text: str) -> None:
    body = status_text.replace("<OrganId>000.00.00.G22</OrganId>", "<OrganId>vxp.saas.03</OrganId>")
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/ResponseFor/OrganId", "organ-id")]


@pytest.mark.parametrize("name", ["StatusCode", "Timestamp", "From"])
def test_receipt_required_elements(refused: Refusal, status_text: str, name: str) -> None:
    body = re.sub(rf"\n *<{name}>(?:.|\n)*?</{name}>", "", status_text, count=1)
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [(f"{HEADER}/{name}", "required")]


def test_receipt_with_attachments_is_refused(refused: Refusal, status_text: str) -> None:
    body = status_text.replace(
        "</edXMLEnvelope>",
        "</edXMLEnvelope>\n  <AttachmentEncoded><Attachment><ContentId>1</ContentId>"
        "<ContentTransferEncoded>QQ==</ContentTransferEncoded></Attachment></AttachmentEncoded>",
    )
    errors = refused(ValidationFailed, body)
    assert [(e.path, e.rule) for e in errors] == [("/edXML/AttachmentEncoded", "unexpected-element")]


def test_header_without_document_elements_and_without_body_is_a_receipt(refused: Refusal, status_text: str) -> None:
    """No StatusCode, no body: read as a receipt that lacks its code, not as a document lacking everything."""
    body = re.sub(r"\n *<StatusCode>03</StatusCode>", "", status_text)
    errors = refused(ValidationFailed, body)
    assert [e.rule for e in errors] == ["required"]


def test_large_attachments_are_checked_at_both_ends(
    refused: Refusal, validator: MessageValidator, registry: SchemaRegistry, edoc_text: str
) -> None:
    content = "QUJD" * 10_000  # 40,000 characters, more than the default 16,384 looked at
    middle = content[:20_000] + "!" + content[20_001:]
    assert validator.validate(edoc_text.replace("JVBERi0xLjQK", middle).encode(), "text/xml").sender
    thorough = MessageValidator(registry, policy=ValidationPolicy(base64_check_chars=None))
    assert [e.rule for e in refused(ValidationFailed, edoc_text.replace("JVBERi0xLjQK", middle), using=thorough)] == [
        "base64"
    ]
    tail = content[:-3] + "!=="
    assert [e.rule for e in refused(ValidationFailed, edoc_text.replace("JVBERi0xLjQK", tail))] == ["base64"]


def _with_receivers(edoc_text: str, count: int) -> str:
    """The document addressed to ``count`` distinct receivers (000.00.00.H41, 000.00.01.H41, ...)."""
    start = edoc_text.index("<edXML:To>")
    end = edoc_text.rindex("</edXML:To>") + len("</edXML:To>")
    ids = [f"{i // 10_000:03d}.{i // 100 % 100:02d}.{i % 100:02d}.H41" for i in range(count)]
    tos = "".join(f"<edXML:To><edXML:OrganId>{organ}</edXML:OrganId></edXML:To>\n" for organ in ids)
    return edoc_text[:start] + tos + edoc_text[end:]


def test_receivers_up_to_the_cap_are_taken(edoc_text: str, registry: SchemaRegistry) -> None:
    capped = MessageValidator(registry, policy=ValidationPolicy(max_receivers=50))
    message = capped.validate(_with_receivers(edoc_text, 50).encode(), "application/xml")
    assert len(message.receivers) == 50
    assert len(set(message.receivers)) == 50


def test_one_receiver_past_the_cap_is_refused_where_it_stands(
    edoc_text: str, registry: SchemaRegistry, refused: Refusal, line_in: LineIn
) -> None:
    capped = MessageValidator(registry, policy=ValidationPolicy(max_receivers=50))
    body = _with_receivers(edoc_text, 20_000)
    errors = refused(ValidationFailed, body, using=capped)
    assert [(e.path, e.rule, e.line) for e in errors] == [
        (f"{HEADER}/To[51]/OrganId", "too-many-receivers", line_in(body, "<edXML:To>", 51))
    ]
    assert errors[0].message_en == "The message names 20000 receivers; at most 50 are accepted"
    assert errors[0].expected == "at most 50 receivers"


def test_the_default_cap_is_a_thousand_receivers(edoc_text: str, validator: MessageValidator) -> None:
    assert len(validator.validate(_with_receivers(edoc_text, 1_000).encode(), "application/xml").receivers) == 1_000
    with pytest.raises(ValidationFailed):
        validator.validate(_with_receivers(edoc_text, 1_001).encode(), "application/xml")
    with pytest.raises(ValueError, match="max_receivers"):
        ValidationPolicy(max_receivers=0)
