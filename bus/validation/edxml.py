"""edXML packets (QCVN 102:2016): schema, the rules XSD 1.0 cannot say, and the routing facts.

Kind: a MessageHeader holding any document element (To, DocumentId, Code, Subject, ...) is a document
(``edoc``); otherwise it is a status message (``status``, a business receipt) when it has a StatusCode or no
body. Documents must have their required header elements, single elements given once, at least one To,
valid and distinct agency ids, and an attachment for each manifest reference; status messages must have
From, ResponseFor (with OrganId and DocumentId), a known StatusCode and a Timestamp.

After the XSD, the happy path visits the MessageHeader's children once and a few known elements beneath them:
lxml builds a Python object for every element touched, so nothing else is walked. Paths of elements are only
worked out for complaints (:mod:`.edxml_rules`).
"""

from __future__ import annotations

import dataclasses

from lxml import etree

from docbus.envelope import MessageKind, ValidatedMessage
from docbus.errors import FieldError, ValidationFailed
from docbus.schemas.registry import SchemaRegistry
from docbus.validation import edxml_rules as rules
from docbus.validation.edxml_rules import EDXML_NS, Children, child, child_texts, q, text
from docbus.validation.parties import Party, check_parties, shorten
from docbus.validation.paths import line_of, local_name
from docbus.validation.policy import ValidationPolicy
from docbus.validation.xml_signature import SignatureVerifier, policy_complaint
from docbus.validation.xsd_errors import required_children, schema_complaints

ROOT, ENVELOPE, HEADER, MESSAGE_HEADER = q("edXML"), q("edXMLEnvelope"), q("edXMLHeader"), q("MessageHeader")
TRACE_HEADER_LIST, BUSSINESS = q("TraceHeaderList"), q("Bussiness")
_CODE_NUMBER, _CODE_NOTATION, _TYPE, _TYPE_NAME = q("CodeNumber"), q("CodeNotation"), q("Type"), q("TypeName")
_PROMULGATION_DATE, _PRIORITY, _DOCUMENT_ID, _CODE = q("PromulgationDate"), q("Priority"), q("DocumentId"), q("Code")
_BUSINESS_DOC_TYPE = q("BussinessDocType")


def _party(element: etree._Element | None) -> Party | None:
    """The OrganId inside From, To or ResponseFor; ``None`` when absent (the schema has complained)."""
    organ = child(element, rules.ORGAN_ID)
    return None if organ is None else Party(organ.text or "", organ)


def _first(children: Children, name: str) -> etree._Element | None:
    found = children.get(name)
    return found[0] if found else None


