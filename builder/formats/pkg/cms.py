"""CMS SignedData (RFC 5652) as Apple's productsign writes it, and a reader/verifier for any signer.

`cryptography` refuses SHA-1 in its PKCS#7 builder and has no CMS verify API, so this module
builds and checks the few structures xar signatures need with builder.formats.der.

productsign's blob (checked on tests/fixtures/pkg/installomator-Installomator-0.5-c53f9d1b.pkg):
ContentInfo, its [0], SignedData and EncapsulatedContentInfo use BER indefinite lengths (Apple's
streaming SecCMS encoder); everything inside them is DER. SignedData v1, digestAlgorithms {sha1
NULL}, id-data with no content (detached), certificates sorted like SecCmsUtilDERCompare (shorter
encoding first, then bytewise), one SignerInfo v1 with issuerAndSerialNumber, sha1 NULL, no signed
attributes, sha1WithRSAEncryption NULL, and optionally an RFC 3161 token as unsigned attribute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .. import der
from ...errors import FormatError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_TST_INFO = "1.2.840.113549.1.9.16.1.4"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_TIMESTAMP_TOKEN = "1.2.840.113549.1.9.16.2.14"
OID_RSA = "1.2.840.113549.1.1.1"
OID_SHA1_RSA = "1.2.840.113549.1.1.5"
OID_SHA256_RSA = "1.2.840.113549.1.1.11"
OID_SHA384_RSA = "1.2.840.113549.1.1.12"
OID_SHA512_RSA = "1.2.840.113549.1.1.13"
OID_SHA1 = "1.3.14.3.2.26"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_SHA384 = "2.16.840.1.101.3.4.2.2"
OID_SHA512 = "2.16.840.1.101.3.4.2.3"

DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {
    OID_SHA1: hashes.SHA1, OID_SHA256: hashes.SHA256, OID_SHA384: hashes.SHA384, OID_SHA512: hashes.SHA512,
}
DIGEST_NAMES = {OID_SHA1: "sha1", OID_SHA256: "sha256", OID_SHA384: "sha384", OID_SHA512: "sha512"}
RSA_SIGNATURE_OIDS = {OID_RSA, OID_SHA1_RSA, OID_SHA256_RSA, OID_SHA384_RSA, OID_SHA512_RSA}
ECDSA_SIGNATURE_OIDS = {"1.2.840.10045.4.1", "1.2.840.10045.4.3.2", "1.2.840.10045.4.3.3", "1.2.840.10045.4.3.4"}


def _indefinite(tag: int, contents: bytes) -> bytes:
    """BER constructed value with indefinite length, as Apple's SecCMS encoder streams them."""
    return bytes([tag, 0x80]) + contents + b"\x00\x00"


def apple_certificate_order(certificates: Sequence[bytes]) -> list[bytes]:
    """SET OF order of SecCmsUtilDERCompare: shorter encodings first, equal lengths bytewise."""
    return sorted(certificates, key=lambda c: (len(c), c))


def algorithm(oid: str) -> bytes:
    """AlgorithmIdentifier with explicit NULL parameters, as Apple writes for sha1 and RSA."""
    return der.seq(der.oid(oid), der.null())


def attribute(oid: str, *values: bytes) -> bytes:
    return der.seq(der.oid(oid), der.set_of(*values))


def build_signed_data(
    *,
    certificates: Sequence[bytes],
    issuer: bytes,
    serial: int,
    signature: bytes,
    digest_oid: str = OID_SHA1,
    signature_oid: str = OID_SHA1_RSA,
    unsigned_attributes: Sequence[bytes] = (),
) -> bytes:
    """productsign's detached SignedData with no signed attributes.

    `issuer` is the DER Name of the signer certificate's issuer; `signature` is PKCS#1 v1.5 over
    the external content itself (no signed attributes, so it equals the xar RSA signature).
    """
    signer_fields = [
        der.integer(1),
        der.seq(issuer, der.integer(serial)),
        algorithm(digest_oid),
        algorithm(signature_oid),
        der.octets(signature),
    ]
    if unsigned_attributes:
        signer_fields.append(der.tlv(0xA1, b"".join(sorted(unsigned_attributes))))
    signed_data = _indefinite(der.SEQUENCE, b"".join([
        der.integer(1),
        der.set_of(algorithm(digest_oid)),
        _indefinite(der.SEQUENCE, der.oid(OID_DATA)),
        der.implicit_constructed(0, b"".join(apple_certificate_order(certificates))),
        der.set_of(der.seq(*signer_fields)),
    ]))
    return _indefinite(der.SEQUENCE, der.oid(OID_SIGNED_DATA) + _indefinite(0xA0, signed_data))


# -- reading -----------------------------------------------------------------------------

