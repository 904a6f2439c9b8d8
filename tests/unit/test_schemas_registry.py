"""The schema registry: what it lists, what it serves, and that the files it holds are sound."""

from __future__ import annotations

import hashlib
import threading
from importlib import resources

import orjson
import pytest
from jsonschema import Draft202012Validator
from lxml import etree

from docbus.envelope import MessageKind, SchemaRef
from docbus.schemas import (
    DATETIME14_PATTERN,
    JSON_SCHEMA_MEDIA_TYPE,
    XSD_MEDIA_TYPE,
    SchemaInfo,
    SchemaRegistry,
    UnknownSchema,
)

EXPECTED = [
    ("docbus.dossier", "1.0", MessageKind.DOSSIER, JSON_SCHEMA_MEDIA_TYPE, "dossier/dossier-1.0.schema.json"),
    (
        "docbus.dossier-progress",
        "1.0",
        MessageKind.DOSSIER_PROGRESS,
        JSON_SCHEMA_MEDIA_TYPE,
        "dossier/dossier-progress-1.0.schema.json",
    ),
    ("qcvn102.edoc", "2016.1", MessageKind.EDOC, XSD_MEDIA_TYPE, "edxml/qcvn102-2016.1.xsd"),
    ("qcvn102.status", "2016.1", MessageKind.STATUS, XSD_MEDIA_TYPE, "edxml/qcvn102-2016.1.xsd"),
]


def test_list_names_every_schema(registry: SchemaRegistry) -> None:
    listed = registry.list()
    assert [(i.id, i.version, i.kind, i.media_type, i.filename) for i in listed] == EXPECTED
    assert all(isinstance(info, SchemaInfo) and info.title for info in listed)


def test_sha256_is_of_the_served_bytes(registry: SchemaRegistry) -> None:
    package = resources.files("docbus.schemas")
    for info in registry.list():
        source = registry.source(info.id, info.version)
        assert source == package.joinpath(info.filename).read_bytes()
        assert info.sha256 == hashlib.sha256(source).hexdigest()


def test_as_dict_is_plain_json(registry: SchemaRegistry) -> None:
    info = registry.info("qcvn102.edoc", "2016.1")
    assert orjson.loads(orjson.dumps(info.as_dict())) == {
        "id": "qcvn102.edoc",
        "version": "2016.1",
        "kind": "edoc",
        "media_type": "application/xml",
        "filename": "edxml/qcvn102-2016.1.xsd",
        "sha256": info.sha256,
        "title": info.title,
    }
    assert info.ref == SchemaRef("qcvn102.edoc", "2016.1")


def test_lookups(registry: SchemaRegistry) -> None:
    assert registry.info("docbus.dossier").version == "1.0"  # latest when no version is given
    assert registry.for_kind(MessageKind.STATUS).id == "qcvn102.status"
    assert registry.for_kind(MessageKind.DOSSIER_PROGRESS).id == "docbus.dossier-progress"
    assert isinstance(registry.xml_schema("qcvn102.status", "2016.1"), etree.XMLSchema)
    assert isinstance(registry.json_validator("docbus.dossier", "1.0"), Draft202012Validator)


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda r: r.info("qcvn102.edoc", "2020.1"), "unknown schema 'qcvn102.edoc' version '2020.1'"),
        (lambda r: r.info("nope"), "unknown schema 'nope'"),
        (lambda r: r.source("nope", "1"), "unknown schema 'nope' version '1'"),
        (lambda r: r.xml_schema("docbus.dossier", "1.0"), "unknown schema 'docbus.dossier' version '1.0'"),
        (lambda r: r.json_validator("qcvn102.edoc", "2016.1"), "unknown schema 'qcvn102.edoc' version '2016.1'"),
    ],
)
def test_unknown_schemas_raise_a_key_error(registry: SchemaRegistry, call: object, text: str) -> None:
    with pytest.raises(UnknownSchema) as caught:
        call(registry)  # type: ignore[operator]
    assert isinstance(caught.value, KeyError)
    assert str(caught.value) == text


def test_each_thread_validates_with_its_own_compiled_xsd(registry: SchemaRegistry) -> None:
    """A compiled XMLSchema keeps its error log on the instance, so threads must not share one."""
    main = registry.xml_schema("qcvn102.edoc", "2016.1")
    seen: list[etree.XMLSchema] = []
    thread = threading.Thread(target=lambda: seen.extend([registry.xml_schema("qcvn102.edoc", "2016.1")] * 2))
    thread.start()
    thread.join()
    assert seen[0] is not main
    assert registry.xml_schema("qcvn102.edoc", "2016.1") is main


def test_json_schemas_are_valid_draft_2020_12(registry: SchemaRegistry) -> None:
    for info in registry.list():
        if info.media_type != JSON_SCHEMA_MEDIA_TYPE:
            continue
        schema = orjson.loads(registry.source(info.id, info.version))
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["properties"]["schema"]["const"] == f"{info.id}/{info.version}"
        assert schema["properties"]["kind"]["const"] == info.kind.value
        # The date shape in the file is the one the format checker relies on.
        assert schema["$defs"]["dateTime14"]["pattern"] == DATETIME14_PATTERN


def test_json_schema_descriptions_are_in_both_languages(registry: SchemaRegistry) -> None:
    schema = orjson.loads(registry.source("docbus.dossier", "1.0"))
    fields = schema["$defs"]["dossier"]["properties"]
    assert fields["MaHoSo"]["description"].startswith("Mã hồ sơ")
    assert "Dossier code" in fields["MaHoSo"]["description"]
    assert all(" / " in field["description"] for field in fields.values())


def test_the_xsd_declares_its_namespace_and_version(registry: SchemaRegistry) -> None:
    xsd = etree.fromstring(registry.source("qcvn102.edoc", "2016.1"))
    assert xsd.get("targetNamespace") == "http://www.mic.gov.vn/TBT/QCVN_102_2016"
    assert xsd.get("version") == "2016.1"
    # Only the root is global: a stray MessageHeader cannot be validated on its own.
    globals_ = [e.get("name") for e in xsd.iterchildren("{http://www.w3.org/2001/XMLSchema}element")]
    assert globals_ == ["edXML"]


def test_the_xsd_rejects_a_header_without_message_header(registry: SchemaRegistry) -> None:
    schema = registry.xml_schema("qcvn102.edoc", "2016.1")
    document = etree.fromstring(
        b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"><edXMLEnvelope><edXMLHeader/></edXMLEnvelope></edXML>'
    )
    assert not schema.validate(document)
    assert "Missing child element(s)" in str(schema.error_log.last_error)
