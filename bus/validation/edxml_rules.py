"""edXML header rules that XSD 1.0 cannot express, and the element helpers the validator reads facts with.

Each complaint names the element (XPath by local names) and its line. Element paths are only worked out for
complaints; the happy path touches as few elements as it can (each one touched becomes a Python object).
"""

from __future__ import annotations

from lxml import etree

from docbus.errors import FieldError
from docbus.validation.parties import Party, check_organ_id, shorten
from docbus.validation.paths import element_path, line_of, local_name
from docbus.validation.policy import ValidationPolicy

EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"

# Header elements only a document has, and only a status message has.
DOCUMENT_MARKERS = (
    "To",
    "DocumentId",
    "Code",
    "PromulgationInfo",
    "DocumentType",
    "Subject",
    "Content",
    "SignerInfo",
    "DueDate",
    "ToPlaces",
    "OtherInfo",
    "SteeringType",
)
STATUS_MARKERS = ("StaffInfo", "StatusCode", "Description", "Timestamp")


def q(name: str) -> str:
    """Clark name in the edXML namespace."""
    return f"{{{EDXML_NS}}}{name}"


ENVELOPE, BODY, MANIFEST, REFERENCE = q("edXMLEnvelope"), q("edXMLBody"), q("edXMLManifest"), q("Reference")
ATTACHMENT_ENCODED, ATTACHMENT = q("AttachmentEncoded"), q("Attachment")
ORGAN_ID, CONTENT_ID, CONTENT = q("OrganId"), q("ContentId"), q("ContentTransferEncoded")

EDOC_REQUIRED = ("From", "DocumentId", "Code", "PromulgationInfo", "DocumentType", "Subject", "SignerInfo")
EDOC_SINGLE = (*EDOC_REQUIRED, "Content", "DueDate", "ToPlaces", "OtherInfo", "SteeringType")
STATUS_REQUIRED = ("From", "ResponseFor", "StatusCode", "Timestamp")
STATUS_SINGLE = (*STATUS_REQUIRED, "StaffInfo", "Description")

_HEADER_CHILDREN = {q(name): name for name in (*DOCUMENT_MARKERS, *STATUS_MARKERS, "From", "ResponseFor")}
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"

Children = dict[str, list[etree._Element]]


def children_of(parent: etree._Element, start: int = 0) -> list[etree._Element]:
    """The children from ``start`` on, as a list: slicing builds it in one C loop, cheaper than an iterator."""
    return parent[start:]  # type: ignore[index,return-value]  # the lxml stubs only know integer indexes


def child(parent: etree._Element | None, tag: str) -> etree._Element | None:
    """The first child with this Clark tag.

    Real packets put most looked-for elements first, and in lxml indexing is cheaper than iterating (and
    slicing cheaper than an iterator), so the first child is tried on its own.
    """
    if parent is None or not len(parent):
        return None
    first = parent[0]
    if first.tag == tag:
        return first
    for element in children_of(parent, 1):
        if element.tag == tag:
            return element
    return None


def text(element: etree._Element | None) -> str:
    if element is None or element.text is None:
        return ""
    return element.text.strip()


def child_texts(parent: etree._Element | None) -> dict[object, str]:
    """Stripped text of each child by Clark tag (the first of each tag wins)."""
    texts: dict[object, str] = {}
    if parent is not None:
        for element in children_of(parent):
            texts.setdefault(element.tag, (element.text or "").strip())
    return texts


def content_id(value: str) -> str:
    """Manifest and attachment ids match with or without ``cid:`` (and angle brackets)."""
    value = value.strip().strip("<>")
    return value[4:] if value[:4].lower() == "cid:" else value


def is_base64(value: str, check_chars: int | None = None) -> bool:
    """Only base64 characters and whitespace (line breaks are common in encoded attachments); with
    ``check_chars``, only that many characters are looked at, half at each end."""
    if check_chars is not None and len(value) > check_chars:
        half = check_chars // 2
        value = value[:half] + value[-half:]
    return value.isascii() and not value.encode("ascii").translate(None, _BASE64_ALPHABET)


def header_children(message_header: etree._Element) -> Children:
    children: Children = {}
    for element in children_of(message_header):
        name = _HEADER_CHILDREN.get(element.tag)  # comments and PIs have non-str tags: not found
        if name is not None:
            children.setdefault(name, []).append(element)
    return children


def missing(parent: etree._Element, name: str) -> FieldError:
    where = local_name(parent.tag)
    return FieldError(
        path=f"{element_path(parent)}/{name}",
        rule="required",
        message_en=f"Missing required element {name} in {where}",
        message_vi=f"Thiếu phần tử bắt buộc {name} trong {where}",
        line=line_of(parent),
        expected=name,
    )


