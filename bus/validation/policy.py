"""Business rules that are configuration, not schema: which status codes exist, what counts as an alias."""

from __future__ import annotations

from dataclasses import dataclass, field

from docbus.validation.xml_signature import SignaturePolicy, TrustAnchors

# QCVN 102 receipts: 01 arrived, 02 refused, 03 accepted, 04 assigned, 05 processing, 06 finished,
# 13 sender asks the document back, 15 recipient agrees, 16 recipient refuses.
STANDARD_STATUS_CODES = frozenset({"01", "02", "03", "04", "05", "06", "13", "15", "16"})


@dataclass(frozen=True, slots=True)
class ValidationPolicy:
    """What the semantic checks accept.

    ``status_code_aliases`` maps a code some integrations send to the standard one (one sends 14 for "agree",
    which is 15); the validated message carries the standard code and keeps the sent one in its facts.
    ``check_attachments``: every manifest reference must have its attachment, and attachment content must
    be base64. ``base64_check_chars``: how much of each attachment's content is checked for base64 characters,
    half from its start and half from its end (``None``: all of it). A full check costs about a nanosecond a
    byte, several times the XSD's cost for a packet with large attachments; the ends catch what real senders
    get wrong (templates' placeholders, another encoding, binary pasted in), the receiver decodes the rest.
    ``max_receivers``: the most receivers one message may name (``None``: no limit); a message fans out to each.
    ``signatures``: what intake does with an edXML packet's XML-DSig signature, and ``trust_anchors`` the
    certificates a signer's chain must reach to count as trusted (see :mod:`docbus.validation.xml_signature`).
    """

    status_codes: frozenset[str] = STANDARD_STATUS_CODES
    status_code_aliases: dict[str, str] = field(default_factory=lambda: {"14": "15"})
    check_attachments: bool = True
    base64_check_chars: int | None = 16_384
    max_receivers: int | None = 1_000
    signatures: SignaturePolicy = SignaturePolicy.RECORD
    trust_anchors: TrustAnchors | None = None

    def __post_init__(self) -> None:
        unknown = {target for target in self.status_code_aliases.values() if target not in self.status_codes}
        if unknown:
            raise ValueError(f"status code aliases point at unknown codes: {sorted(unknown)}")
        if self.max_receivers is not None and self.max_receivers < 1:
            raise ValueError("max_receivers must be at least 1 (or None for no limit)")
        if self.base64_check_chars is not None and self.base64_check_chars < 2:
            raise ValueError("base64_check_chars must be at least 2 (or None for all)")

    def normalize_status_code(self, code: str) -> str | None:
        """The standard code for ``code``, or ``None`` when it is not accepted."""
        code = self.status_code_aliases.get(code, code)
        return code if code in self.status_codes else None

    @property
    def accepted_status_codes(self) -> list[str]:
        return sorted(self.status_codes | self.status_code_aliases.keys())
