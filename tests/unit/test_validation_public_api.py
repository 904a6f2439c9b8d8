"""The public surface of docbus.validation and docbus.schemas, pinned so a change to it is deliberate."""

from __future__ import annotations

import docbus.schemas
import docbus.validation


def test_validation_exports() -> None:
    assert sorted(docbus.validation.__all__) == sorted(
        [
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
    )
    for name in docbus.validation.__all__:
        assert getattr(docbus.validation, name) is not None


def test_schemas_exports() -> None:
    assert sorted(docbus.schemas.__all__) == sorted(
        [
            "DATETIME14_FORMAT",
            "DATETIME14_PATTERN",
            "JSON_SCHEMA_MEDIA_TYPE",
            "XSD_MEDIA_TYPE",
            "SchemaInfo",
            "SchemaRegistry",
            "UnknownSchema",
        ]
    )


def test_media_type_parsing() -> None:
    assert docbus.validation.media_type('Application/XML; charset="UTF-8"') == ("application/xml", "utf-8")
    assert docbus.validation.media_type("application/json") == ("application/json", None)
    assert docbus.validation.media_type("") == ("", None)
