"""What the axis simulators read from the packets they receive, and the status messages they answer with.

A document (edoc) names its sender (``From``), receivers (``To``) and identity (``DocumentId``, ``Code``,
``PromulgationInfo/PromulgationDate``). For each receiver a simulator issues business receipts — edXML status
messages (thông điệp trạng thái) — from that receiver back to the sender, shaped like the real ones in the
samples: ``From`` is the receiver organ, ``ResponseFor`` names the original document, then ``StaffInfo``,
``StatusCode`` (01 arrived, 02 refused, 03 accepted, 06 finished), ``Description`` and ``Timestamp``
(``yyyy/MM/dd HH:mm:ss``, Vietnam time). Every element is written with the ``edXML:`` prefix.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, NamedTuple

from lxml import etree

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
NS = {"e": EDXML_NS}
VIETNAM_TIME = timezone(timedelta(hours=7), "ICT")
TIMESTAMP_FORMAT = "%Y/%m/%d %H:%M:%S"

# Party details copied from the document's To element into the receipt's From, in the samples' order.
PARTY_FIELDS = ("OrganId", "OrganName", "OrganizationInCharge", "OrganAdd", "Email", "Telephone", "Fax", "Website")

STATUS_DESCRIPTIONS = {
    "01": "Văn thư: Đã đến - phần mềm quản lý văn bản đã nhận, văn thư chưa xử lý",
    "02": "Văn thư: Từ chối tiếp nhận văn bản điện tử",
    "03": "Văn thư: Đã tiếp nhận và đăng ký văn bản",
    "04": "Lãnh đạo: Đã phân công xử lý",
    "05": "Chuyên viên: Đang xử lý",
    "06": "Chuyên viên: Hoàn thành xử lý",
}

_ANY_EDXML = f"{{{EDXML_NS}}}*"
_NS_PREFIX_LENGTH = len(EDXML_NS) + 2
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


class UnreadablePacket(ValueError):
    """Raised when a packet is not well-formed edXML or lacks the header facts a receipt needs."""


class Party(NamedTuple):
    """An organ as a packet names it: its id and the optional details (name, address, ...).

    A tuple of strings, like :class:`PacketHeader`: a simulator keeps every packet it was sent, and tuples that
    hold only strings drop out of the garbage collector's sight, where objects of a class are walked by every
    full collection (see ``AxisState``)."""

    organ_id: str
    details: tuple[tuple[str, str], ...] = ()

    def row(self) -> tuple[Any, ...]:
        """The party as a plain tuple (see ``docbus.simulators.shelf``); ``details`` is one already."""
        return (self.organ_id, self.details)

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> Party:
        return cls(row[0], row[1])


class PacketHeader(NamedTuple):
    """The routing and identity facts of a received packet.

    For a document: ``receivers`` are its ``To`` organs. For a status message: the one receiver is the organ
    of ``ResponseFor`` (the sender of the document it answers), and ``document_id`` is that document's id.
    """

    is_status: bool
    sender: Party
    receivers: tuple[Party, ...]
    document_id: str
    code: str  # "number/notation"
    promulgation_date: str
    status_code: str | None = None

    def row(self) -> tuple[Any, ...]:
        """The header as a plain tuple (see ``docbus.simulators.shelf``)."""
        receivers = tuple([party.row() for party in self.receivers])
        return (
            self.is_status,
            self.sender.row(),
            receivers,
            self.document_id,
            self.code,
            self.promulgation_date,
            self.status_code,
        )

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> PacketHeader:
        receivers = tuple(Party.from_row(party) for party in row[2])
        return cls(row[0], Party.from_row(row[1]), receivers, row[3], row[4], row[5], row[6])


def read_header(raw: bytes) -> PacketHeader:
    """Read the header of an edXML document or status message; :class:`UnreadablePacket` if it cannot."""
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnreadablePacket(f"not well-formed XML: {exc}") from exc
    header = _path(root, "edXMLEnvelope", "edXMLHeader", "MessageHeader")
    if root.tag != f"{{{EDXML_NS}}}edXML" or header is None:
        raise UnreadablePacket("no edXML/edXMLEnvelope/edXMLHeader/MessageHeader")
    fields = _children(header)
    sender = _party(fields.get("From"))
    if sender is None:
        raise UnreadablePacket("MessageHeader has no From/OrganId")
    status_code = _text(fields, "StatusCode")
    if status_code is not None:
        answered = fields.get("ResponseFor")
        if answered is None:
            raise UnreadablePacket("status message has no ResponseFor")
        about = _children(answered)
        original = _text(about, "OrganId")
        if not original:
            raise UnreadablePacket("ResponseFor has no OrganId")
        return PacketHeader(
            is_status=True,
            sender=sender,
            receivers=(Party(original),),
            document_id=_text(about, "DocumentId") or "",
            code=_text(about, "Code") or "",
            promulgation_date=_text(about, "PromulgationDate") or "",
            status_code=status_code,
        )
    receivers: dict[str, Party] = {}
    for element in header.iterchildren(_q("To")):
        party = _party(element)
        if party is not None:
            receivers.setdefault(party.organ_id, party)
    document_id = _text(fields, "DocumentId")
    if not document_id:
        raise UnreadablePacket("MessageHeader has no DocumentId")
    code = _children(fields["Code"]) if "Code" in fields else {}
    number = _text(code, "CodeNumber") or ""
    notation = _text(code, "CodeNotation") or ""
    promulgation = _children(fields["PromulgationInfo"]) if "PromulgationInfo" in fields else {}
    return PacketHeader(
        is_status=False,
        sender=sender,
        receivers=tuple(receivers.values()),
        document_id=document_id,
        code=f"{number}/{notation}" if notation else number,
        promulgation_date=_text(promulgation, "PromulgationDate") or "",
    )


def status_message(
    *, reporter: Party, original: PacketHeader, status_code: str, at: datetime, description: str | None = None
) -> bytes:
    """An edXML status message from ``reporter`` about the document ``original`` (all elements ``edXML:``)."""
    root = etree.Element(_q("edXML"), nsmap={"edXML": EDXML_NS})
    header = etree.SubElement(
        etree.SubElement(etree.SubElement(root, _q("edXMLEnvelope")), _q("edXMLHeader")), _q("MessageHeader")
    )
    sender = etree.SubElement(header, _q("From"))
    _add(sender, "OrganId", reporter.organ_id)
    for name, value in reporter.details:
        _add(sender, name, value)
    answered = etree.SubElement(header, _q("ResponseFor"))
    _add(answered, "OrganId", original.sender.organ_id)
    _add(answered, "Code", original.code)
    _add(answered, "PromulgationDate", original.promulgation_date)
    _add(answered, "DocumentId", original.document_id)
    staff = etree.SubElement(header, _q("StaffInfo"))
    _add(staff, "Department", "Văn phòng")
    _add(staff, "Staff", "Văn thư (mô phỏng)")
    _add(header, "StatusCode", status_code)
    _add(header, "Description", description or STATUS_DESCRIPTIONS.get(status_code, status_code))
    _add(header, "Timestamp", at.astimezone(VIETNAM_TIME).strftime(TIMESTAMP_FORMAT))
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True))


def _party(element: etree._Element | None) -> Party | None:
    if element is None:
        return None
    fields = _children(element)
    organ_id = _text(fields, "OrganId")
    if not organ_id:
        return None
    details = []
    for name in PARTY_FIELDS[1:]:
        value = _text(fields, name)
        if value:
            details.append((name, value))
    return Party(organ_id, tuple(details))


def _children(element: etree._Element) -> dict[str, etree._Element]:
    """An element's edXML children by local name (the first of each): one pass over them, where a ``find`` per
    field would run lxml's path machinery dozens of times for every packet."""
    found: dict[str, etree._Element] = {}
    for child in element.iterchildren(_ANY_EDXML):
        found.setdefault(child.tag[_NS_PREFIX_LENGTH:], child)
    return found


def _path(element: etree._Element, *names: str) -> etree._Element | None:
    node: etree._Element | None = element
    for name in names:
        node = next(node.iterchildren(_q(name)), None) if node is not None else None
    return node


def _text(fields: dict[str, etree._Element], name: str) -> str | None:
    found = fields.get(name)
    if found is None or found.text is None:
        return None
    return found.text.strip() or None


def _q(name: str) -> str:
    return f"{{{EDXML_NS}}}{name}"


def _add(parent: etree._Element, name: str, text: str) -> None:
    etree.SubElement(parent, _q(name)).text = text
