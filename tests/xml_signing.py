"""Signed edXML packets for the tests, made by an independent XML-DSig implementation (signxml), with
certificates from a throwaway certificate authority."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, methods

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
PLACEHOLDER = f'<ds:Signature xmlns:ds="{DSIG_NS}" Id="placeholder"></ds:Signature>'


@dataclass(frozen=True)
class Identity:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COUNTRY_NAME, "VN"), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def identity(common_name: str, issuer: Identity | None = None, *, elliptic: bool = False, ca: bool = False) -> Identity:
    """A key and a certificate for it, self-signed or issued by ``issuer``."""
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if elliptic else rsa.generate_private_key(65537, 2048)
    )
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer.cert.subject if issuer else _name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    cert = builder.sign(issuer.key if issuer else key, hashes.SHA256())
    return Identity(key, cert)


class _Sha1Signer(XMLSigner):
    """SHA-1 is what most signing tools in use produce; the library refuses it unless told."""

    def check_deprecated_methods(self) -> None:
        return None


def sign_packet(
    packet: bytes,
    signer: Identity,
    *,
    method: SignatureMethod = SignatureMethod.RSA_SHA256,
    digest: DigestAlgorithm = DigestAlgorithm.SHA256,
    c14n: CanonicalizationMethod = CanonicalizationMethod.CANONICAL_XML_1_0,
    chain: tuple[Identity, ...] = (),
    reference_uri: str | None = None,
) -> bytes:
    """``packet`` with an enveloped XML-DSig signature in its edXMLHeader (replacing any Signature there)."""
    text = re.sub(rb"<(\w+:)?Signature[\s>].*?</(\w+:)?Signature>", b"", packet, flags=re.S)
    text = re.sub(rb"<(\w+:)?DigitalSignature\s*/>", b"", text)
    text = re.sub(rb"(</(?:\w+:)?TraceHeaderList>)", rb"\1" + PLACEHOLDER.encode(), text, count=1)
    if PLACEHOLDER.encode() not in text:
        text = re.sub(rb"(</(?:\w+:)?MessageHeader>)", rb"\1" + PLACEHOLDER.encode(), text, count=1)
    root = etree.fromstring(text)
    signer_class = _Sha1Signer if "SHA1" in method.name or "SHA1" in digest.name else XMLSigner
    certs = [signer.cert_pem.decode(), *(link.cert_pem.decode() for link in chain)]
    signed = signer_class(
        method=methods.enveloped, signature_algorithm=method, digest_algorithm=digest, c14n_algorithm=c14n
    ).sign(root, key=signer.key_pem, cert=certs, reference_uri=reference_uri)
    return bytes(etree.tostring(signed, xml_declaration=True, encoding="UTF-8"))