@dataclass(frozen=True)
class SignerInfo:
    version: int
    issuer: bytes | None  # DER Name (issuerAndSerialNumber)
    serial: int | None
    subject_key_id: bytes | None  # [0] subjectKeyIdentifier form
    digest_algorithm: str
    digest_params: bytes | None  # raw DER of the parameters, b"\x05\x00" for NULL, None if absent
    signed_attributes: bytes | None  # the [0] IMPLICIT attributes re-tagged as SET (what is signed)
    signature_algorithm: str
    signature_params: bytes | None
    signature: bytes
    unsigned_attributes: tuple[tuple[str, tuple[bytes, ...]], ...]

    def attribute_values(self, oid: str, *, signed: bool) -> tuple[bytes, ...]:
        attrs = _attributes(self.signed_attributes) if signed else self.unsigned_attributes
        return tuple(value for name, values in attrs if name == oid for value in values)


@dataclass(frozen=True)
class SignedData:
    version: int
    digest_algorithms: tuple[str, ...]
    content_type: str
    content: bytes | None  # None when detached
    certificates: tuple[bytes, ...]  # as stored, in stored order
    signer_infos: tuple[SignerInfo, ...]
    indefinite_length: bool  # ContentInfo used BER indefinite length (Apple's encoder does)


def _attributes(raw: bytes | None) -> list[tuple[str, tuple[bytes, ...]]]:
    if raw is None:
        return []
    out = []
    for attr in der.parse(raw).children():
        kids = attr.expect(der.SEQUENCE, "attribute").children()
        if len(kids) != 2:
            raise FormatError("CMS attribute is not (type, values)")
        out.append((kids[0].as_oid(), tuple(v.raw for v in kids[1].expect(der.SET, "attribute values").children())))
    return out


def _algorithm(node: der.Node, *, null_params: bool = False) -> tuple[str, bytes | None]:
    """(oid, raw parameters). With null_params (digests, RFC 5754; PKCS#1 v1.5, RFC 4055) the
    parameters must be absent or NULL: anything else is a damaged or forged identifier."""
    kids = node.expect(der.SEQUENCE, "algorithm identifier").children()
    if not kids or len(kids) > 2:
        raise FormatError("CMS algorithm identifier is malformed")
    oid, params = kids[0].as_oid(), (kids[1].raw if len(kids) > 1 else None)
    if null_params and params not in (None, der.null()):
        raise FormatError(f"CMS algorithm {oid} has unexpected parameters")
    return oid, params


def _signer_info(node: der.Node) -> SignerInfo:
    kids = node.expect(der.SEQUENCE, "SignerInfo").children()
    if len(kids) < 5:
        raise FormatError("CMS SignerInfo is truncated")
    version = kids[0].as_int()
    sid = kids[1]
    issuer = serial = ski = None
    if sid.tag == der.SEQUENCE:
        parts = sid.children()
        if len(parts) != 2:
            raise FormatError("CMS issuerAndSerialNumber is malformed")
        issuer, serial = parts[0].expect(der.SEQUENCE, "issuer name").raw, parts[1].as_int()
    elif sid.tag == 0x80:
        ski = sid.value
    else:
        raise FormatError(f"CMS SignerInfo identifier has unexpected tag 0x{sid.tag:02x}")
    if version != (1 if ski is None else 3):  # RFC 5652 §5.3
        raise FormatError(f"CMS SignerInfo version {version} does not fit its signer identifier")
    digest_alg, digest_params = _algorithm(kids[2], null_params=True)
    pos = 3
    signed_attrs = None
    if kids[pos].tag == 0xA0:
        signed_attrs = kids[pos].raw
        pos += 1
    if len(kids) < pos + 2:
        raise FormatError("CMS SignerInfo is truncated")
    sig_alg, sig_params = _algorithm(kids[pos])
    if sig_alg in RSA_SIGNATURE_OIDS:
        _algorithm(kids[pos], null_params=True)
    signature = kids[pos + 1].as_octets()
    unsigned: tuple = ()
    if len(kids) > pos + 3:
        raise FormatError("CMS SignerInfo has unexpected trailing elements")
    if len(kids) > pos + 2:
        extra = kids[pos + 2]
        if extra.tag != 0xA1:
            raise FormatError(f"CMS SignerInfo has unexpected element 0x{extra.tag:02x}")
        unsigned = tuple(_attributes(der.tlv(der.SET, extra.value)))
    if signed_attrs is not None:
        # the signature covers the attributes re-tagged as a DER SET (RFC 5652 §5.4)
        signed_attrs = der.tlv(der.SET, der.parse(signed_attrs).value)
        _attributes(signed_attrs)  # validate the shape now, not during verification
    return SignerInfo(version, issuer, serial, ski, digest_alg, digest_params, signed_attrs,
                      sig_alg, sig_params, signature, unsigned)


