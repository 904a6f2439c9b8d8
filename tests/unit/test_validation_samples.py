"""Every real packet from the public SDK sample set: the 15 well-formed ones are accepted with the right
routing facts, and the broken one is refused at the line where it breaks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from docbus.envelope import MessageKind, SchemaRef
from docbus.errors import FieldError, NotWellFormed
from docbus.validation import MessageValidator

Refusal = Callable[..., list[FieldError]]

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
VPCP = "000.00.00.G22"
NGHE_AN = "000.00.00.H41"
THREE_RECEIVERS = ("000.00.00.H41", "000.00.00.H14", "000.00.00.G17")
DOCUMENT_ID = "000.00.00.G22,2015/09/30,7816/VPCP-TTĐT"
EDOC = SchemaRef("qcvn102.edoc", "2016.1")
STATUS = SchemaRef("qcvn102.status", "2016.1")

DOCUMENTS = {
    # file: (sender, receivers, business document type)
    "edoc_new.edxml": ("000.00.00.A80", ("28.22.H17",), "0"),
    "edoc_update.edxml": (VPCP, THREE_RECEIVERS, "2"),
    "edoc_revocation.edxml": (VPCP, THREE_RECEIVERS, "1"),
    "edoc_replacement.edxml": (VPCP, THREE_RECEIVERS, "3"),
    "edoc_with_attachment_dc0bdef0.edxml": (VPCP, THREE_RECEIVERS, "0"),
}

RECEIPTS = {
    # file: (sender, receiver, status code, timestamp)
    "status.edxml": (NGHE_AN, VPCP, "01", "2018/09/28 17:25:11"),
    "status_inbox__01.edxml": (NGHE_AN, VPCP, "01", "2015/09/20 11:08:36"),
    "status_rejection_02.edxml": (NGHE_AN, VPCP, "02", "2015/09/20 11:08:36"),
    "status_acceptance_03.edxml": (NGHE_AN, VPCP, "03", "2015/09/20 11:08:36"),
    "status_assignment_04.edxml": (NGHE_AN, VPCP, "04", "2015/09/20 11:08:36"),
    "status_processing_05.edxml": (NGHE_AN, VPCP, "05", "2015/09/20 11:08:36"),
    "status_finish_06.edxml": (NGHE_AN, VPCP, "06", "2015/09/20 11:08:36"),
    # 13: the original sender asks for the document back, so it is addressed to the recipient.
    "status_cancellation_13.edxml": (VPCP, NGHE_AN, "13", "2015/09/20 11:08:36"),
    "status_change-acceptance_15.edxml": (NGHE_AN, VPCP, "15", "2015/09/20 11:08:36"),
    "status_change-rejection_16.edxml": (NGHE_AN, VPCP, "16", "2015/09/20 11:08:36"),
}


def test_the_sample_set_is_what_these_tests_expect(samples_dir: Path) -> None:
    names = {path.name for path in samples_dir.glob("*.edxml")}
    assert names == {*DOCUMENTS, *RECEIPTS, "edoc.edxml"}


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_sample_documents_are_accepted(validator: MessageValidator, samples_dir: Path, name: str) -> None:
    sender, receivers, business_doc_type = DOCUMENTS[name]
    message = validator.validate((samples_dir / name).read_bytes(), "application/xml")
    assert message.kind is MessageKind.EDOC
    assert message.schema == EDOC
    assert message.sender == sender
    assert message.receivers == receivers
    assert message.business_id == DOCUMENT_ID
    assert message.response_for is None
    assert message.status_code is None
    assert message.facts["subject"] == "V/v kết nối, liên thông phần mềm quản lý văn bản"
    assert message.facts["doc_type"] == "1"
    assert message.facts["doc_type_name"] == "Công văn"
    assert message.facts["business_doc_type"] == business_doc_type


def test_sample_document_facts(validator: MessageValidator, samples_dir: Path) -> None:
    message = validator.validate(
        (samples_dir / "edoc_with_attachment_dc0bdef0.edxml").read_bytes(), "text/xml; charset=UTF-8"
    )
    assert message.facts == {
        "subject": "V/v kết nối, liên thông phần mềm quản lý văn bản",
        "code": "7816/VPCP-TTĐT",
        "doc_type": "1",
        "doc_type_name": "Công văn",
        "promulgation_date": "2019/04/11",
        "due_date": "2019/04/11",
        "priority": "0",
        "steering_type": "1",
        "business_doc_type": "0",
        "business_doc_id": "000.00.00.G22,2014/02/30,7806/VPCP-TTĐT",
    }
    revocation = validator.validate((samples_dir / "edoc_revocation.edxml").read_bytes(), "application/xml")
    assert revocation.facts["response_for"] == "000.00.04.G14,2012/08/06,267/VPCP-TTĐT"


@pytest.mark.parametrize("name", sorted(RECEIPTS))
def test_sample_receipts_are_accepted(validator: MessageValidator, samples_dir: Path, name: str) -> None:
    sender, receiver, code, timestamp = RECEIPTS[name]
    message = validator.validate((samples_dir / name).read_bytes(), "application/xml")
    assert message.kind is MessageKind.STATUS
    assert message.schema == STATUS
    assert message.sender == sender
    assert message.receivers == (receiver,)
    assert message.status_code == code
    assert message.response_for == DOCUMENT_ID
    assert message.business_id == f"{DOCUMENT_ID}:{code}:{timestamp}"
    assert message.facts["timestamp"] == timestamp
    assert message.facts["response_for_code"] == "7816/VPCP-TTĐT"
    assert message.facts["description"]


def test_receipts_for_one_document_have_distinct_business_ids(validator: MessageValidator, samples_dir: Path) -> None:
    """Same document, same moment, different codes: each is its own receipt for de-duplication."""
    ids = {
        validator.validate((samples_dir / name).read_bytes(), "application/xml").business_id
        for name in RECEIPTS
        if name != "status.edxml"
    }
    assert len(ids) == len(RECEIPTS) - 1


def test_the_broken_sample_is_refused_at_its_line(refused: Refusal, samples_dir: Path) -> None:
    # Line 8 opens a second From inside the first; the parser notices at line 74, where MessageHeader closes
    # while From (line 7) is still open.
    errors = refused(NotWellFormed, (samples_dir / "edoc.edxml").read_bytes())
    first = errors[0]
    assert (first.rule, first.line, first.column) == ("not-well-formed", 74, 29)
    assert first.message_en == "Opening and ending tag mismatch: From line 7 and MessageHeader"
    assert first.message_vi == "Thẻ mở From (dòng 7) không khớp với thẻ đóng MessageHeader"
    assert [error.line for error in errors] == sorted(error.line or 0 for error in errors)
    assert any(error.line == 117 and "xlink" in error.message_en for error in errors)


def test_the_broken_sample_once_repaired_is_accepted(validator: MessageValidator, samples_dir: Path) -> None:
    """Its remaining content (xmldsig Signature, QĐ-free ids, comments) is within what the schema allows."""
    text = (samples_dir / "edoc.edxml").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    del lines[7]  # the duplicated <edXML:From>
    repaired = "".join(lines).replace(
        "<edXML:Reference xlink:href=", '<edXML:Reference xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href='
    )
    # Its AttachmentEncoded uses the edXML prefix outside the element that declares it.
    repaired = repaired.replace("<edXML:AttachmentEncoded>", f'<edXML:AttachmentEncoded xmlns:edXML="{NS}">')
    # Its attachment content is a test-tool placeholder, not base64; its empty ResponseFor is tolerated.
    repaired = repaired.replace("${__StringFromFile(test.txt,,,)}", "dGVzdA==")
    message = validator.validate(repaired.encode(), "application/xml")
    assert (message.sender, message.receivers) == ("777.77.04.D77", ("777.77.03.D77",))
    assert message.business_id == "9fbfbad2-f1f8-4256-a2eb-50fb1061cddb"