class EdxmlValidator:
    """Validates a parsed edXML tree and extracts its routing facts."""

    def __init__(self, registry: SchemaRegistry, policy: ValidationPolicy, max_errors: int = 100) -> None:
        self._registry = registry
        self._policy = policy
        self._max_errors = max_errors
        self._edoc = registry.for_kind(MessageKind.EDOC)
        self._status = registry.for_kind(MessageKind.STATUS)
        self._signatures = SignatureVerifier(policy.trust_anchors)
        xsd = etree.fromstring(registry.source(self._edoc.id, self._edoc.version), etree.XMLParser(no_network=True))
        self._required = required_children(xsd)

    def validate(self, tree: etree._ElementTree) -> ValidatedMessage:
        root = tree.getroot()
        if root.tag != ROOT:
            raise self._wrong_root(root)
        schema = self._registry.xml_schema(self._edoc.id, self._edoc.version)
        errors: list[FieldError] = []
        if not schema.validate(tree):
            errors = schema_complaints(schema.error_log, tree, self._max_errors, self._required)

        envelope = child(root, ENVELOPE)
        header = child(envelope, HEADER)
        message_header = child(header, MESSAGE_HEADER)
        if envelope is None or header is None or message_header is None:
            raise self._failed("edXML", errors)  # the schema has said what is missing
        children = rules.header_children(message_header)
        if any(name in children for name in rules.DOCUMENT_MARKERS) or (
            "StatusCode" not in children and child(envelope, rules.BODY) is not None
        ):
            message = self._document(root, header, message_header, children, errors)
        else:
            message = self._status_message(root, message_header, children, errors)
        return self._signed(message, header)

    def _signed(self, message: ValidatedMessage, header: etree._Element) -> ValidatedMessage:
        """The message with what its XML-DSig signature check found; refused when the policy says so. Checked
        last: a packet that does not conform is refused for that, and costs no canonicalization."""
        element = self._signatures.find(header)
        check = None if element is None else self._signatures.check(element)
        document = message.kind is MessageKind.EDOC
        complaint = policy_complaint(self._policy.signatures, check, header, document=document)
        if complaint is not None:
            what = "edXML document" if document else "edXML status message"
            raise self._failed(what, [complaint])
        return message if check is None else dataclasses.replace(message, xml_signature=check.as_dict())

    def _document(
        self,
        root: etree._Element,
        header: etree._Element,
        message_header: etree._Element,
        children: Children,
        errors: list[FieldError],
    ) -> ValidatedMessage:
        errors += rules.document_header_complaints(message_header, children)
        sender = _party(_first(children, "From"))
        receivers = [party for to in children.get("To", ()) if (party := _party(to)) is not None]
        errors += check_parties(sender, receivers, self._policy.max_receivers)
        if self._policy.check_attachments:
            errors += rules.attachment_complaints(root, self._policy.base64_check_chars)
        if errors:
            raise self._failed("edXML document", errors)

        assert sender is not None
        return ValidatedMessage(
            kind=MessageKind.EDOC,
            schema=self._edoc.ref,
            sender=sender.text.strip(),
            receivers=tuple(party.text.strip() for party in receivers),
            business_id=text(_first(children, "DocumentId")),
            facts=_document_facts(header, children),
        )

    def _status_message(
        self,
        root: etree._Element,
        message_header: etree._Element,
        children: Children,
        errors: list[FieldError],
    ) -> ValidatedMessage:
        errors += rules.status_header_complaints(root, message_header, children, self._policy)
        sender = _party(_first(children, "From"))
        errors += check_parties(sender, [])
        if errors:
            raise self._failed("edXML status message", errors)

        response_for = _first(children, "ResponseFor")
        receiver, document_id = _party(response_for), text(child(response_for, _DOCUMENT_ID))
        sent_code = text(_first(children, "StatusCode"))
        code = self._policy.normalize_status_code(sent_code)
        assert sender is not None and receiver is not None and code is not None
        timestamp = text(_first(children, "Timestamp"))
        facts = {"timestamp": timestamp}
        if description := text(_first(children, "Description")):
            facts["description"] = shorten(description, 500)
        if sent_code != code:
            facts["status_code_sent"] = sent_code
        if response_code := text(child(response_for, _CODE)):
            facts["response_for_code"] = response_code
        return ValidatedMessage(
            kind=MessageKind.STATUS,
            schema=self._status.ref,
            sender=sender.text.strip(),
            receivers=(receiver.text.strip(),),
            # One receipt per document, code and moment: a retried receipt is the same message, a later
            # receipt with the same code (another "processing" step) is a new one.
            business_id=f"{document_id}:{code}:{timestamp}",
            response_for=document_id,
            status_code=code,
            facts=facts,
        )

    def _failed(self, what: str, errors: list[FieldError]) -> ValidationFailed:
        errors.sort(key=lambda error: error.line or 0)
        errors = errors[: self._max_errors]
        first = errors[0].message_en if errors else "no detail"
        return ValidationFailed(f"{what} does not conform: {len(errors)} error(s); first: {first}", errors)

    @staticmethod
    def _wrong_root(root: etree._Element) -> ValidationFailed:
        tag = root.tag if isinstance(root.tag, str) else ""
        name = local_name(tag)
        namespace = tag[1:].partition("}")[0] if tag.startswith("{") else ""
        where = f" in namespace {namespace}" if namespace else " without a namespace"
        error = FieldError(
            path=f"/{name}",
            rule="root",
            message_en=f"Unknown root element {name}{where}; expected edXML in namespace {EDXML_NS}",
            message_vi=f"Phần tử gốc {name} không được hỗ trợ; cần phần tử edXML thuộc không gian tên {EDXML_NS}",
            line=line_of(root),
            expected=f"{{{EDXML_NS}}}edXML",
        )
        return ValidationFailed(error.message_en, [error])


def _document_facts(header: etree._Element, children: Children) -> dict[str, str]:
    code = child_texts(_first(children, "Code"))
    number, notation = code.get(_CODE_NUMBER, ""), code.get(_CODE_NOTATION, "")
    document_type = child_texts(_first(children, "DocumentType"))
    business = child_texts(child(child(header, TRACE_HEADER_LIST), BUSSINESS))
    facts = {
        "subject": text(_first(children, "Subject")),
        "code": f"{number}/{notation}" if notation else number,
        "doc_type": document_type.get(_TYPE, ""),
        "doc_type_name": document_type.get(_TYPE_NAME, ""),
        "promulgation_date": text(child(_first(children, "PromulgationInfo"), _PROMULGATION_DATE)),
        "due_date": text(_first(children, "DueDate")),
        "priority": text(child(_first(children, "OtherInfo"), _PRIORITY)),
        "steering_type": text(_first(children, "SteeringType")),
        "business_doc_type": business.get(_BUSINESS_DOC_TYPE, ""),
        "business_doc_id": business.get(_DOCUMENT_ID, ""),
        "response_for": next(
            (value for element in children.get("ResponseFor", ()) if (value := text(child(element, _DOCUMENT_ID)))),
            "",
        ),
    }
    return {name: value for name, value in facts.items() if value}
