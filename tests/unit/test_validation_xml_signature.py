"""XML-DSig signatures on edXML packets: verified against packets signed by another implementation (signxml),
hostile signatures refused without side effects, and the intake policies."""

from __future__ import annotations

import base64
import socket
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod

from docbus.errors import ValidationFailed
from docbus.schemas import SchemaRegistry
from docbus.validation import MessageValidator, ValidationPolicy
from docbus.validation.xml_signature import (
    DSIG_NS,
    SignaturePolicy,
    SignatureStatus,
    SignatureVerifier,
    TrustAnchors,
)

from ..xml_signing import Identity, identity, sign_packet

DS = {"ds": DSIG_NS}


@pytest.fixture(scope="module")
def agency() -> Identity:
    return identity("Văn phòng Chính phủ")


@pytest.fixture(scope="module")
def signed(edoc_text: str, agency: Identity) -> bytes:
    return sign_packet(edoc_text.encode(), agency)


def check(packet: bytes, anchors: TrustAnchors | None = None):  # type: ignore[no-untyped-def]
    verifier = SignatureVerifier(anchors)
    root = etree.fromstring(packet)
    element = verifier.find(root.find("{*}edXMLEnvelope/{*}edXMLHeader"))
    return None if element is None else verifier.check(element)


def validator_with(registry: SchemaRegistry, policy: SignaturePolicy, anchors: TrustAnchors | None = None):  # type: ignore[no-untyped-def]
    return MessageValidator(registry, policy=ValidationPolicy(signatures=policy, trust_anchors=anchors))


def resigned_value(packet: bytes, mutate) -> bytes:  # type: ignore[no-untyped-def]
    root = etree.fromstring(packet)
    mutate(root)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def test_a_signed_packet_verifies_and_names_its_signer(signed: bytes, agency: Identity) -> None:
    found = check(signed)
    assert found is not None
    assert found.status is SignatureStatus.VALID, found
    assert found.covers_document
    assert found.algorithm == "rsa-sha256"
    assert found.signer is not None
    assert found.signer["subject"] == "CN=Văn phòng Chính phủ,C=VN"
    assert found.signer["serial"] == format(agency.cert.serial_number, "x")
    assert found.signer["valid_now"] is True
    assert found.trusted is None  # no anchors configured: integrity, not identity


@pytest.mark.parametrize(
    ("method", "digest", "c14n", "elliptic", "expected"),
    [
        (SignatureMethod.RSA_SHA1, DigestAlgorithm.SHA1, CanonicalizationMethod.CANONICAL_XML_1_0, False, "rsa-sha1"),
        (
            SignatureMethod.RSA_SHA512,
            DigestAlgorithm.SHA512,
            CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
            False,
            "rsa-sha512",
        ),
        (
            SignatureMethod.ECDSA_SHA256,
            DigestAlgorithm.SHA256,
            CanonicalizationMethod.CANONICAL_XML_1_0_WITH_COMMENTS,
            True,
            "ec-sha256",
        ),
    ],
)
def test_the_algorithms_signing_tools_use(  # type: ignore[no-untyped-def]
    edoc_text: str, method, digest, c14n, elliptic: bool, expected: str
) -> None:
    signer = identity("Sở Nội vụ", elliptic=elliptic)
    found = check(sign_packet(edoc_text.encode(), signer, method=method, digest=digest, c14n=c14n))
    assert found is not None and found.status is SignatureStatus.VALID, found
    assert found.algorithm == expected


def test_a_change_after_signing_breaks_the_digest(signed: bytes) -> None:
    tampered = signed.replace("kết nối".encode(), "ngắt kết nối".encode(), 1)
    assert tampered != signed
    found = check(tampered)
    assert found is not None
    assert (found.status, found.reason) == (SignatureStatus.INVALID, "digest-mismatch")
    assert found.line is not None


