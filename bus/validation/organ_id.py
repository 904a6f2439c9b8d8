"""Agency identifiers (mã định danh cơ quan, tổ chức) in the two forms the axes use.

* QCVN 102:2016 form, lowest level first: ``V1V2V3.Z1Z2.Y1Y2.Mxx`` (13 characters), e.g. ``000.00.00.G22``
  (the Government Office), ``001.02.03.H37``. ``Mxx`` is the level-1 body (one capital letter and two digits:
  G = ministries and government bodies, H = provinces); ``Y1Y2`` is level 2, ``Z1Z2`` level 3, ``V1V2V3``
  level 4; zeros mean "no body at this level". Real senders also write it without the leading zero groups
  (``28.22.H17``); such ids are accepted and padded to the 13-character canonical form.
* Quyết định 20/2020/QĐ-TTg form, level 1 first: ``G12.18``, ``H37.02.02``, ``H41``.

The two forms are not convertible by syntax (the national axis keeps a mapping), so an id keeps its form.
Routing uses :func:`parse_organ_id` too: ``level1`` picks the province or ministry, ``parent`` walks up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

OrganIdForm = Literal["qcvn102", "qd20"]

_LEVEL1 = r"[A-Z][0-9]{2}"
# QCVN 102, lowest level first; the V and Z groups may be left out by the sender (then they are zeros).
_QCVN102 = re.compile(rf"(?:(?:(?P<v>[0-9]{{3}})\.)?(?P<z>[0-9]{{2}})\.)?(?P<y>[0-9]{{2}})\.(?P<m>{_LEVEL1})")
# QĐ 20/2020, level 1 first, then up to four lower levels.
_QD20 = re.compile(rf"(?P<m>{_LEVEL1})(?P<rest>(?:\.[0-9]{{2,3}}){{0,4}})")

_ZERO = frozenset({"00", "000"})


class InvalidOrganId(ValueError):
    """Raised when a string is not an agency identifier in either accepted form."""

    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"{text!r} is not an organ id: {reason}")
        self.text = text
        self.reason = reason


@dataclass(frozen=True, slots=True)
class OrganId:
    """A parsed agency identifier.

    ``levels`` holds the codes from level 1 down; for the QCVN 102 form it always has four entries
    (level 1 code, then Y, Z, V groups, zeros included) so the canonical string can be rebuilt.
    """

    form: OrganIdForm
    levels: tuple[str, ...]

    @property
    def level1(self) -> str:
        """The level-1 body: ``H41`` for anything in Nghệ An."""
        return self.levels[0]

    @property
    def level(self) -> int:
        """1 for a ministry or province itself, 2 for its departments, and so on."""
        if self.form == "qd20":
            return len(self.levels)
        depth = 1
        for index, code in enumerate(self.levels[1:], start=2):
            if code not in _ZERO:
                depth = index
        return depth

    @property
    def canonical(self) -> str:
        """The id written in full in its own form (``000.28.22.H17`` for ``28.22.H17``)."""
        if self.form == "qd20":
            return ".".join(self.levels)
        m, y, z, v = self.levels
        return f"{v}.{z}.{y}.{m}"

    @property
    def parent(self) -> OrganId | None:
        """The body one level up, or ``None`` for a level-1 body."""
        depth = self.level
        if depth == 1:
            return None
        if self.form == "qd20":
            return OrganId("qd20", self.levels[:-1])
        levels = list(self.levels)
        levels[depth - 1] = "000" if depth == 4 else "00"
        return OrganId("qcvn102", tuple(levels))

    def __str__(self) -> str:
        return self.canonical


@lru_cache(maxsize=4096)  # the same few thousand agencies send and receive everything
def parse_organ_id(text: str) -> OrganId:
    """Parse an agency id in QCVN 102 or QĐ 20/2020 form; surrounding whitespace is ignored.

    Raises :class:`InvalidOrganId` naming the reason (empty, not upper case, or not either form).
    """
    value = text.strip()
    if not value:
        raise InvalidOrganId(text, "empty")
    match = _QCVN102.fullmatch(value)
    if match is not None:
        return OrganId(
            "qcvn102",
            (match["m"], match["y"], match["z"] or "00", match["v"] or "000"),
        )
    match = _QD20.fullmatch(value)
    if match is not None:
        rest = match["rest"]
        return OrganId("qd20", (match["m"], *rest[1:].split(".")) if rest else (match["m"],))
    upper = value.upper()
    if upper != value and (_QCVN102.fullmatch(upper) or _QD20.fullmatch(upper)):
        raise InvalidOrganId(text, "letters must be upper case")
    raise InvalidOrganId(text, "expected V1V2V3.Z1Z2.Y1Y2.Mxx (QCVN 102) or Mxx.YY.ZZ (QĐ 20/2020)")
