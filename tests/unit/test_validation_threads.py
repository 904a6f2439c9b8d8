"""One validator serves many threads (the gateway validates big bodies on worker threads): results and error
lists must not leak between them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from docbus.errors import RequestRejected
from docbus.validation import MessageValidator


def _outcome(validator: MessageValidator, body: bytes) -> tuple[str, ...]:
    try:
        message = validator.validate(body, "application/xml")
    except RequestRejected as exc:
        return (type(exc).__name__, *(f"{e.rule}@{e.line}" for e in exc.errors))
    return (message.kind.value, message.sender, message.business_id)


def test_concurrent_validation_gives_the_same_answers(validator: MessageValidator, samples_dir: Path) -> None:
    bodies = [path.read_bytes() for path in sorted(samples_dir.glob("*.edxml"))]
    document = (samples_dir / "edoc_with_attachment_dc0bdef0.edxml").read_bytes()
    # Schema errors come from each thread's own compiled XSD and its error log.
    invalid = document.replace(b"<edXML:Subject>", b"<edXML:Subjekt>x</edXML:Subjekt><edXML:Subject>", 1)
    bodies += [invalid, document.replace(b"<edXML:Priority>0", b"<edXML:Priority>9"), b"<!DOCTYPE x><x/>"]
    expected = [_outcome(validator, body) for body in bodies]
    assert expected[-3][:2] == ("ValidationFailed", "unexpected-element@60")
    assert expected[-2][:2] == ("ValidationFailed", "range@69")
    with ThreadPoolExecutor(max_workers=8) as pool:
        for _ in range(5):
            got = list(pool.map(lambda body: _outcome(validator, body), bodies * 4))
            assert got == expected * 4
