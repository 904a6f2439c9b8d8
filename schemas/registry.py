"""The schema registry: every message schema docbus knows, by stable id and version.

Schemas are package data (``edxml/*.xsd``, ``dossier/*.schema.json``), read and compiled once when the
registry is built: one ``lxml.etree.XMLSchema`` per XSD file, one ``Draft202012Validator`` per JSON Schema.
Build one registry at startup and pass it down; it is read-only afterwards. A compiled ``XMLSchema`` keeps its
error log on the instance, so each thread that validates gets its own copy (compiled on its first use).

=========================  =========  ==================  ===========================================
id                         version    kind                file
=========================  =========  ==================  ===========================================
qcvn102.edoc               2016.1     edoc                edxml/qcvn102-2016.1.xsd
qcvn102.status             2016.1     status              edxml/qcvn102-2016.1.xsd (same file)
docbus.dossier             1.0        dossier             dossier/dossier-1.0.schema.json
docbus.dossier-progress    1.0        dossier-progress    dossier/dossier-progress-1.0.schema.json
=========================  =========  ==================  ===========================================
"""

from __future__ import annotations

import builtins
import hashlib
import threading
from dataclasses import dataclass
from importlib import resources

import orjson
from jsonschema import Draft202012Validator
from lxml import etree

from docbus.envelope import MessageKind, SchemaRef
from docbus.schemas.json_validators import build_validator

XSD_MEDIA_TYPE = "application/xml"
JSON_SCHEMA_MEDIA_TYPE = "application/schema+json"


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """What the registry tells about one schema version (also what ``GET /v1/schemas`` lists)."""

    id: str
    version: str
    kind: MessageKind
    media_type: str  # of the schema file itself
    filename: str  # inside the docbus.schemas package
    sha256: str
    title: str

    @property
    def ref(self) -> SchemaRef:
        return SchemaRef(self.id, self.version)

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "version": self.version,
            "kind": self.kind.value,
            "media_type": self.media_type,
            "filename": self.filename,
            "sha256": self.sha256,
            "title": self.title,
        }


class UnknownSchema(KeyError):
    """Raised when no schema has the requested id (and version)."""

    def __init__(self, schema_id: str, version: str | None = None) -> None:
        super().__init__(schema_id if version is None else f"{schema_id}/{version}")
        self.schema_id = schema_id
        self.version = version

    def __str__(self) -> str:
        if self.version is None:
            return f"unknown schema {self.schema_id!r}"
        return f"unknown schema {self.schema_id!r} version {self.version!r}"


@dataclass(frozen=True, slots=True)
class _Entry:
    id: str
    version: str
    kind: MessageKind
    filename: str
    title: str


_CATALOG: tuple[_Entry, ...] = (
    _Entry(
        "qcvn102.edoc",
        "2016.1",
        MessageKind.EDOC,
        "edxml/qcvn102-2016.1.xsd",
        "edXML document (văn bản điện tử), QCVN 102:2016",
    ),
    _Entry(
        "qcvn102.status",
        "2016.1",
        MessageKind.STATUS,
        "edxml/qcvn102-2016.1.xsd",
        "edXML status message (thông điệp trạng thái), QCVN 102:2016",
    ),
    _Entry(
        "docbus.dossier",
        "1.0",
        MessageKind.DOSSIER,
        "dossier/dossier-1.0.schema.json",
        "Dossier record (hồ sơ thủ tục hành chính, DongBoHoSoMC)",
    ),
    _Entry(
        "docbus.dossier-progress",
        "1.0",
        MessageKind.DOSSIER_PROGRESS,
        "dossier/dossier-progress-1.0.schema.json",
        "Dossier progress update (cập nhật tiến độ hồ sơ, CapNhatTienDoHoSoMC)",
    ),
)


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) if part.isdigit() else -1 for part in version.split("."))


class SchemaRegistry:
    """All schemas, loaded and compiled once."""

    def __init__(self) -> None:
        files: dict[str, bytes] = {}
        self._infos: dict[tuple[str, str], SchemaInfo] = {}
        self._xml: dict[str, etree.XMLSchema] = {}
        self._xml_per_thread = threading.local()
        self._main_thread = threading.get_ident()  # the thread that built the registry uses the first copy
        self._json: dict[str, Draft202012Validator] = {}
        package = resources.files(__package__ or "docbus.schemas")
        for entry in _CATALOG:
            if entry.filename not in files:
                files[entry.filename] = package.joinpath(entry.filename).read_bytes()
            source = files[entry.filename]
            is_xsd = entry.filename.endswith(".xsd")
            if is_xsd and entry.filename not in self._xml:
                self._xml[entry.filename] = _compile_xsd(source)
            if not is_xsd and entry.filename not in self._json:
                self._json[entry.filename] = build_validator(orjson.loads(source))
            self._infos[(entry.id, entry.version)] = SchemaInfo(
                id=entry.id,
                version=entry.version,
                kind=entry.kind,
                media_type=XSD_MEDIA_TYPE if is_xsd else JSON_SCHEMA_MEDIA_TYPE,
                filename=entry.filename,
                sha256=hashlib.sha256(source).hexdigest(),
                title=entry.title,
            )
        self._sources = files

    def list(self) -> builtins.list[SchemaInfo]:
        """Every schema version, sorted by id then version."""
        return sorted(self._infos.values(), key=lambda info: (info.id, _version_key(info.version)))

    def info(self, schema_id: str, version: str | None = None) -> SchemaInfo:
        """One schema version; the latest version of ``schema_id`` when ``version`` is ``None``."""
        if version is not None:
            try:
                return self._infos[(schema_id, version)]
            except KeyError:
                raise UnknownSchema(schema_id, version) from None
        versions = [info for (sid, _), info in self._infos.items() if sid == schema_id]
        if not versions:
            raise UnknownSchema(schema_id)
        return max(versions, key=lambda info: _version_key(info.version))

    def for_kind(self, kind: MessageKind) -> SchemaInfo:
        """The current (latest) schema for a message kind."""
        candidates = [info for info in self._infos.values() if info.kind is kind]
        if not candidates:
            raise UnknownSchema(str(kind))
        return max(candidates, key=lambda info: _version_key(info.version))

    def source(self, schema_id: str, version: str) -> bytes:
        """The schema file's bytes, for download."""
        return self._sources[self.info(schema_id, version).filename]

    def xml_schema(self, schema_id: str, version: str) -> etree.XMLSchema:
        """The compiled XSD for an XML schema id, private to the calling thread."""
        info = self.info(schema_id, version)
        if info.filename not in self._xml:
            raise UnknownSchema(schema_id, version)
        if threading.get_ident() == self._main_thread:
            return self._xml[info.filename]
        compiled: dict[str, etree.XMLSchema] | None = getattr(self._xml_per_thread, "schemas", None)
        if compiled is None:
            compiled = self._xml_per_thread.schemas = {}
        schema = compiled.get(info.filename)
        if schema is None:
            schema = compiled[info.filename] = _compile_xsd(self._sources[info.filename])
        return schema

    def json_validator(self, schema_id: str, version: str) -> Draft202012Validator:
        """The JSON Schema validator for a JSON schema id."""
        info = self.info(schema_id, version)
        try:
            return self._json[info.filename]
        except KeyError:
            raise UnknownSchema(schema_id, version) from None


def _compile_xsd(source: bytes) -> etree.XMLSchema:
    # The XSD is our own file, but parse it like any other input: no DTD, no network, no entities.
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.fromstring(source, parser))