def _cardinality(
    message_header: etree._Element, children: Children, required: tuple[str, ...], single: tuple[str, ...]
) -> list[FieldError]:
    errors = [missing(message_header, name) for name in required if name not in children]
    for name in single:
        for element in children.get(name, ())[1:]:
            errors.append(
                FieldError(
                    path=element_path(element),
                    rule="max-occurs",
                    message_en=f"{name} may appear only once in MessageHeader",
                    message_vi=f"Phần tử {name} chỉ được xuất hiện một lần trong MessageHeader",
                    line=line_of(element),
                    expected="1",
                )
            )
    return errors


def _misplaced(children: Children, names: tuple[str, ...], en: str, vi: str) -> list[FieldError]:
    return [
        FieldError(
            path=element_path(element),
            rule="unexpected-element",
            message_en=f"{name} {en}",
            message_vi=f"Phần tử {name} {vi}",
            line=line_of(element),
        )
        for name in names
        for element in children.get(name, ())
    ]


def document_header_complaints(message_header: etree._Element, children: Children) -> list[FieldError]:
    """Required elements, singletons given twice, no receiver, status elements in a document."""
    errors = _cardinality(message_header, children, EDOC_REQUIRED, EDOC_SINGLE)
    if "To" not in children:
        errors.append(
            FieldError(
                path=element_path(message_header) + "/To",
                rule="required",
                message_en="At least one receiver (To) is required",
                message_vi="Cần ít nhất một nơi nhận (phần tử To)",
                line=line_of(message_header),
                expected="To with OrganId",
            )
        )
    errors += _misplaced(
        children,
        STATUS_MARKERS,
        "belongs in a status message, not in a document header",
        "chỉ dùng trong thông điệp trạng thái, không dùng trong văn bản",
    )
    return errors


def status_header_complaints(
    root: etree._Element, message_header: etree._Element, children: Children, policy: ValidationPolicy
) -> list[FieldError]:
    """Required elements, singletons given twice, ResponseFor, status code, attachments (the sender's id is
    checked by the caller)."""
    errors = _cardinality(message_header, children, STATUS_REQUIRED, STATUS_SINGLE)
    for response_for in children.get("ResponseFor", ())[:1]:
        organ = child(response_for, ORGAN_ID)
        if organ is None or not text(organ):
            errors.append(missing(response_for, "OrganId"))
        else:
            _, error = check_organ_id(Party(organ.text or "", organ), "receiver", "nhận")
            if error is not None:
                errors.append(error)
        if not text(child(response_for, q("DocumentId"))):
            errors.append(missing(response_for, "DocumentId"))
    for element in children.get("StatusCode", ())[:1]:
        sent = text(element)
        # Anything but two digits is the schema's complaint already.
        if len(sent) == 2 and sent.isdigit() and policy.normalize_status_code(sent) is None:
            accepted = ", ".join(policy.accepted_status_codes)
            errors.append(
                FieldError(
                    path=element_path(element),
                    rule="status-code",
                    message_en=f"Status code {sent} is not one of {accepted}",
                    message_vi=f"Mã trạng thái {sent} không hợp lệ; các mã được phép: {accepted}",
                    line=line_of(element),
                    expected=accepted,
                )
            )
    attachments = child(root, ATTACHMENT_ENCODED)
    if attachments is not None:
        errors.append(
            FieldError(
                path=element_path(attachments),
                rule="unexpected-element",
                message_en="A status message carries no attachments",
                message_vi="Thông điệp trạng thái không được kèm tệp đính kèm",
                line=line_of(attachments),
            )
        )
    return errors


def attachment_complaints(root: etree._Element, base64_check_chars: int | None = None) -> list[FieldError]:
    """Each manifest reference needs its attachment; attachment content must be base64 (see
    :class:`ValidationPolicy` for ``base64_check_chars``)."""
    errors: list[FieldError] = []
    attached: set[str] = set()
    encoded = child(root, ATTACHMENT_ENCODED)
    for attachment in encoded if encoded is not None else ():
        if attachment.tag != ATTACHMENT:
            continue
        attached.add(content_id(text(child(attachment, CONTENT_ID))))
        content = child(attachment, CONTENT)
        payload = content.text if content is not None else None
        if content is not None and payload and not is_base64(payload, base64_check_chars):
            errors.append(
                FieldError(
                    path=element_path(content),
                    rule="base64",
                    message_en="Attachment content is not base64",
                    message_vi="Nội dung tệp đính kèm không được mã hóa base64",
                    line=line_of(content),
                    expected="base64 (A-Z, a-z, 0-9, +, /, =)",
                )
            )
    manifest = child(child(child(root, ENVELOPE), BODY), MANIFEST)
    for reference in manifest if manifest is not None else ():
        if reference.tag != REFERENCE:
            continue
        element = child(reference, CONTENT_ID)
        value = text(element)
        if element is None or not value:
            continue  # the schema has complained
        if content_id(value) not in attached:
            errors.append(
                FieldError(
                    path=element_path(element),
                    rule="attachment-missing",
                    message_en=f"No attachment has ContentId {shorten(value)}",
                    message_vi=f"Không có tệp đính kèm với ContentId {shorten(value)}",
                    line=line_of(element),
                    expected="an Attachment in AttachmentEncoded with the same ContentId",
                )
            )
    return errors