def test_whitespace_outside_the_signature_is_signed_too(signed: bytes) -> None:
    """The text after the Signature element is not part of it: the check must keep it (and the tree intact)."""
    spaced = signed.replace(b"</ds:Signature>", b"</ds:Signature>\n      ", 1)
    found = check(spaced)
    assert found is not None and found.reason == "digest-mismatch"
    root = etree.fromstring(signed)
    before = etree.tostring(root)
    verifier = SignatureVerifier()
    element = verifier.find(root.find("{*}edXMLEnvelope/{*}edXMLHeader"))
    assert element is not None
    assert verifier.check(element).status is SignatureStatus.VALID
    assert etree.tostring(root) == before


def test_a_forged_signature_value_does_not_verify(signed: bytes) -> None:
    def flip(root: etree._Element) -> None:
        value = root.find(".//ds:SignatureValue", DS)
        raw = bytearray(base64.b64decode("".join(value.text.split())))
        raw[10] ^= 0xFF
        value.text = base64.b64encode(bytes(raw)).decode()

    found = check(resigned_value(signed, flip))
    assert found is not None
    assert (found.status, found.reason) == (SignatureStatus.INVALID, "signature-mismatch")


def test_someone_elses_certificate_does_not_verify(signed: bytes) -> None:
    impostor = identity("Văn phòng Chính phủ")  # same name, another key

    def swap(root: etree._Element) -> None:
        cert = root.find(".//ds:X509Certificate", DS)
        cert.text = base64.b64encode(impostor.cert.public_bytes(serialization.Encoding.DER)).decode()

    found = check(resigned_value(signed, swap))
    assert found is not None and found.reason == "signature-mismatch"


def test_a_reference_by_id_and_wrapping_it(edoc_text: str, agency: Identity) -> None:
    """A reference by Id covers that element only (recorded), and must find exactly one element: an attacker
    who adds a second element carrying the same Id gets the packet refused."""
    text = edoc_text.replace("<edXML:MessageHeader>", '<edXML:MessageHeader Id="hdr">', 1)
    signed = sign_packet(text.encode(), agency, reference_uri="#hdr")
    found = check(signed)
    assert found is not None and found.status is SignatureStatus.VALID, found
    assert found.covers_document is False
    # Outside the signed element nothing is protected; inside it, everything is.
    assert check(signed.replace(b"cong-van.pdf", b"cong-van-2.pdf", 1)).status is SignatureStatus.VALID  # type: ignore[union-attr]
    assert check(signed.replace("kết nối".encode(), b"x", 1)).reason == "digest-mismatch"  # type: ignore[union-attr]

    def second_id(root: etree._Element) -> None:
        root.find("{*}edXMLEnvelope/{*}edXMLBody").set("Id", "hdr")

    found = check(resigned_value(signed, second_id))
    assert found is not None
    assert (found.status, found.reason) == (SignatureStatus.INVALID, "reference-target")


def test_an_external_reference_is_never_fetched(signed: bytes) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        port = listener.getsockname()[1]

        def external(root: etree._Element) -> None:
            root.find(".//ds:Reference", DS).set("URI", f"http://127.0.0.1:{port}/document.xml")

        found = check(resigned_value(signed, external))
        assert found is not None
        assert (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "reference-uri")
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected


@pytest.mark.parametrize(
    "algorithm",
    ["http://www.w3.org/TR/1999/REC-xslt-19991116", "http://www.w3.org/TR/1999/REC-xpath-19991116"],
)
def test_xslt_and_xpath_transforms_are_not_run(signed: bytes, algorithm: str) -> None:
    def add_transform(root: etree._Element) -> None:
        transforms = root.find(".//ds:Transforms", DS)
        etree.SubElement(transforms, f"{{{DSIG_NS}}}Transform", Algorithm=algorithm)

    found = check(resigned_value(signed, add_transform))
    assert found is not None
    assert (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "transform")


def test_no_key_and_oversized_values(signed: bytes) -> None:
    def drop_key(root: etree._Element) -> None:
        key_info = root.find(".//ds:KeyInfo", DS)
        key_info.getparent().remove(key_info)

    found = check(resigned_value(signed, drop_key))
    assert found is not None and (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "no-key")

    def huge(root: etree._Element) -> None:
        root.find(".//ds:SignatureValue", DS).text = "A" * 200_000

    found = check(resigned_value(signed, huge))
    assert found is not None and (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "too-large")


