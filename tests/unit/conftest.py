"""Fixtures for the validation and schema unit tests: the real schemas, a validator, the sample packets, and
small hand-written edXML packets whose lines the tests can point at."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from docbus.errors import FieldError, RequestRejected
from docbus.schemas import SchemaRegistry
from docbus.validation import MessageValidator

SAMPLES_DIR = Path(
    os.environ.get("DOCBUS_SAMPLES_DIR", Path(__file__).resolve().parents[2].parent / "shared/samples/edxml")
)

EDOC = """<?xml version="1.0" encoding="UTF-8"?>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">
  <edXML:edXMLEnvelope xmlns:edXML="http://www.mic.gov.vn/TBT/QCVN_102_2016">
    <edXML:edXMLHeader>
      <edXML:MessageHeader>
        <edXML:From>
          <edXML:OrganId>000.00.00.G22</edXML:OrganId>
          <edXML:OrganName>Văn phòng Chính phủ</edXML:OrganName>
        </edXML:From>
        <edXML:To>
          <edXML:OrganId>000.00.00.H41</edXML:OrganId>
          <edXML:OrganName>UBND Tỉnh Nghệ An</edXML:OrganName>
        </edXML:To>
        <edXML:To>
          <edXML:OrganId>000.00.00.H14</edXML:OrganId>
        </edXML:To>
        <edXML:DocumentId>000.00.00.G22,2024/03/15,123/VPCP-TTĐT</edXML:DocumentId>
        <edXML:Code>
          <edXML:CodeNumber>123</edXML:CodeNumber>
          <edXML:CodeNotation>VPCP-TTĐT</edXML:CodeNotation>
        </edXML:Code>
        <edXML:PromulgationInfo>
          <edXML:Place>Hà Nội</edXML:Place>
          <edXML:PromulgationDate>2024/03/15</edXML:PromulgationDate>
        </edXML:PromulgationInfo>
        <edXML:DocumentType>
          <edXML:Type>1</edXML:Type>
          <edXML:TypeName>Công văn</edXML:TypeName>
        </edXML:DocumentType>
        <edXML:Subject>V/v kết nối, liên thông phần mềm quản lý văn bản</edXML:Subject>
        <edXML:SignerInfo>
          <edXML:Competence>KT. BỘ TRƯỞNG</edXML:Competence>
          <edXML:Position>Thứ trưởng</edXML:Position>
          <edXML:FullName>Nguyễn Văn An</edXML:FullName>
        </edXML:SignerInfo>
        <edXML:OtherInfo>
          <edXML:Priority>1</edXML:Priority>
        </edXML:OtherInfo>
      </edXML:MessageHeader>
      <edXML:TraceHeaderList>
        <edXML:TraceHeader>
          <edXML:OrganId>000.00.00.G22</edXML:OrganId>
          <edXML:Timestamp>2024/03/15 08:30:00</edXML:Timestamp>
        </edXML:TraceHeader>
        <edXML:Bussiness>
          <edXML:BussinessDocType>0</edXML:BussinessDocType>
        </edXML:Bussiness>
      </edXML:TraceHeaderList>
    </edXML:edXMLHeader>
    <edXML:edXMLBody>
      <edXML:edXMLManifest version="1.0">
        <edXML:Reference>
          <edXML:ContentId>cid:1</edXML:ContentId>
          <edXML:AttachmentName>cong-van.pdf</edXML:AttachmentName>
        </edXML:Reference>
      </edXML:edXMLManifest>
    </edXML:edXMLBody>
  </edXML:edXMLEnvelope>
  <AttachmentEncoded>
    <Attachment>
      <ContentId>1</ContentId>
      <AttachmentName>cong-van.pdf</AttachmentName>
      <ContentType>application/pdf</ContentType>
      <ContentTransferEncoded>JVBERi0xLjQK
JSVFT0YK</ContentTransferEncoded>
    </Attachment>
  </AttachmentEncoded>
</edXML>
"""

STATUS = """<?xml version="1.0" encoding="UTF-8"?>
<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016">
  <edXMLEnvelope>
    <edXMLHeader>
      <MessageHeader>
        <From>
          <OrganId>000.00.00.H41</OrganId>
          <OrganName>UBND Tỉnh Nghệ An</OrganName>
        </From>
        <ResponseFor>
          <OrganId>000.00.00.G22</OrganId>
          <Code>123/VPCP-TTĐT</Code>
          <PromulgationDate>2024/03/15</PromulgationDate>
          <DocumentId>000.00.00.G22,2024/03/15,123/VPCP-TTĐT</DocumentId>
        </ResponseFor>
        <StaffInfo>
          <Department>Văn thư</Department>
          <Staff>Trần Thị Bình</Staff>
        </StaffInfo>
        <StatusCode>03</StatusCode>
        <Description>Đã tiếp nhận, vào sổ văn bản đến</Description>
        <Timestamp>2024/03/15 09:00:00</Timestamp>
      </MessageHeader>
    </edXMLHeader>
  </edXMLEnvelope>
</edXML>
"""


def line_number(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th appearance of ``needle`` in ``text``."""
    index = -1
    for _ in range(occurrence):
        index = text.index(needle, index + 1)
    return text.count("\n", 0, index) + 1


@pytest.fixture(scope="session")
def edoc_text() -> str:
    """A small valid document: two receivers, one attachment (``cid:1`` in the manifest, ``1`` attached)."""
    return EDOC


@pytest.fixture(scope="session")
def status_text() -> str:
    """A small valid receipt (03, accepted), elements unprefixed in the default namespace."""
    return STATUS


@pytest.fixture(scope="session")
def line_in() -> Callable[..., int]:
    """``line_in(text, needle, occurrence=1)``: the line a piece of a test body is on."""
    return line_number


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    assert SAMPLES_DIR.is_dir(), f"sample packets not found at {SAMPLES_DIR} (set DOCBUS_SAMPLES_DIR)"
    return SAMPLES_DIR


@pytest.fixture(scope="session")
def registry() -> SchemaRegistry:
    return SchemaRegistry()


@pytest.fixture(scope="session")
def validator(registry: SchemaRegistry) -> MessageValidator:
    return MessageValidator(registry)


Refusal = Callable[..., list[FieldError]]


@pytest.fixture
def refused(validator: MessageValidator) -> Refusal:
    """``refused(ErrorClass, body, content_type=...)``: validate, assert that exact refusal, return its errors."""

    def check(
        expected: type[RequestRejected],
        body: str | bytes,
        content_type: str = "application/xml",
        using: MessageValidator | None = None,
    ) -> list[FieldError]:
        raw = body.encode() if isinstance(body, str) else body
        with pytest.raises(RequestRejected) as caught:
            (using or validator).validate(raw, content_type)
        assert type(caught.value) is expected, (caught.value.detail, caught.value.errors)
        assert caught.value.errors, "a refusal always lists its errors"
        return caught.value.errors

    return check
