"""XML-DSig signatures on edXML packets: verified when present, and the outcome kept with the message.

An official document's legal weight is its issuing agency's digital signature: an enveloped XML-DSig
(``ds:Signature`` in ``edXMLHeader``) made with the agency's certificate. Real senders get this wrong in every
way: templates' signatures copied into new packets (the digest no longer matches), a ``Signature`` element in
the edXML namespace instead of XML-DSig's, an empty ``DigitalSignature``. So by default the bus records what it
found (policy ``record``) and lets the receiving agency decide; a deployment may refuse invalid signatures
(``reject-invalid``) or unsigned packets too (``require``).

The check is deliberately narrow, because a signature is attacker-controlled input that names its own work:
- references are the whole document (``URI=""``) or one element by its ``Id`` (exactly one element may carry
  it, against signature wrapping); other URIs are never fetched, XPointer and XPath/XSLT transforms are refused
  as ``unsupported``;
- transforms are the enveloped-signature transform and canonicalization (C14N 1.0 and exclusive C14N, with or
  without comments); at most :data:`MAX_REFERENCES` references;
- the key is the first ``X509Certificate`` of ``KeyInfo`` (or an ``RSAKeyValue``); nothing is looked up;
- RSA (PKCS#1 v1.5) and ECDSA with SHA-1, SHA-256, SHA-384 or SHA-512. SHA-1 is still what most Vietnamese
  signing tools produce; the algorithm is recorded so that a receiver can judge it.

Whether the certificate is *trusted* is answered only against anchors the deployment configures
(``DOCBUS_XML_SIGNATURE_TRUST_FILE``): the chain is built from the packet's own certificates up to an anchor.
Without anchors ``trusted`` is ``None``: the signature is consistent with the certificate it carries, which
proves integrity, not identity.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree

from docbus.errors import FieldError
from docbus.validation.paths import line_of

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
_MORE = "http://www.w3.org/2001/04/xmldsig-more#"
_ENC = "http://www.w3.org/2001/04/xmlenc#"
ENVELOPED = DSIG_NS + "enveloped-signature"
# Each reference canonicalizes (and hashes) what it names, possibly the whole packet: the cap bounds what one
# request can make the gateway do to a few times the parse. Real signatures have one reference (two with XAdES).
MAX_REFERENCES = 4
MAX_TRANSFORMS = 4
MAX_CHAIN = 6
MAX_VALUE_CHARS = 65_536  # base64 text of a signature value, digest or certificate

# algorithm URI -> (exclusive, with comments)
CANONICALIZATIONS: dict[str, tuple[bool, bool]] = {
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315": (False, False),
    "http://www.w3.org/TR/2001/REC-xml-c14n-20010315#WithComments": (False, True),
    "http://www.w3.org/2001/10/xml-exc-c14n#": (True, False),
    "http://www.w3.org/2001/10/xml-exc-c14n#WithComments": (True, True),
}
DIGESTS: dict[str, str] = {
    DSIG_NS + "sha1": "sha1",
    _ENC + "sha256": "sha256",
    _MORE + "sha384": "sha384",
    _ENC + "sha512": "sha512",
}
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
# algorithm URI -> (key type, hash)
SIGNATURE_METHODS: dict[str, tuple[str, str]] = {
    DSIG_NS + "rsa-sha1": ("rsa", "sha1"),
    _MORE + "rsa-sha256": ("rsa", "sha256"),
    _MORE + "rsa-sha384": ("rsa", "sha384"),
    _MORE + "rsa-sha512": ("rsa", "sha512"),
    _MORE + "ecdsa-sha1": ("ec", "sha1"),
    _MORE + "ecdsa-sha256": ("ec", "sha256"),
    _MORE + "ecdsa-sha384": ("ec", "sha384"),
    _MORE + "ecdsa-sha512": ("ec", "sha512"),
}


def _ds(name: str) -> str:
    return f"{{{DSIG_NS}}}{name}"


_SIGNATURE = _ds("Signature")
_SIGNED_INFO = _ds("SignedInfo")
_SIGNATURE_VALUE = _ds("SignatureValue")
_C14N_METHOD = _ds("CanonicalizationMethod")
_SIGNATURE_METHOD = _ds("SignatureMethod")
_REFERENCE = _ds("Reference")
_TRANSFORMS = _ds("Transforms")
_TRANSFORM = _ds("Transform")
_DIGEST_METHOD = _ds("DigestMethod")
_DIGEST_VALUE = _ds("DigestValue")
_KEY_INFO = _ds("KeyInfo")
_X509_DATA = _ds("X509Data")
_X509_CERTIFICATE = _ds("X509Certificate")
_KEY_VALUE = _ds("KeyValue")
_RSA_KEY_VALUE = _ds("RSAKeyValue")
_MODULUS = _ds("Modulus")
_EXPONENT = _ds("Exponent")
_EXC_INCLUSIVE_NAMESPACES = "{http://www.w3.org/2001/10/xml-exc-c14n#}InclusiveNamespaces"


class SignaturePolicy(StrEnum):
    """What intake does with a packet's XML-DSig signature."""

    RECORD = "record"  # verify when present, keep the outcome, refuse nothing
    REJECT_INVALID = "reject-invalid"  # a signature that is present must verify (and chain, with anchors)
    # Every edXML document must carry a signature that verifies (and chains, with anchors). Status messages are
    # held to reject-invalid: receipts come from axes and systems that often sign nothing.
    REQUIRE = "require"