def test_what_real_senders_send(samples_dir: Path) -> None:
    """Their Signature sits in the edXML namespace (not XML-DSig's): recorded as invalid; receipts are unsigned."""
    for path in sorted(samples_dir.glob("*.edxml")):
        if path.name == "edoc.edxml":
            continue  # not well-formed (its own test elsewhere)
        found = check(path.read_bytes())
        if path.name.startswith("status"):
            assert found is None, path.name
        else:
            assert found is not None, path.name
            assert (found.status, found.reason) == (SignatureStatus.INVALID, "not-xmldsig"), path.name


def test_trust_is_judged_against_the_configured_anchors(edoc_text: str, tmp_path: Path) -> None:
    root_ca = identity("Root CA Chính phủ", ca=True)
    intermediate = identity("CA cấp 2", root_ca, ca=True)
    leaf = identity("Sở Tư pháp", intermediate)
    anchors_file = tmp_path / "anchors.pem"
    anchors_file.write_bytes(root_ca.cert_pem)
    anchors = TrustAnchors.from_pem_file(anchors_file)

    with_chain = sign_packet(edoc_text.encode(), leaf, chain=(intermediate,))
    found = check(with_chain, anchors)
    assert found is not None and found.status is SignatureStatus.VALID and found.trusted is True

    without_chain = sign_packet(edoc_text.encode(), leaf)  # the intermediate is missing: no path to the root
    found = check(without_chain, anchors)
    assert found is not None and found.status is SignatureStatus.VALID and found.trusted is False

    self_signed = sign_packet(edoc_text.encode(), identity("Root CA Chính phủ"))  # same name as the anchor
    found = check(self_signed, anchors)
    assert found is not None and found.trusted is False


def test_record_accepts_and_reports(registry: SchemaRegistry, signed: bytes) -> None:
    validator = validator_with(registry, SignaturePolicy.RECORD)
    message = validator.validate(signed, "application/xml")
    assert message.xml_signature is not None and message.xml_signature["status"] == "valid"
    tampered = validator.validate(signed.replace("kết nối".encode(), b"x", 1), "application/xml")
    assert tampered.xml_signature is not None and tampered.xml_signature["reason"] == "digest-mismatch"


def test_reject_invalid_refuses_a_broken_signature_and_takes_unsigned(
    registry: SchemaRegistry, signed: bytes, edoc_text: str
) -> None:
    validator = validator_with(registry, SignaturePolicy.REJECT_INVALID)
    assert validator.validate(signed, "application/xml").xml_signature is not None
    assert validator.validate(edoc_text.encode(), "application/xml").xml_signature is None
    with pytest.raises(ValidationFailed) as caught:
        validator.validate(signed.replace("kết nối".encode(), b"x", 1), "application/xml")
    (error,) = caught.value.errors
    assert error.rule == "signature-invalid"
    assert error.path == "/edXML/edXMLEnvelope/edXMLHeader/Signature"
    assert error.line is not None and error.message_vi


