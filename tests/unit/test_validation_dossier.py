"""JSON dossier records and progress updates: the happy path, and every complaint at once with JSON pointers
and rules named after the JSON Schema keyword that failed."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from docbus.envelope import MessageKind, SchemaRef
from docbus.errors import FieldError, NotWellFormed, UnsupportedMediaType, ValidationFailed
from docbus.schemas import SchemaRegistry
from docbus.validation import JsonLimits, MessageValidator, ValidationPolicy

Refusal = Callable[..., list[FieldError]]
JSON = "application/json"

DOSSIER: dict[str, Any] = {
    "schema": "docbus.dossier/1.0",
    "kind": "dossier",
    "from": "000.00.00.H41",
    "to": ["000.00.00.G22", "H41.02"],
    "dossier": {
        "MaHoSo": "000.00.00.H41-240315-0001",
        "MaTTHC": "1.002891.000.00.00.H41",
        "TenTTHC": "Cấp giấy phép xây dựng",
        "ChuHoSo": "Nguyễn Văn An",
        "LoaiDoiTuong": 1,
        "TrichYeuHoSo": "Đề nghị cấp giấy phép xây dựng nhà ở riêng lẻ",
        "NgayTiepNhan": "20240315083000",
        "NgayHenTra": "20240329170000",
        "TrangThaiHoSo": 2,
        "HinhThuc": 0,
        "TaiLieuNop": [{"TenTepDinhKem": "don.pdf", "MaThanhPhanHoSo": "TP01"}],
        "DanhSachHoSoBoSung": [{"NgayHenTraTruoc": "20240329170000", "NgayHenTraMoi": "20240405170000"}],
    },
}

PROGRESS: dict[str, Any] = {
    "kind": "dossier-progress",
    "from": "000.00.00.H41",
    "to": ["000.00.00.G22"],
    "progress": {
        "MaHoSo": "000.00.00.H41-240315-0001",
        "NguoiXuLy": "Trần Thị Bình",
        "ThoiDiemXuLy": "20240318101500",
        "TrangThai": 4,
    },
}


def _body(document: object) -> bytes:
    return orjson.dumps(document)


def _changed(document: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> bytes:
    copied = copy.deepcopy(document)
    change(copied)
    return _body(copied)


def _rules(errors: list[FieldError]) -> list[tuple[str, str]]:
    return [(error.path, error.rule) for error in errors]


def test_dossier_happy_path(validator: MessageValidator) -> None:
    message = validator.validate(_body(DOSSIER), JSON)
    assert message.kind is MessageKind.DOSSIER
    assert message.schema == SchemaRef("docbus.dossier", "1.0")
    assert (message.sender, message.receivers) == ("000.00.00.H41", ("000.00.00.G22", "H41.02"))
    assert message.business_id == "000.00.00.H41-240315-0001"
    assert message.facts == {
        "procedure_code": "1.002891.000.00.00.H41",
        "dossier_status": "2",
        "received_at": "20240315083000",
        "due_at": "20240329170000",
        "subject": "Đề nghị cấp giấy phép xây dựng nhà ở riêng lẻ",
    }


def test_progress_happy_path_with_the_schema_implied_by_kind(validator: MessageValidator) -> None:
    message = validator.validate(_body(PROGRESS), "application/json; charset=utf-8")
    assert message.kind is MessageKind.DOSSIER_PROGRESS
    assert message.schema == SchemaRef("docbus.dossier-progress", "1.0")
    assert message.business_id == "000.00.00.H41-240315-0001"
    assert message.facts == {"dossier_status": "4", "handled_at": "20240318101500", "handled_by": "Trần Thị Bình"}


def test_the_readme_examples_are_valid(validator: MessageValidator) -> None:
    readme = Path(__file__).resolve().parents[2] / "schemas" / "README.md"
    examples = re.findall(r"```json\n(.*?)```", readme.read_text(encoding="utf-8"), re.S)
    kinds = [validator.validate(example.encode(), JSON).kind for example in examples]
    assert kinds == [MessageKind.DOSSIER, MessageKind.DOSSIER_PROGRESS]


def test_missing_ma_ho_so(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d["dossier"].pop("MaHoSo")), JSON)
    assert _rules(errors) == [("/dossier/MaHoSo", "required")]
    assert errors[0].message_en == "Missing required field MaHoSo"
    assert errors[0].message_vi == "Thiếu trường bắt buộc MaHoSo"
    assert errors[0].line is None


def test_wrong_types(refused: Refusal) -> None:
    def change(d: dict[str, Any]) -> None:
        d["dossier"]["TrangThaiHoSo"] = "2"
        d["dossier"]["LoaiDoiTuong"] = 3
        d["to"] = "000.00.00.G22"

    errors = refused(ValidationFailed, _changed(DOSSIER, change), JSON)
    assert _rules(errors) == [
        ("/dossier/LoaiDoiTuong", "enum"),
        ("/dossier/TrangThaiHoSo", "type"),
        ("/to", "type"),
    ]
    by_path = {error.path: error for error in errors}
    assert by_path["/dossier/TrangThaiHoSo"].message_en == "TrangThaiHoSo must be an integer, not a string"
    assert by_path["/dossier/TrangThaiHoSo"].message_vi == "TrangThaiHoSo phải là số nguyên, không phải chuỗi ký tự"
    assert by_path["/dossier/TrangThaiHoSo"].expected == "an integer"
    assert by_path["/dossier/LoaiDoiTuong"].expected == "1, 2"


@pytest.mark.parametrize(
    ("value", "rule"),
    [
        ("2024-03-15", "pattern"),
        ("20241315083000", "pattern"),  # month 13
        ("20240230083000", "format"),  # 30 February
        ("20230229000000", "format"),  # not a leap year
        (20240315083000, "type"),
    ],
)
def test_bad_dates(refused: Refusal, value: object, rule: str) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d["dossier"].update(NgayHenTra=value)), JSON)
    assert _rules(errors) == [("/dossier/NgayHenTra", rule)]
    assert errors[0].expected == "yyyyMMddHHmmss"
    assert "NgayHenTra" in errors[0].message_vi


def test_a_leap_day_is_a_date(validator: MessageValidator) -> None:
    body = _changed(DOSSIER, lambda d: d["dossier"].update(NgayHenTra="20240229170000"))
    assert validator.validate(body, JSON).facts["due_at"] == "20240229170000"


def test_dates_inside_list_items_are_checked(refused: Refusal) -> None:
    body = _changed(DOSSIER, lambda d: d["dossier"]["DanhSachHoSoBoSung"][0].update(NgayHenTraMoi="20240431000000"))
    errors = refused(ValidationFailed, body, JSON)
    assert _rules(errors) == [("/dossier/DanhSachHoSoBoSung/0/NgayHenTraMoi", "format")]


def test_unknown_fields_are_named(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d["dossier"].update(MaHoso="typo")), JSON)
    assert _rules(errors) == [("/dossier/MaHoso", "additionalProperties")]
    assert errors[0].message_vi == "Trường MaHoso không được phép ở đây"


def test_many_problems_are_reported_together(refused: Refusal) -> None:
    def change(d: dict[str, Any]) -> None:
        d["dossier"].pop("MaHoSo")
        d["dossier"]["NgayTiepNhan"] = "15/03/2024"
        d["dossier"]["HinhThuc"] = 2
        d["to"] = ["vxp.saas.03", "000.00.00.G22", "000.00.00.G22"]
        d["from"] = "UBND"

    errors = refused(ValidationFailed, _changed(DOSSIER, change), JSON)
    assert _rules(errors) == [
        ("/dossier/HinhThuc", "enum"),
        ("/dossier/MaHoSo", "required"),
        ("/dossier/NgayTiepNhan", "pattern"),
        ("/from", "organ-id"),
        ("/to/0", "organ-id"),
        ("/to/2", "duplicate-receiver"),
    ]
    assert all(error.message_vi and error.message_vi != error.message_en for error in errors)


def test_kind_and_schema_must_agree(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d.update(kind="dossier-progress")), JSON)
    assert _rules(errors) == [("/kind", "const")]


def test_unknown_schema_version(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d.update(schema="docbus.dossier/9.9")), JSON)
    assert _rules(errors) == [("/schema", "schema-unknown")]
    assert errors[0].expected == "docbus.dossier/1.0, docbus.dossier-progress/1.0"


def test_an_edxml_schema_is_not_a_json_schema(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d.update(schema="qcvn102.edoc/2016.1")), JSON)
    assert _rules(errors) == [("/schema", "schema-unknown")]


@pytest.mark.parametrize(
    ("document", "rule"),
    [({"from": "000.00.00.H41"}, "required"), ({"kind": "edoc"}, "enum"), ({"kind": 3}, "enum")],
)
def test_kind_is_needed(refused: Refusal, document: dict[str, object], rule: str) -> None:
    errors = refused(ValidationFailed, _body(document), JSON)
    assert _rules(errors) == [("/kind", rule)]
    assert errors[0].expected == "dossier, dossier-progress"


def test_only_kind_lists_everything_missing(refused: Refusal) -> None:
    errors = refused(ValidationFailed, b'{"kind": "dossier"}', JSON)
    assert _rules(errors) == [("/dossier", "required"), ("/from", "required"), ("/to", "required")]


@pytest.mark.parametrize(("body", "got"), [(b"[1, 2, 3]", "an array"), (b'"dossier"', "a string"), (b"3", "integer")])
def test_the_message_must_be_an_object(refused: Refusal, body: bytes, got: str) -> None:
    errors = refused(ValidationFailed, body, JSON)
    assert [(e.path, e.rule, e.expected) for e in errors] == [("", "type", "object")]
    assert errors[0].message_en == f"The message must be a JSON object, not {got}"


@pytest.mark.parametrize(
    ("body", "line", "column"),
    [(b"{", 1, 2), (b'{\n  "kind": "dossier",\n  "from": }', 3, 11), (b'{"a": 1} x', 1, 10)],
)
def test_broken_json_names_the_place(refused: Refusal, body: bytes, line: int, column: int) -> None:
    errors = refused(NotWellFormed, body, JSON)
    assert [(e.rule, e.line, e.column) for e in errors] == [("not-well-formed", line, column)]
    assert errors[0].message_vi.startswith("Nội dung không phải JSON hợp lệ")


def test_invalid_utf8_in_json_names_the_place(refused: Refusal) -> None:
    errors = refused(NotWellFormed, b'{\n  "kind": "dossier",\n  "from": "H\xff41"\n}', JSON)
    assert [(e.rule, e.line, e.column) for e in errors] == [("invalid-utf8", 3, 13)]


@pytest.mark.parametrize("body", [b"", b"  \n "])
def test_empty_json_body(refused: Refusal, body: bytes) -> None:
    assert _rules(refused(NotWellFormed, body, JSON)) == [("", "empty-body")]


def test_a_utf8_byte_order_mark_is_tolerated(validator: MessageValidator) -> None:
    assert validator.validate(b"\xef\xbb\xbf" + _body(PROGRESS), JSON).kind is MessageKind.DOSSIER_PROGRESS


def test_depth_is_bounded(refused: Refusal, registry: SchemaRegistry) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    assert _rules(refused(NotWellFormed, deep, JSON)) == [("", "max-depth")]
    nested: dict[str, Any] = copy.deepcopy(DOSSIER)
    item: dict[str, Any] = nested["dossier"]["TaiLieuNop"][0]
    for _ in range(40):
        item["x"] = {}
        item = item["x"]
    errors = refused(NotWellFormed, _body(nested), JSON)
    assert errors[0].rule == "max-depth"
    assert errors[0].path.startswith("/dossier/TaiLieuNop/0/x/x/")
    roomy = MessageValidator(registry, json_limits=JsonLimits(max_depth=64))
    assert roomy.validate(_body(nested), JSON).business_id == "000.00.00.H41-240315-0001"


def test_json_media_type_only(refused: Refusal) -> None:
    errors = refused(UnsupportedMediaType, _body(DOSSIER), "text/json")
    assert errors[0].rule == "media-type"


def test_json_bodies_sent_as_xml_are_not_well_formed_xml(refused: Refusal) -> None:
    errors = refused(NotWellFormed, _body(DOSSIER), "application/xml")
    assert errors[0].rule == "not-well-formed"
    assert errors[0].line == 1


def test_complaints_come_in_document_order(refused: Refusal) -> None:
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d.update(to=["000.00.00.G22"] * 11)), JSON)
    assert [error.path for error in errors] == [f"/to/{index}" for index in range(1, 11)]
    assert {error.rule for error in errors} == {"duplicate-receiver"}


def test_a_date_with_a_final_newline_is_refused(refused: Refusal) -> None:
    body = _changed(DOSSIER, lambda d: d["dossier"].update(NgayHenTra="20240329170000\n"))
    assert _rules(refused(ValidationFailed, body, JSON)) == [("/dossier/NgayHenTra", "format")]


def test_a_dossier_for_more_receivers_than_the_cap_is_refused(refused: Refusal, registry: SchemaRegistry) -> None:
    capped = MessageValidator(registry, policy=ValidationPolicy(max_receivers=2))
    receivers = ["000.00.00.G22", "H41.02", "000.00.00.G17"]
    assert len(capped.validate(_changed(DOSSIER, lambda d: d.update(to=receivers[:2])), JSON).receivers) == 2
    errors = refused(ValidationFailed, _changed(DOSSIER, lambda d: d.update(to=receivers)), JSON, using=capped)
    assert _rules(errors) == [("/to/2", "too-many-receivers")]


@pytest.mark.parametrize(
    ("body", "name", "line", "column"),
    [
        # The sender named twice: the bus would check the last, a first-wins reader downstream would see the first.
        (b'{"kind": "dossier",\n "from": "000.00.00.G22",\n "from": "000.00.00.H41"}', "from", 3, 2),
        (b'{"kind": "dossier", "dossier": {"MaHoSo": "A", "ChuHoSo": "x", "MaHoSo": "B"}}', "MaHoSo", 1, 64),
        (b'{"kind": "dossier", "to": [{"a": 1, "a": 2}]}', "a", 1, 37),
    ],
)
def test_a_member_named_twice_in_one_object_is_refused(
    refused: Refusal, body: bytes, name: str, line: int, column: int
) -> None:
    errors = refused(NotWellFormed, body, JSON)
    assert [(e.rule, e.line, e.column) for e in errors] == [("duplicate-member", line, column)]
    assert errors[0].message_en == f"The member name {name!r} appears twice in one object"
    assert errors[0].message_vi.startswith("Tên thuộc tính")


def test_the_same_name_in_different_objects_is_fine(validator: MessageValidator) -> None:
    # "MaHoSo" in the record and "TenTepDinhKem" in each of two attachments: no object names a member twice.
    document = copy.deepcopy(DOSSIER)
    document["dossier"]["TaiLieuNop"].append({"TenTepDinhKem": "ban-ve.pdf", "MaThanhPhanHoSo": "TP02"})
    assert validator.validate(_body(document), JSON).business_id == "000.00.00.H41-240315-0001"
