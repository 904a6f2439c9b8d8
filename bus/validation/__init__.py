"""Message validation: XML safety, schema and semantic checks, and extraction of the routing facts.

Public surface::

    MessageValidator(registry, limits=XmlLimits(), *, json_limits=JsonLimits(), policy=ValidationPolicy())
        .validate(body: bytes, content_type: str) -> ValidatedMessage
    parse_organ_id(text) -> OrganId          (also used by routing and the agency directory)
"""

from docbus.validation.dossier_json import JsonLimits
from docbus.validation.organ_id import InvalidOrganId, OrganId, parse_organ_id
from docbus.validation.policy import STANDARD_STATUS_CODES, ValidationPolicy
from docbus.validation.safe_xml import XmlLimits
from docbus.validation.validator import JSON_MEDIA_TYPES, XML_MEDIA_TYPES, MessageValidator, media_type

__all__ = [
    "JSON_MEDIA_TYPES",
    "STANDARD_STATUS_CODES",
    "XML_MEDIA_TYPES",
    "InvalidOrganId",
    "JsonLimits",
    "MessageValidator",
    "OrganId",
    "ValidationPolicy",
    "XmlLimits",
    "media_type",
    "parse_organ_id",
]
