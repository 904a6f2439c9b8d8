"""Checks on who sends and who receives, shared by edXML and JSON messages.

Every id must parse as an agency id (rule ``organ-id``) and no receiver may appear twice (rule
``duplicate-receiver``, pointing at the second occurrence). Ids are compared in canonical form, so
``28.22.H17`` and ``000.28.22.H17`` are the same receiver.
"""

from __future__ import annotations

from typing import NamedTuple

from lxml import etree

from docbus.errors import FieldError
from docbus.validation.organ_id import InvalidOrganId, OrganId, parse_organ_id
from docbus.validation.paths import element_path, line_of

ORGAN_ID_EXPECTED = "QCVN 102 form V1V2V3.Z1Z2.Y1Y2.Mxx (e.g. 000.00.00.H41) or QĐ 20/2020 form (e.g. H37.02.02)"


class Party(NamedTuple):
    """An agency id as written in a message, and where: a JSON pointer, or the XML element itself (its XPath
    and line are worked out only if there is something to complain about)."""

    text: str
    where: str | etree._Element

    @property
    def path(self) -> str:
        return self.where if isinstance(self.where, str) else element_path(self.where)

    @property
    def line(self) -> int | None:
        return None if isinstance(self.where, str) else line_of(self.where)


def shorten(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_organ_id(party: Party, role_en: str, role_vi: str) -> tuple[OrganId | None, FieldError | None]:
    """The parsed id, or the complaint naming it."""
    try:
        return parse_organ_id(party.text), None
    except InvalidOrganId as exc:
        shown = shorten(party.text.strip())
        if exc.reason == "empty":
            en = f"The {role_en} agency id is empty"
            vi = f"Mã định danh cơ quan {role_vi} bị để trống"
        else:
            en = f"'{shown}' is not a valid {role_en} agency id ({exc.reason})"
            vi = f"Mã định danh cơ quan {role_vi} '{shown}' không hợp lệ"
        return None, FieldError(
            path=party.path,
            rule="organ-id",
            message_en=en,
            message_vi=vi,
            line=party.line,
            expected=ORGAN_ID_EXPECTED,
        )


def check_parties(sender: Party | None, receivers: list[Party], max_receivers: int | None = None) -> list[FieldError]:
    """Complaints about the sender's and receivers' ids, in document order.

    Past ``max_receivers`` one complaint names the first receiver too many and the rest are not looked at: a
    message fans out to every receiver's destination, and its receivers travel in every record and receipt."""
    errors: list[FieldError] = []
    if max_receivers is not None and len(receivers) > max_receivers:
        first_extra = receivers[max_receivers]
        errors.append(
            FieldError(
                path=first_extra.path,
                rule="too-many-receivers",
                message_en=f"The message names {len(receivers)} receivers; at most {max_receivers} are accepted",
                message_vi=f"Thông điệp có {len(receivers)} nơi nhận; chỉ chấp nhận tối đa {max_receivers}",
                line=first_extra.line,
                expected=f"at most {max_receivers} receivers",
            )
        )
        receivers = receivers[:max_receivers]
    if sender is not None:
        _, error = check_organ_id(sender, "sender", "gửi")
        if error is not None:
            errors.append(error)
    first_seen: dict[str, Party] = {}
    for party in receivers:
        organ_id, error = check_organ_id(party, "receiver", "nhận")
        if error is not None:
            errors.append(error)
            continue
        assert organ_id is not None
        earlier = first_seen.setdefault(organ_id.canonical, party)
        if earlier is not party:
            where = f" (line {earlier.line})" if earlier.line is not None else ""
            where_vi = f" (dòng {earlier.line})" if earlier.line is not None else ""
            errors.append(
                FieldError(
                    path=party.path,
                    rule="duplicate-receiver",
                    message_en=f"Receiver {shorten(party.text.strip())} is listed twice; first at {earlier.path}"
                    + where,
                    message_vi=f"Nơi nhận {shorten(party.text.strip())} bị trùng; đã có ở {earlier.path}" + where_vi,
                    line=party.line,
                    expected="each receiver once",
                )
            )
    return errors
