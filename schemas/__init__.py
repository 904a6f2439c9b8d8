"""Versioned message schemas (XSD and JSON Schema files) and the registry that loads them.

See ``README.md`` beside this file for the JSON message shapes.
"""

from docbus.schemas.json_validators import DATETIME14_FORMAT, DATETIME14_PATTERN
from docbus.schemas.registry import (
    JSON_SCHEMA_MEDIA_TYPE,
    XSD_MEDIA_TYPE,
    SchemaInfo,
    SchemaRegistry,
    UnknownSchema,
)

__all__ = [
    "DATETIME14_FORMAT",
    "DATETIME14_PATTERN",
    "JSON_SCHEMA_MEDIA_TYPE",
    "XSD_MEDIA_TYPE",
    "SchemaInfo",
    "SchemaRegistry",
    "UnknownSchema",
]