def parse_signed_data(blob: bytes) -> SignedData:
    """Parse a ContentInfo holding SignedData; trailing zero padding (xar slot) is allowed."""
    info = der.parse(blob, allow_trailing=True)
    top = info.expect(der.SEQUENCE, "ContentInfo").children()
    if len(top) != 2 or top[0].as_oid() != OID_SIGNED_DATA or top[1].tag != 0xA0:
        raise FormatError("CMS blob is not a SignedData ContentInfo")
    wrapped = top[1].children()
    if len(wrapped) != 1:
        raise FormatError("CMS ContentInfo content is not exactly one SignedData")
    sd = wrapped[0].expect(der.SEQUENCE, "SignedData").children()
    if len(sd) < 4:
        raise FormatError("CMS SignedData is truncated")
    version = sd[0].as_int()
    digests = tuple(_algorithm(a, null_params=True)[0]
                    for a in sd[1].expect(der.SET, "digestAlgorithms").children())
    encap = sd[2].expect(der.SEQUENCE, "EncapsulatedContentInfo").children()
    if not encap:
        raise FormatError("CMS EncapsulatedContentInfo is empty")
    content_type = encap[0].as_oid()
    content = None
    if len(encap) > 1:
        content = encap[1].expect(0xA0, "eContent").child(0).as_octets()
    pos = 3
    certs: list[bytes] = []
    if sd[pos].tag == 0xA0:
        certs = [c.raw for c in sd[pos].children() if c.tag == der.SEQUENCE]
        pos += 1
    if pos < len(sd) and sd[pos].tag == 0xA1:  # CRLs: not used by xar signatures
        pos += 1
    if pos >= len(sd):
        raise FormatError("CMS SignedData has no signerInfos")
    if pos + 1 != len(sd):
        raise FormatError("CMS SignedData has unexpected elements after signerInfos")
    signers = tuple(_signer_info(s) for s in sd[pos].expect(der.SET, "signerInfos").children())
    expected = 3 if content_type != OID_DATA or any(s.version == 3 for s in signers) else 1
    if version not in (expected, 4, 5):  # RFC 5652 §5.1 (4 and 5 come with other certificate formats)
        raise FormatError(f"CMS SignedData version {version} does not fit its contents")
    return SignedData(version, digests, content_type, content, tuple(certs), signers,
                      indefinite_length=info.raw[1] == 0x80)


def load_certificate(raw: bytes) -> x509.Certificate | None:
    """A DER certificate with every lazily parsed field forced now, or None when malformed
    (cryptography raises ValueError, InvalidVersion, even KeyError for a bad string tag, and
    only on first access of a field, so every field is touched here and any error means None)."""
    try:
        outer = der.parse(raw).children()
        if len(outer) != 3 or outer[2].tag != der.BIT_STRING or outer[2].value[:1] != b"\x00":
            return None  # the signature BIT STRING must have no unused bits (cryptography ignores them)
        cert = x509.load_der_x509_certificate(raw)
        cert.subject, cert.issuer, cert.extensions, cert.public_key()  # noqa: B018 (forces parsing)
        cert.not_valid_before_utc, cert.not_valid_after_utc  # noqa: B018
    except Exception:  # noqa: BLE001 (hostile input; any parse failure is "not a certificate")
        return None
    return cert


def signer_certificate(sd: SignedData, si: SignerInfo) -> x509.Certificate | None:
    """The certificate a SignerInfo names, among the ones the SignedData carries."""
    for raw in sd.certificates:
        cert = load_certificate(raw)
        if cert is None:
            continue
        if si.issuer is not None:
            if cert.serial_number == si.serial and cert.issuer.public_bytes() == si.issuer:
                return cert
        elif si.subject_key_id is not None:
            try:
                ext = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
            except x509.ExtensionNotFound:
                continue
            if ext.value.digest == si.subject_key_id:
                return cert
    return None


def verify_signer(sd: SignedData, si: SignerInfo, content: bytes, public_key) -> str | None:
    """Check one SignerInfo over detached `content`; returns None when valid, else why not.

    Without signed attributes the signature covers the content itself; with them it covers the
    DER SET of attributes, whose messageDigest must equal the content's digest. The digest
    algorithm must also be listed in the SignedData's digestAlgorithms.
    """
    algo = DIGESTS.get(si.digest_algorithm)
    if si.digest_algorithm not in sd.digest_algorithms:
        return "its digest algorithm is missing from the SignedData digestAlgorithms"
    if algo is None:
        return f"unsupported digest algorithm {si.digest_algorithm}"
    message = content
    if si.signed_attributes is not None:
        try:
            digests = si.attribute_values(OID_MESSAGE_DIGEST, signed=True)
            stated = der.parse(digests[0]).as_octets() if len(digests) == 1 else None
        except FormatError:
            return "signed attributes are malformed"
        if stated is None:
            return "signed attributes carry no single messageDigest"
        h = hashes.Hash(algo())
        h.update(content)
        if stated != h.finalize():
            return "messageDigest does not match the signed content"
        message = si.signed_attributes
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            if si.signature_algorithm not in RSA_SIGNATURE_OIDS:
                return f"signature algorithm {si.signature_algorithm} does not fit an RSA key"
            public_key.verify(si.signature, message, padding.PKCS1v15(), algo())
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            if si.signature_algorithm not in ECDSA_SIGNATURE_OIDS:
                return f"signature algorithm {si.signature_algorithm} does not fit an EC key"
            public_key.verify(si.signature, message, ec.ECDSA(algo()))
        else:
            return "unsupported signer key type"
    except InvalidSignature:
        return "signature does not verify"
    return None


def digest(oid: str, data: bytes) -> bytes:
    name = DIGEST_NAMES.get(oid)
    if name is None:
        raise FormatError(f"unsupported digest algorithm {oid}")
    return hashlib.new(name, data).digest()
