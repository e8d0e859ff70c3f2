"""Reading CMS SignedData (signed profiles) with builder/formats/der.py.

cryptography can build CMS but not read or verify it, so inspect and verify parse the few fields
they need here. Both DER and Apple's BER (indefinite lengths, chunked octet strings) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding

from ..formats import der
from ..errors import FormatError

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"

DIGESTS = {
    "1.3.14.3.2.26": ("sha1", hashes.SHA1),
    "2.16.840.1.101.3.4.2.1": ("sha256", hashes.SHA256),
    "2.16.840.1.101.3.4.2.2": ("sha384", hashes.SHA384),
    "2.16.840.1.101.3.4.2.3": ("sha512", hashes.SHA512),
}
# signatureAlgorithm OID -> (key family, hash OID or None for "the SignerInfo's digest")
SIGNATURES = {
    "1.2.840.113549.1.1.1": ("rsa", None),
    "1.2.840.113549.1.1.5": ("rsa", "1.3.14.3.2.26"),
    "1.2.840.113549.1.1.11": ("rsa", "2.16.840.1.101.3.4.2.1"),
    "1.2.840.113549.1.1.12": ("rsa", "2.16.840.1.101.3.4.2.2"),
    "1.2.840.113549.1.1.13": ("rsa", "2.16.840.1.101.3.4.2.3"),
    "1.2.840.10045.4.1": ("ec", "1.3.14.3.2.26"),
    "1.2.840.10045.4.3.2": ("ec", "2.16.840.1.101.3.4.2.1"),
    "1.2.840.10045.4.3.3": ("ec", "2.16.840.1.101.3.4.2.2"),
    "1.2.840.10045.4.3.4": ("ec", "2.16.840.1.101.3.4.2.3"),
}


def digest_name(oid: str) -> str:
    return DIGESTS[oid][0] if oid in DIGESTS else oid


@dataclass(frozen=True)
class SignerInfo:
    issuer: bytes | None  # raw DER Name of issuerAndSerialNumber
    serial: int | None
    subject_key_id: bytes | None
    digest_oid: str
    signed_attrs: dict[str, list[der.Node]] | None  # attribute OID -> values
    signed_attrs_der: bytes | None  # the attributes re-tagged as the DER SET that was signed
    signature_oid: str
    signature: bytes

    def attr(self, oid: str) -> der.Node | None:
        values = (self.signed_attrs or {}).get(oid)
        return values[0] if values else None

    def signing_time(self) -> datetime | None:
        node = self.attr(OID_SIGNING_TIME)
        return None if node is None else parse_time(node)


@dataclass(frozen=True)
class SignedData:
    content_type: str
    content: bytes | None  # None when detached
    certificates: tuple[x509.Certificate, ...]
    signers: tuple[SignerInfo, ...]


def looks_like_cms(data: bytes) -> bool:
    """A DER SEQUENCE start; XML and binary plists start with '<', whitespace, a BOM or 'bplist'."""
    return data[:1] == b"\x30"


def parse_time(node: der.Node) -> datetime:
    text = node.value.decode("ascii", errors="replace")
    try:
        if node.tag == der.UTC_TIME:
            return datetime.strptime(text, "%y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
        if node.tag == der.GENERALIZED_TIME:
            return datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    raise FormatError(f"CMS signingTime {text!r} is not a valid time")


def _signer_info(node: der.Node) -> SignerInfo:
    fields = node.expect(der.SEQUENCE, "SignerInfo").children()
    if len(fields) < 5:
        raise FormatError("CMS SignerInfo is incomplete")
    sid = fields[1]
    issuer = serial = ski = None
    if sid.tag == der.SEQUENCE:
        issuer, serial = sid.child(0).raw, sid.child(1).as_int()
    elif sid.tag in (0x80, 0xA0):  # [0] subjectKeyIdentifier
        ski = sid.value if sid.tag == 0x80 else sid.child(0).as_octets()
    else:
        raise FormatError(f"CMS SignerInfo has an unknown signer identifier (tag 0x{sid.tag:02x})")
    digest_oid = fields[2].child(0).as_oid()
    pos = 3
    attrs = attrs_der = None
    if fields[pos].tag == 0xA0:
        attrs_der = der.tlv(der.SET, fields[pos].value)
        attrs = {}
        for attr in fields[pos].children():
            attrs.setdefault(attr.child(0).as_oid(), []).extend(attr.child(1).children())
        pos += 1
    if pos + 1 >= len(fields):
        raise FormatError("CMS SignerInfo lacks its signature")
    return SignerInfo(issuer, serial, ski, digest_oid, attrs, attrs_der,
                      fields[pos].child(0).as_oid(), fields[pos + 1].as_octets())


def parse_signed_data(data: bytes) -> SignedData:
    """Parse ContentInfo{SignedData}; FormatError if it is anything else or malformed."""
    info = der.parse(data, allow_trailing=True).expect(der.SEQUENCE, "CMS ContentInfo")
    if info.child(0).as_oid() != OID_SIGNED_DATA:
        raise FormatError(f"CMS content type {info.child(0).as_oid()} is not SignedData")
    wrapper = info.child(1).expect(0xA0, "CMS content")
    fields = wrapper.child(0).expect(der.SEQUENCE, "SignedData").children()
    if len(fields) < 4:
        raise FormatError("CMS SignedData is incomplete")
    fields[0].as_int()  # version: only its shape matters here
    fields[1].expect(der.SET, "digestAlgorithms")
    encap = fields[2].expect(der.SEQUENCE, "EncapsulatedContentInfo").children()
    content = None
    if len(encap) > 1:
        content = encap[1].expect(0xA0, "eContent").child(0).as_octets()
    certs: list[x509.Certificate] = []
    signers_node = fields[-1].expect(der.SET, "signerInfos")
    for extra in fields[3:-1]:
        if extra.tag != 0xA0:  # [1] crls are not needed here
            continue
        for item in extra.children():
            if item.tag != der.SEQUENCE:  # other certificate choices (attribute certs...)
                continue
            try:
                certs.append(x509.load_der_x509_certificate(item.raw))
            except ValueError:
                raise FormatError("CMS SignedData carries a malformed certificate") from None
    signers = tuple(_signer_info(s) for s in signers_node.children())
    if not signers:
        raise FormatError("CMS SignedData has no signer")
    return SignedData(encap[0].as_oid(), content, tuple(certs), signers)


def issuer_der(cert: x509.Certificate) -> bytes:
    """The issuer Name exactly as encoded in the certificate (re-encoding may change string types)."""
    tbs = der.parse(cert.public_bytes(Encoding.DER)).child(0).children()
    offset = 1 if tbs[0].tag == 0xA0 else 0  # [0] version is optional
    return tbs[offset + 2].raw


def find_signer_certificate(sd: SignedData, signer: SignerInfo) -> x509.Certificate | None:
    return certificate_for(signer, sd.certificates)


def certificate_for(signer, certificates) -> x509.Certificate | None:
    """The certificate among `certificates` that a SignerInfo (this module's or the package CMS
    reader's: both carry issuer, serial and subject_key_id) names."""
    for cert in certificates:
        if signer.issuer is not None:
            if cert.serial_number == signer.serial and issuer_der(cert) == signer.issuer:
                return cert
        else:
            try:
                ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
            except (x509.ExtensionNotFound, ValueError):
                continue
            if ski.digest == signer.subject_key_id:
                return cert
    return None