class SignatureStatus(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True, slots=True)
class SignatureCheck:
    """What verifying one packet's signature found. ``reason`` is a stable word, ``detail`` a sentence."""

    status: SignatureStatus
    reason: str | None = None
    detail: str | None = None
    algorithm: str | None = None
    covers_document: bool = False
    signer: dict[str, Any] | None = None
    trusted: bool | None = None
    line: int | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        found: dict[str, Any] = {"status": self.status.value}
        for name in ("reason", "detail", "algorithm", "signer", "trusted"):
            value = getattr(self, name)
            if value is not None:
                found[name] = value
        if self.status is SignatureStatus.VALID:
            found["covers_document"] = self.covers_document
        return found


class _Refused(Exception):
    def __init__(self, status: SignatureStatus, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def _invalid(reason: str, detail: str) -> _Refused:
    return _Refused(SignatureStatus.INVALID, reason, detail)


def _unsupported(reason: str, detail: str) -> _Refused:
    return _Refused(SignatureStatus.UNSUPPORTED, reason, detail)


class TrustAnchors:
    """The certificates a deployment trusts to issue signing certificates (a PEM bundle)."""

    def __init__(self, certificates: Sequence[x509.Certificate]) -> None:
        self.certificates = tuple(certificates)
        self._by_subject: dict[bytes, list[x509.Certificate]] = {}
        for cert in self.certificates:
            self._by_subject.setdefault(cert.subject.public_bytes(), []).append(cert)

    @classmethod
    def from_pem_file(cls, path: Path) -> TrustAnchors:
        """Anchors from a PEM bundle; ``ValueError`` naming the file when it cannot be read or holds none, so
        that a misconfigured gateway stops at start-up instead of judging every signer untrusted."""
        try:
            certificates = x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ValueError(f"trust anchors {path}: not a readable PEM bundle of certificates ({exc})") from None
        return cls(certificates)

    def chains(self, leaf: x509.Certificate, carried: Sequence[x509.Certificate]) -> bool:
        """Whether ``leaf`` leads to an anchor, through certificates the packet carried, each signed by the next."""
        intermediates: dict[bytes, list[x509.Certificate]] = {}
        for cert in carried:
            intermediates.setdefault(cert.subject.public_bytes(), []).append(cert)
        current = leaf
        for _ in range(MAX_CHAIN):
            issuer_name = current.issuer.public_bytes()
            for anchor in self._by_subject.get(issuer_name, ()):
                if _issued_by(current, anchor):
                    return True
            step = next(
                (c for c in intermediates.get(issuer_name, ()) if c != current and _issued_by(current, c)), None
            )
            if step is None:
                return False
            current = step
        return False


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


class SignatureVerifier:
    """Checks the XML-DSig signature of parsed edXML trees (see the module's docstring for what it accepts)."""

    def __init__(self, anchors: TrustAnchors | None = None) -> None:
        self.anchors = anchors

    def find(self, header: etree._Element | None) -> etree._Element | None:
        """The signature to check: the header's first element named Signature that has content (an empty one,
        or an empty DigitalSignature, is what some senders put where they sign nothing)."""
        if header is None:
            return None
        for element in header.iterchildren("{*}Signature"):
            if len(element) or (element.text or "").strip():
                return element
        return None

    def check(self, signature: etree._Element) -> SignatureCheck:
        """What the signature's check found. Never raises: the signature is the sender's input, and whatever it
        makes a library fail on (a relative namespace URI that C14N refuses, a key type nothing here reads) is
        an outcome to record, not a server error."""
        try:
            return self._check(signature)
        except _Refused as refused:
            return SignatureCheck(refused.status, refused.reason, refused.detail, line=line_of(signature))
        except etree.C14NError:
            detail = "the signed content cannot be canonicalized (C14N refuses relative namespace URIs)"
            return SignatureCheck(SignatureStatus.UNSUPPORTED, "canonicalization", detail, line=line_of(signature))
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            detail = f"the signature could not be verified: {str(exc)[:200]}"
            return SignatureCheck(SignatureStatus.UNSUPPORTED, "verification", detail, line=line_of(signature))

    def _check(self, signature: etree._Element) -> SignatureCheck:
        if signature.tag != _SIGNATURE:
            namespace = signature.tag[1:].partition("}")[0] if signature.tag.startswith("{") else ""
            raise _invalid(
                "not-xmldsig",
                f"the Signature element is in namespace {namespace or '(none)'}, not XML-DSig's {DSIG_NS}",
            )
        signed_info = _one(signature, _SIGNED_INFO, "SignedInfo")
        c14n_uri = _algorithm(_one(signed_info, _C14N_METHOD, "CanonicalizationMethod"))
        method_uri = _algorithm(_one(signed_info, _SIGNATURE_METHOD, "SignatureMethod"))
        if c14n_uri not in CANONICALIZATIONS:
            raise _unsupported("canonicalization", f"canonicalization {c14n_uri[:200]} is not supported")
        if method_uri not in SIGNATURE_METHODS:
            raise _unsupported("signature-method", f"signature method {method_uri[:200]} is not supported")
        references = list(signed_info.iterchildren(_REFERENCE))
        if not references:
            raise _invalid("no-reference", "SignedInfo has no Reference")
        if len(references) > MAX_REFERENCES:
            raise _unsupported("too-many-references", f"more than {MAX_REFERENCES} references")
        leaf, carried = _key_material(signature)
        covers_document = False
        canonical: dict[tuple[int, bool, tuple[str, ...] | None, bool], bytes] = {}  # each target once
        for reference in references:
            covers_document |= _check_reference(reference, signature, canonical)
        key_type, hash_name = SIGNATURE_METHODS[method_uri]
        exclusive, with_comments = CANONICALIZATIONS[c14n_uri]
        signed_bytes = etree.tostring(
            signed_info, method="c14n", exclusive=exclusive, with_comments=with_comments,
            inclusive_ns_prefixes=_prefix_list(signed_info.find(_C14N_METHOD)) if exclusive else None,
        )  # fmt: skip
        value = _base64(_one(signature, _SIGNATURE_VALUE, "SignatureValue"), "SignatureValue")
        public_key = leaf.public_key() if isinstance(leaf, x509.Certificate) else leaf
        _verify(public_key, key_type, hash_name, value, signed_bytes)
        signer = _describe(leaf) if isinstance(leaf, x509.Certificate) else None
        trusted = None
        if self.anchors is not None:
            trusted = isinstance(leaf, x509.Certificate) and self.anchors.chains(leaf, carried)
        return SignatureCheck(
            SignatureStatus.VALID,
            algorithm=f"{key_type}-{hash_name}",
            covers_document=covers_document,
            signer=signer,
            trusted=trusted,
            line=line_of(signature),
        )


def _one(parent: etree._Element, tag: str, name: str) -> etree._Element:
    found = parent.find(tag)
    if found is None:
        raise _invalid("malformed", f"{local(parent.tag)} has no {name}")
    return found


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _algorithm(element: etree._Element) -> str:
    algorithm = element.get("Algorithm")
    if not algorithm:
        raise _invalid("malformed", f"{local(element.tag)} has no Algorithm")
    return algorithm


def _prefix_list(method: etree._Element | None) -> list[str] | None:
    """Exclusive C14N's InclusiveNamespaces PrefixList, if the method names one."""
    if method is None:
        return None
    inclusive = method.find(_EXC_INCLUSIVE_NAMESPACES)
    if inclusive is None:
        return None
    return [("" if prefix == "#default" else prefix) for prefix in (inclusive.get("PrefixList") or "").split()]


def _base64(element: etree._Element, name: str) -> bytes:
    text = "".join((element.text or "").split())
    if len(text) > MAX_VALUE_CHARS:
        raise _unsupported("too-large", f"{name} is longer than {MAX_VALUE_CHARS} characters")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("malformed", f"{name} is not base64") from None


def _check_reference(
    reference: etree._Element,
    signature: etree._Element,
    canonical: dict[tuple[int, bool, tuple[str, ...] | None, bool], bytes],
) -> bool:
    """Verify one Reference's digest; ``True`` when it covers the whole document."""
    uri = reference.get("URI")
    if uri is None:
        raise _unsupported("reference-uri", "a Reference without URI names nothing this bus can resolve")
    if uri.startswith("#xpointer("):
        raise _unsupported("reference-uri", "XPointer references are not supported")
    document = signature.getroottree()
    if uri == "":
        target = document.getroot()
    elif uri.startswith("#") and len(uri) > 1:
        target = _by_id(document, uri[1:])
    else:
        raise _unsupported("reference-uri", f"reference {uri[:100]!r} is outside the packet and is not fetched")
    transforms = _transforms(reference)
    exclusive, prefixes = False, None
    for algorithm, element in transforms:
        if algorithm in CANONICALIZATIONS:
            exclusive = CANONICALIZATIONS[algorithm][0]
            prefixes = _prefix_list(element) if exclusive else None
    # A same-document reference selects the node-set without comments (XML-DSig 4.4.3.3), whatever the C14N.
    enveloped = any(algorithm == ENVELOPED for algorithm, _ in transforms)
    digest_uri = _algorithm(_one(reference, _DIGEST_METHOD, "DigestMethod"))
    if digest_uri not in DIGESTS:
        raise _unsupported("digest-method", f"digest method {digest_uri[:200]} is not supported")
    expected = _base64(_one(reference, _DIGEST_VALUE, "DigestValue"), "DigestValue")
    key = (id(target), exclusive, None if prefixes is None else tuple(prefixes), enveloped)
    if key not in canonical:
        canonical[key] = _canonical_without(target, signature if enveloped else None, exclusive, prefixes)
    if not hmac.compare_digest(hashlib.new(DIGESTS[digest_uri], canonical[key]).digest(), expected):
        where = "the document" if uri == "" else f"element {uri}"
        raise _invalid("digest-mismatch", f"the digest of {where} does not match: it changed after it was signed")
    return uri == ""


def _transforms(reference: etree._Element) -> list[tuple[str, etree._Element]]:
    holder = reference.find(_TRANSFORMS)
    if holder is None:
        return []
    found = [(_algorithm(element), element) for element in holder.iterchildren(_TRANSFORM)]
    if len(found) > MAX_TRANSFORMS:
        raise _unsupported("transform", f"more than {MAX_TRANSFORMS} transforms")
    for algorithm, _ in found:
        if algorithm != ENVELOPED and algorithm not in CANONICALIZATIONS:
            raise _unsupported("transform", f"transform {algorithm[:200]} is not supported")
    return found


_BY_ID = etree.XPath("//*[@Id = $wanted or @ID = $wanted or @id = $wanted]")


def _by_id(document: etree._ElementTree, wanted: str) -> etree._Element:
    """The one element carrying Id (or ID, id) ``wanted``. Every element is looked at (0.3 s for 500,000 of them,
    about what parsing them costs), at most :data:`MAX_REFERENCES` times per packet."""
    found = _BY_ID(document, wanted=wanted)
    matches = [element for element in found if isinstance(element, etree._Element)] if isinstance(found, list) else []
    if len(matches) != 1:
        what = "no element" if not matches else f"{len(matches)} elements"
        raise _invalid("reference-target", f"{what} carry the Id {wanted[:100]!r}; exactly one must")
    return matches[0]


def _canonical_without(
    target: etree._Element, signature: etree._Element | None, exclusive: bool, prefixes: list[str] | None
) -> bytes:
    """``target`` canonicalized, without ``signature`` when it lies inside (the enveloped-signature transform).

    The signature is taken out of the tree and put back rather than the tree copied: a copy of a packet with
    attachments costs more than the canonicalization itself. Its tail (the text after it) stays, as that text
    is not part of the signature element."""
    inside = signature is not None and any(ancestor is target for ancestor in signature.iterancestors())
    subject: etree._Element | etree._ElementTree = target.getroottree() if target.getparent() is None else target
    if signature is None or not (inside or signature is target):
        return etree.tostring(subject, method="c14n", exclusive=exclusive, with_comments=False,
                              inclusive_ns_prefixes=prefixes)  # fmt: skip
    parent = signature.getparent()
    assert parent is not None
    index = parent.index(signature)
    previous = signature.getprevious()
    saved_text, saved_previous_tail, tail = parent.text, None if previous is None else previous.tail, signature.tail
    if tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    signature.tail = None
    parent.remove(signature)
    try:
        return etree.tostring(subject, method="c14n", exclusive=exclusive, with_comments=False,
                              inclusive_ns_prefixes=prefixes)  # fmt: skip
    finally:
        parent.insert(index, signature)
        signature.tail = tail
        parent.text = saved_text
        if previous is not None:
            previous.tail = saved_previous_tail


def _key_material(
    signature: etree._Element,
) -> tuple[x509.Certificate | rsa.RSAPublicKey, list[x509.Certificate]]:
    """The signing key: the first X509Certificate of KeyInfo (the rest may be its chain), else an RSAKeyValue."""
    key_info = signature.find(_KEY_INFO)
    if key_info is None:
        raise _unsupported("no-key", "the signature carries no KeyInfo: nothing to verify it with")
    certificates = [
        _certificate(_base64(element, "X509Certificate"))
        for data in key_info.iterchildren(_X509_DATA)
        for element in data.iterchildren(_X509_CERTIFICATE)
    ]
    if certificates:
        return certificates[0], certificates[1:]
    rsa_value = key_info.find(f"{_KEY_VALUE}/{_RSA_KEY_VALUE}")
    if rsa_value is not None:
        modulus = int.from_bytes(_base64(_one(rsa_value, _MODULUS, "Modulus"), "Modulus"), "big")
        exponent = int.from_bytes(_base64(_one(rsa_value, _EXPONENT, "Exponent"), "Exponent"), "big")
        try:
            return rsa.RSAPublicNumbers(exponent, modulus).public_key(), []
        except ValueError:
            raise _invalid("malformed", "RSAKeyValue is not an RSA public key") from None
    raise _unsupported("no-key", "KeyInfo holds neither an X509Certificate nor an RSAKeyValue")


@lru_cache(maxsize=256)
def _certificate(der: bytes) -> x509.Certificate:
    """Parsed once per distinct certificate: an agency signs every packet with the same one."""
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        raise _invalid("malformed", "X509Certificate is not a DER certificate") from None


def _verify(public_key: Any, key_type: str, hash_name: str, value: bytes, signed: bytes) -> None:
    algorithm = _HASHES[hash_name]()
    try:
        if key_type == "rsa":
            if not isinstance(public_key, rsa.RSAPublicKey):
                raise _invalid("key-mismatch", "the signature method is RSA but the certificate's key is not")
            public_key.verify(value, signed, padding.PKCS1v15(), algorithm)
        else:
            if not isinstance(public_key, ec.EllipticCurvePublicKey):
                raise _invalid("key-mismatch", "the signature method is ECDSA but the certificate's key is not")
            half = len(value) // 2
            if not value or len(value) % 2:
                raise _invalid("malformed", "an ECDSA SignatureValue is r and s of equal length")
            der = encode_dss_signature(int.from_bytes(value[:half], "big"), int.from_bytes(value[half:], "big"))
            public_key.verify(der, signed, ec.ECDSA(algorithm))
    except InvalidSignature:
        raise _invalid("signature-mismatch", "the signature value does not verify with the signer's key") from None


def _describe(cert: x509.Certificate) -> dict[str, Any]:
    now = datetime.now(UTC)
    return {
        "subject": cert.subject.rfc4514_string()[:500],
        "issuer": cert.issuer.rfc4514_string()[:500],
        "serial": format(cert.serial_number, "x"),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "valid_now": cert.not_valid_before_utc <= now <= cert.not_valid_after_utc,
    }


SIGNATURE_PATH = "/edXML/edXMLEnvelope/edXMLHeader/Signature"
_REASONS_VI = {
    "not-xmldsig": "phần tử Signature không thuộc không gian tên XML-DSig",
    "digest-mismatch": "giá trị băm không khớp: nội dung đã bị thay đổi sau khi ký",
    "signature-mismatch": "giá trị chữ ký không khớp với khóa của người ký",
    "key-mismatch": "thuật toán ký không khớp với loại khóa của chứng thư số",
    "no-key": "chữ ký không kèm chứng thư số hoặc khóa công khai",
    "reference-target": "tham chiếu của chữ ký không chỉ tới đúng một phần tử",
    "no-reference": "chữ ký không có tham chiếu nào",
}


def policy_complaint(
    policy: SignaturePolicy, check: SignatureCheck | None, header: etree._Element, *, document: bool
) -> FieldError | None:
    """Why ``policy`` refuses a packet (a ``document``, or a status message) whose signature check is ``check``
    (``None``: unsigned), if it does."""
    if policy is SignaturePolicy.RECORD:
        return None
    if check is None:
        if policy is SignaturePolicy.REQUIRE and document:
            return FieldError(
                path=SIGNATURE_PATH,
                rule="signature-required",
                message_en="The document must carry an XML-DSig signature (ds:Signature in edXMLHeader)",
                message_vi="Văn bản phải có chữ ký số XML-DSig (ds:Signature trong edXMLHeader)",
                line=line_of(header),
                expected=f"{{{DSIG_NS}}}Signature",
            )
        return None
    if check.status is not SignatureStatus.VALID:
        reason_vi = _REASONS_VI.get(check.reason or "", "thuật toán hoặc tham chiếu không được hỗ trợ")
        return FieldError(
            path=SIGNATURE_PATH,
            rule="signature-invalid" if check.status is SignatureStatus.INVALID else "signature-unsupported",
            message_en=f"The XML-DSig signature cannot be accepted: {check.detail}",
            message_vi=f"Chữ ký số XML-DSig không được chấp nhận: {reason_vi}",
            line=check.line,
            expected="a signature that verifies (enveloped, RSA or ECDSA, C14N)",
        )
    if check.trusted is False:
        return FieldError(
            path=SIGNATURE_PATH,
            rule="signature-untrusted",
            message_en="The signing certificate does not chain to a certificate authority this bus trusts",
            message_vi="Chứng thư số dùng để ký không do tổ chức chứng thực được tin cậy cấp",
            line=check.line,
            expected="a certificate issued under a configured trust anchor",
        )
    return None