def test_require_refuses_unsigned_documents_and_untrusted_signers(
    registry: SchemaRegistry, edoc_text: str, status_text: str, tmp_path: Path
) -> None:
    validator = validator_with(registry, SignaturePolicy.REQUIRE)
    with pytest.raises(ValidationFailed) as caught:
        validator.validate(edoc_text.encode(), "application/xml")
    assert [e.rule for e in caught.value.errors] == ["signature-required"]
    # Receipts are held to reject-invalid: axes and agency systems often sign none.
    assert validator.validate(status_text.encode(), "application/xml").xml_signature is None
    signed_receipt = sign_packet(status_text.encode(), identity("UBND tỉnh"))
    assert validator.validate(signed_receipt, "application/xml").xml_signature["status"] == "valid"  # type: ignore[index]
    broken_receipt = signed_receipt.replace(b"<Description>", b"<Description>x", 1)
    assert broken_receipt != signed_receipt
    with pytest.raises(ValidationFailed) as caught:
        validator.validate(broken_receipt, "application/xml")
    assert [e.rule for e in caught.value.errors] == ["signature-invalid"]

    root_ca = identity("Root CA", ca=True)
    anchors_file = tmp_path / "anchors.pem"
    anchors_file.write_bytes(root_ca.cert_pem)
    trusting = validator_with(registry, SignaturePolicy.REQUIRE, TrustAnchors.from_pem_file(anchors_file))
    issued = sign_packet(edoc_text.encode(), identity("Sở Y tế", root_ca))
    assert trusting.validate(issued, "application/xml").xml_signature["trusted"] is True  # type: ignore[index]
    with pytest.raises(ValidationFailed) as caught:
        trusting.validate(sign_packet(edoc_text.encode(), identity("Sở Y tế")), "application/xml")
    assert [e.rule for e in caught.value.errors] == ["signature-untrusted"]


def test_a_packet_that_does_not_conform_is_refused_for_that_first(registry: SchemaRegistry, signed: bytes) -> None:
    validator = validator_with(registry, SignaturePolicy.REQUIRE)
    broken = signed.replace(b"<edXML:Subject>", b"<edXML:Subjekt>", 1).replace(
        b"</edXML:Subject>", b"</edXML:Subjekt>", 1
    )
    with pytest.raises(ValidationFailed) as caught:
        validator.validate(broken, "application/xml")
    assert "signature-invalid" not in {e.rule for e in caught.value.errors}


def test_unreadable_trust_anchors_stop_the_start(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    for path in (empty, tmp_path / "missing.pem"):
        with pytest.raises(ValueError, match=str(path)):
            TrustAnchors.from_pem_file(path)


def test_references_are_capped_and_each_target_canonicalized_once(
    signed: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every reference may name the whole packet: four of them cost one canonicalization, a fifth is refused."""
    import docbus.validation.xml_signature as module

    calls = []
    real = module._canonical_without
    monkeypatch.setattr(module, "_canonical_without", lambda *args: calls.append(args) or real(*args))

    def copies(count: int):  # type: ignore[no-untyped-def]
        def add(root: etree._Element) -> None:
            reference = root.find(".//ds:Reference", DS)
            for _ in range(count):
                reference.addnext(etree.fromstring(etree.tostring(reference)))

        return add

    found = check(resigned_value(signed, copies(3)))
    assert found is not None
    assert found.reason == "signature-mismatch"  # every digest matched; SignedInfo itself was changed
    assert len(calls) == 1
    found = check(resigned_value(signed, copies(4)))
    assert found is not None
    assert (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "too-many-references")


def test_what_libraries_refuse_is_an_outcome_not_an_error(registry: SchemaRegistry, edoc_text: str) -> None:
    """C14N refuses relative namespace URIs; a certificate may hold a key nothing here reads. Either way intake
    answers with the outcome (or, under a strict policy, a 422), never with a server error."""
    signed = sign_packet(edoc_text.encode(), identity("Sở Tài chính"))
    hostile = signed.replace(b"<edXML:Subject>", b'<edXML:Subject xmlns:rel="relative/namespace">', 1)
    assert hostile != signed
    found = check(hostile)
    assert found is not None and (found.status, found.reason) == (SignatureStatus.UNSUPPORTED, "canonicalization")
    with pytest.raises(ValidationFailed) as caught:
        validator_with(registry, SignaturePolicy.REJECT_INVALID).validate(hostile, "application/xml")
    assert [e.rule for e in caught.value.errors] == ["signature-unsupported"]

    def unreadable_key(root: etree._Element) -> None:
        root.find(".//ds:X509Certificate", DS).text = base64.b64encode(b"not a certificate").decode()

    found = check(resigned_value(signed, unreadable_key))
    assert found is not None and (found.status, found.reason) == (SignatureStatus.INVALID, "malformed")
