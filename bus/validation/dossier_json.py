"""JSON messages: dossier records (hồ sơ, ``dossier``) and dossier progress updates (``dossier-progress``).

The body is one JSON object naming its kind (``"kind": "dossier"``) and optionally its schema
(``"schema": "docbus.dossier/1.0"``), the sending agency (``from``), the receivers (``to``) and the record
(``dossier`` or ``progress``); ``schemas/README.md`` shows both shapes. The object is checked against its JSON
Schema (every error, not just the first), then the agency ids and duplicate receivers are checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import orjson

from docbus.envelope import MessageKind, ValidatedMessage
from docbus.errors import FieldError, NotWellFormed, ValidationFailed
from docbus.schemas.registry import SchemaInfo, SchemaRegistry, UnknownSchema
from docbus.validation.json_errors import complaints, json_type
from docbus.validation.parties import Party, check_parties, shorten
from docbus.validation.safe_xml import position

JSON_KINDS = {MessageKind.DOSSIER: "dossier", MessageKind.DOSSIER_PROGRESS: "progress"}
_UTF8_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class JsonLimits:
    """``max_depth``: nesting of objects and arrays (the top-level object is depth 1)."""

    max_depth: int = 32
    max_errors: int = 100

    def __post_init__(self) -> None:
        if not 1 <= self.max_depth <= 1000:
            raise ValueError("max_depth must be between 1 and 1000")  # orjson itself stops at 1024
        if self.max_errors < 1:
            raise ValueError("max_errors must be at least 1")


class DossierValidator:
    """Validates JSON dossier messages and extracts their routing facts."""

    def __init__(self, registry: SchemaRegistry, limits: JsonLimits, *, max_receivers: int | None = None) -> None:
        self._registry = registry
        self._limits = limits
        self._max_receivers = max_receivers

    def validate(self, body: bytes) -> ValidatedMessage:
        document = self._parse(body)
        info = self._schema_for(document)
        validator = self._registry.json_validator(info.id, info.version)
        errors = [complaint for error in validator.iter_errors(document) for complaint in complaints(error)]

        sender_text = document.get("from")
        sender = Party(sender_text, "/from") if isinstance(sender_text, str) and sender_text else None
        receiver_list = document.get("to")
        receivers = [
            Party(text, f"/to/{index}")
            for index, text in enumerate(receiver_list if isinstance(receiver_list, list) else [])
            if isinstance(text, str) and text
        ]
        errors += check_parties(sender, receivers, self._max_receivers)
        if errors:
            errors.sort(key=_document_order)
            errors = errors[: self._limits.max_errors]
            raise ValidationFailed(
                f"{info.kind} message does not conform to {info.id} {info.version}: {len(errors)} error(s); "
                f"first: {errors[0].message_en}",
                errors,
            )
        assert sender is not None
        record: dict[str, Any] = document[JSON_KINDS[info.kind]]
        return ValidatedMessage(
            kind=info.kind,
            schema=info.ref,
            sender=sender.text.strip(),
            receivers=tuple(party.text.strip() for party in receivers),
            business_id=str(record["MaHoSo"]).strip(),
            facts=_facts(info.kind, record),
        )

    # ---------------------------------------------------------------------------------------- parsing

    def _parse(self, body: bytes) -> dict[str, Any]:
        if body.startswith(_UTF8_BOM):
            body = body[len(_UTF8_BOM) :]
        if not body.strip():
            raise _not_well_formed("empty-body", "The body is empty", "Nội dung thông điệp trống", 1, 1)
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise _decode_error(body, exc) from None
        if not isinstance(document, dict):
            got_en = {"array": "an array", "string": "a string"}.get(json_type(document), json_type(document))
            error = FieldError(
                path="",
                rule="type",
                message_en=f"The message must be a JSON object, not {got_en}",
                message_vi="Thông điệp phải là một đối tượng JSON",
                expected="object",
            )
            raise ValidationFailed(error.message_en, [error])
        if body.count(b"{") + body.count(b"[") > self._limits.max_depth:
            self._check_depth(document)
        _refuse_duplicate_members(body)
        return document

    def _check_depth(self, document: dict[str, Any]) -> None:
        limit = self._limits.max_depth
        stack: list[tuple[Any, int, str]] = [(document, 1, "")]
        while stack:
            value, depth, path = stack.pop()
            if depth > limit:
                error = FieldError(
                    path=path,
                    rule="max-depth",
                    message_en=f"Objects and arrays are nested deeper than {limit} levels",
                    message_vi=f"Các đối tượng và mảng lồng nhau quá {limit} cấp",
                    expected=f"at most {limit} levels",
                )
                raise NotWellFormed(error.message_en, [error])
            if isinstance(value, dict):
                stack.extend(
                    (child, depth + 1, f"{path}/{key}")
                    for key, child in value.items()
                    if isinstance(child, dict | list)
                )
            elif isinstance(value, list):
                stack.extend(
                    (child, depth + 1, f"{path}/{index}")
                    for index, child in enumerate(value)
                    if isinstance(child, dict | list)
                )

    def _schema_for(self, document: dict[str, Any]) -> SchemaInfo:
        declared = document.get("schema")
        if isinstance(declared, str):
            schema_id, _, version = declared.partition("/")
            try:
                info = self._registry.info(schema_id, version or None)
            except UnknownSchema:
                info = None
            if info is None or info.kind not in JSON_KINDS:
                known = ", ".join(f"{i.id}/{i.version}" for i in self._registry.list() if i.kind in JSON_KINDS)
                error = FieldError(
                    path="/schema",
                    rule="schema-unknown",
                    message_en=f"Unknown schema {shorten(declared)}",
                    message_vi=f"Lược đồ {shorten(declared)} không được hỗ trợ",
                    expected=known,
                )
                raise ValidationFailed(error.message_en, [error])
            return info
        kind = document.get("kind")
        kinds = {str(k): k for k in JSON_KINDS}
        if isinstance(kind, str) and kind in kinds:
            return self._registry.for_kind(kinds[kind])
        expected = ", ".join(kinds)
        if kind is None:
            error = FieldError(
                path="/kind",
                rule="required",
                message_en="Missing required field kind (or schema): what kind of message is this?",
                message_vi="Thiếu trường bắt buộc kind (hoặc schema) cho biết loại thông điệp",
                expected=expected,
            )
        else:
            error = FieldError(
                path="/kind",
                rule="enum",
                message_en=f"Unknown kind {shorten(str(kind))}",
                message_vi=f"Loại thông điệp {shorten(str(kind))} không được hỗ trợ",
                expected=expected,
            )
        raise ValidationFailed(error.message_en, [error])


def _document_order(error: FieldError) -> tuple[tuple[int, int, str], ...]:
    """Sort key for JSON pointers that puts ``/to/2`` before ``/to/10``."""
    return tuple((1, int(part), "") if part.isdigit() else (0, 0, part) for part in error.path.split("/"))


def _not_well_formed(
    rule: str, en: str, vi: str, line: int | None, column: int | None, *, expected: str | None = None
) -> NotWellFormed:
    error = FieldError(path="", rule=rule, message_en=en, message_vi=vi, line=line, column=column, expected=expected)
    where = f" (line {line}, column {column})" if line is not None else ""
    return NotWellFormed(en + where, [error])


def _decode_error(body: bytes, exc: orjson.JSONDecodeError) -> NotWellFormed:
    if "UTF-8" in exc.msg:
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as bad:
            line, column = position(body, bad.start)
        else:
            line, column = 1, 1
        return _not_well_formed(
            "invalid-utf8",
            "Invalid UTF-8 byte sequence",
            "Nội dung có chuỗi byte không phải UTF-8 hợp lệ",
            line,
            column,
        )
    if "depth" in exc.msg:
        return _not_well_formed(
            "max-depth",
            "Objects and arrays are nested too deeply",
            "Các đối tượng và mảng lồng nhau quá sâu",
            exc.lineno,
            exc.colno,
        )
    return _not_well_formed(
        "not-well-formed",
        f"The body is not valid JSON: {exc.msg}",
        f"Nội dung không phải JSON hợp lệ: {exc.msg}",
        exc.lineno,
        exc.colno,
    )


class _DuplicateMember(Exception):
    def __init__(self, name: str) -> None:
        self.name = name


def _unique_members(pairs: list[tuple[str, Any]]) -> None:
    names = {name for name, _ in pairs}
    if len(names) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise _DuplicateMember(name)
            seen.add(name)


def _refuse_duplicate_members(body: bytes) -> None:
    """Refuses an object that names a member twice (RFC 8259 leaves its meaning open; I-JSON, RFC 7493, forbids
    it). orjson keeps the last value, and so does this bus when it routes and checks the sender; a system
    downstream that keeps the first would read another sender, receiver or dossier than the one this bus
    checked, from the very bytes it forwards. The standard parser's hook sees each object's members in order;
    only objects are built, as ``None``, so the second pass costs little memory. Runs after orjson accepted the
    body, so the two parsers never disagree on what is JSON."""
    try:
        json.loads(body, object_pairs_hook=_unique_members)
    except _DuplicateMember as exc:
        raise _not_well_formed(
            "duplicate-member",
            f"The member name {exc.name!r} appears twice in one object",
            f"Tên thuộc tính {exc.name!r} xuất hiện hai lần trong cùng một đối tượng",
            *_second_occurrence(body, exc.name),
            expected="each member name once per object",
        ) from None
    except (RecursionError, ValueError) as exc:  # what orjson accepted and this parser cannot follow
        raise _not_well_formed(
            "not-well-formed",
            f"The body could not be checked for repeated member names: {exc}",
            f"Không kiểm tra được tên thuộc tính lặp lại trong nội dung: {exc}",
            None,
            None,
        ) from None


def _second_occurrence(body: bytes, name: str) -> tuple[int | None, int | None]:
    """Where the name is written a second time (a hint: the same name in another object may come first)."""
    written = json.dumps(name, ensure_ascii=False).encode()
    first = body.find(written)
    second = body.find(written, first + 1) if first >= 0 else -1
    return position(body, second) if second >= 0 else (None, None)


def _facts(kind: MessageKind, record: dict[str, Any]) -> dict[str, str]:
    if kind is MessageKind.DOSSIER:
        wanted = {
            "procedure_code": "MaTTHC",
            "dossier_status": "TrangThaiHoSo",
            "received_at": "NgayTiepNhan",
            "due_at": "NgayHenTra",
            "subject": "TrichYeuHoSo",
        }
    else:
        wanted = {"dossier_status": "TrangThai", "handled_at": "ThoiDiemXuLy", "handled_by": "NguoiXuLy"}
    return {
        fact: shorten(str(record[field]), 500) for fact, field in wanted.items() if record.get(field) not in (None, "")
    }
