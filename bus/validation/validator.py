"""The one entry point: bytes and a content type in, a :class:`ValidatedMessage` or a precise refusal out.

``MessageValidator.validate`` serves both intake (``POST /v1/messages``) and the conformance sandbox
(``POST /v1/validate``), so every refusal lists every complaint found, each with a path, line and column where
there are any, a stable rule name, and text in Vietnamese and English:

* ``UnsupportedMediaType`` (415): not XML (``application/xml``, ``text/xml``, ``application/edxml+xml``) or
  JSON (``application/json``), or a charset other than UTF-8;
* ``NotWellFormed`` (400): not parseable, or unsafe XML (see :mod:`docbus.validation.safe_xml`);
* ``ValidationFailed`` (422): schema or semantic violations (see :mod:`docbus.validation.edxml` and
  :mod:`docbus.validation.dossier_json`).
"""

from __future__ import annotations

from docbus.envelope import ValidatedMessage
from docbus.errors import FieldError, UnsupportedMediaType
from docbus.schemas.registry import SchemaRegistry
from docbus.validation.dossier_json import DossierValidator, JsonLimits
from docbus.validation.edxml import EdxmlValidator
from docbus.validation.policy import ValidationPolicy
from docbus.validation.safe_xml import SafeXmlParser, XmlLimits

XML_MEDIA_TYPES = frozenset({"application/xml", "text/xml", "application/edxml+xml"})
JSON_MEDIA_TYPES = frozenset({"application/json"})
_ACCEPTED = ", ".join(sorted(XML_MEDIA_TYPES | JSON_MEDIA_TYPES))
_UTF8 = frozenset({"utf-8", "utf8"})


def media_type(content_type: str) -> tuple[str, str | None]:
    """``'Application/XML; charset="UTF-8"'`` → ``('application/xml', 'utf-8')``."""
    kind, *params = content_type.split(";")
    charset = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return kind.strip().lower(), charset


class MessageValidator:
    """Validates any message the bus accepts. Build once (it holds compiled schemas); thread-safe."""

    def __init__(
        self,
        registry: SchemaRegistry,
        limits: XmlLimits = XmlLimits(),  # noqa: B008 - frozen, immutable defaults
        *,
        json_limits: JsonLimits = JsonLimits(),  # noqa: B008
        policy: ValidationPolicy = ValidationPolicy(),  # noqa: B008
    ) -> None:
        self.registry = registry
        self._xml = SafeXmlParser(limits)
        self._edxml = EdxmlValidator(registry, policy, max_errors=limits.max_errors)
        self._json = DossierValidator(registry, json_limits, max_receivers=policy.max_receivers)

    def validate(self, body: bytes, content_type: str) -> ValidatedMessage:
        kind, charset = media_type(content_type)
        if charset is not None and charset not in _UTF8:
            error = FieldError(
                path="",
                rule="charset",
                message_en=f"Only UTF-8 is accepted, not charset={charset}",
                message_vi=f"Chỉ chấp nhận bảng mã UTF-8, không chấp nhận charset={charset}",
                expected="utf-8",
            )
            raise UnsupportedMediaType(error.message_en, [error])
        if kind in XML_MEDIA_TYPES:
            return self._edxml.validate(self._xml.parse(body))
        if kind in JSON_MEDIA_TYPES:
            return self._json.validate(body)
        shown = kind or "(none)"
        error = FieldError(
            path="",
            rule="media-type",
            message_en=f"Content type {shown} is not accepted; send {_ACCEPTED}",
            message_vi=f"Kiểu nội dung {shown} không được hỗ trợ; hãy gửi {_ACCEPTED}",
            expected=_ACCEPTED,
        )
        raise UnsupportedMediaType(error.message_en, [error])
