"""``docbus check FILE|DIR ...``: intake's checks on files, offline, with this deployment's policy.

Agencies integrating with the bus hold folders of packets their systems produced; operators get a packet by mail
with "why was this refused?". Both want the gateway's exact verdict without a running gateway, a credential or a
network: the same :class:`~docbus.validation.MessageValidator`, built from the same settings (receivers cap,
XML-DSig policy and trust anchors), one verdict per file. Nothing is stored and nothing is sent. The sender
check (the authenticated agency must be the sender) and routing need a gateway and are not made here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docbus.connectors.client import content_type_for
from docbus.errors import RequestRejected, problem_body
from docbus.validation import MessageValidator

CHECKED_SUFFIXES = frozenset({".xml", ".edxml", ".json"})


@dataclass(frozen=True, slots=True)
class FileVerdict:
    """One file's verdict: what the gateway's sandbox reports about a message it would accept, or the refusal as
    problem+json carries it (``status`` included)."""

    path: Path
    accepted: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"file": str(self.path), "accepted": self.accepted is not None, **(self.accepted or self.problem or {})}


def _unread(path: Path, status: int, title: str, detail: str) -> FileVerdict:
    return FileVerdict(path, problem={"title": title, "status": status, "detail": detail})


def files_under(paths: Iterable[Path]) -> Iterator[Path]:
    """The files named, and under each directory named the files intake takes (.xml, .edxml, .json), sorted."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in CHECKED_SUFFIXES)
        else:
            yield path


def check_file(path: Path, validator: MessageValidator, max_bytes: int) -> FileVerdict:
    """The gateway's verdict on ``path``; a file over the body cap is refused before it is read, as intake does.
    A file that cannot be read has status 0."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            detail = f"{size} bytes is over the {max_bytes}-byte body cap (DOCBUS_MAX_BODY_BYTES)"
            return _unread(path, 413, "Body too large", detail)
        message = validator.validate(path.read_bytes(), content_type_for(path))
    except RequestRejected as exc:
        return FileVerdict(path, problem=problem_body(exc))
    except OSError as exc:
        return _unread(path, 0, "Cannot read the file", str(exc))
    return FileVerdict(path, accepted=message.summary())


def render(verdict: FileVerdict) -> str:
    """One line per file, then one indented line per complaint: what a person reads in a terminal."""
    if verdict.accepted is not None:
        facts = verdict.accepted
        receivers = ",".join(facts["receivers"])
        line = f"ok       {verdict.path}  {facts['kind']} {facts['sender']} -> {receivers}  {facts['business_id']}"
        signature = facts.get("xml_signature")
        if signature is not None:
            line += f"  xml-signature {signature['status']} ({_signature_facts(signature)})"
        return line
    problem = verdict.problem or {}
    lines = [f"refused  {verdict.path}  {problem['status']} {problem['title']}: {problem['detail']}"]
    for error in problem.get("errors", []):
        where = f"line {error['line']} " if error.get("line") else ""
        lines.append(f"         {where}{error.get('path', '')} [{error['rule']}] {error['message_en']}")
    return "\n".join(lines)


def _signature_facts(signature: dict[str, Any]) -> str:
    if signature["status"] != "valid":
        return str(signature.get("reason", ""))
    facts = [signature.get("algorithm", ""), (signature.get("signer") or {}).get("subject", "no certificate")]
    if signature.get("trusted") is not None:
        facts.append("trusted" if signature["trusted"] else "untrusted")
    if not signature.get("covers_document", True):
        facts.append("covers one element only")
    return ", ".join(facts)
