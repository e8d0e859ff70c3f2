"""CMS-signed rendering for double-click installs and Jamf's web upload.

The SignedData is written here with builder/formats/der.py rather than cryptography's
PKCS7SignatureBuilder because that builder stamps signingTime with the wall clock, which would make
every signed profile differ from the last build. Here signingTime is the build time
(SOURCE_DATE_EPOCH), so the same inputs give identical bytes (RSA PKCS#1 v1.5 signatures are
deterministic; ECDSA ones are not). The structure matches what cryptography and
`openssl cms -sign -binary -nodetach` produce: attached content, SHA-256, signed attributes
contentType/signingTime/messageDigest, signer plus chain in `certificates`.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import datetime, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ..formats import der
from ..errors import SigningError
from ..certs.memo import by_object
from ..repro import build_datetime
from .cms import issuer_der

OID_DATA = "1.2.840.113549.1.7.1"
OID_SIGNED_DATA = "1.2.840.113549.1.7.2"
OID_CONTENT_TYPE = "1.2.840.113549.1.9.3"
OID_MESSAGE_DIGEST = "1.2.840.113549.1.9.4"
OID_SIGNING_TIME = "1.2.840.113549.1.9.5"
OID_SHA256 = "2.16.840.1.101.3.4.2.1"
OID_RSA = "1.2.840.113549.1.1.1"
OID_ECDSA_SHA256 = "1.2.840.10045.4.3.2"


@dataclass(frozen=True)
class ProfileSigner:
    """The profile-signing identity; `chain` holds its intermediates (the root may be added)."""

    certificate: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    chain: tuple[x509.Certificate, ...] = ()

    @functools.cached_property
    def subject(self) -> str:
        """The certificate's subject (RFC 4514), worked out once: every signed file records it."""
        return self.certificate.subject.rfc4514_string()

    @functools.cached_property
    def key_matches(self) -> bool:
        """Whether `key` is the private half of the certificate's public key, compared once per
        signer rather than once per signed profile."""
        spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        return self.key.public_key().public_bytes(*spki) == self.certificate.public_key().public_bytes(*spki)


def _der_time(when: datetime) -> bytes:
    """RFC 5652 signingTime: UTCTime for 1950-2049, GeneralizedTime otherwise."""
    when = when.astimezone(timezone.utc)
    if 1950 <= when.year < 2050:
        return der.tlv(der.UTC_TIME, when.strftime("%y%m%d%H%M%SZ").encode())
    return der.tlv(der.GENERALIZED_TIME, when.strftime("%Y%m%d%H%M%SZ").encode())


def _attribute(oid: str, value: bytes) -> bytes:
    return der.seq(der.oid(oid), der.set_of(value))


# What every profile's SignedData shares, encoded once: the SHA-256 AlgorithmIdentifier, the
# contentType attribute, the RSA signatureAlgorithm and the messageDigest attribute up to its value.
_SHA256_ALGORITHM = der.seq(der.oid(OID_SHA256), der.null())
_CONTENT_TYPE_ATTRIBUTE = _attribute(OID_CONTENT_TYPE, der.oid(OID_DATA))
_RSA_ALGORITHM = der.seq(der.oid(OID_RSA), der.null())
_ECDSA_ALGORITHM = der.seq(der.oid(OID_ECDSA_SHA256))
_DIGEST_ATTRIBUTE_HEAD = _attribute(OID_MESSAGE_DIGEST, der.octets(bytes(32)))[:-32]


def _signing_time(signer: ProfileSigner, requested: datetime | None) -> datetime:
    cert = signer.certificate
    now = datetime.now(timezone.utc)
    if now > cert.not_valid_after_utc:
        raise SigningError(f"profile-signing certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                           where=signer.subject, hint="configure a current signing identity")
    when = requested or build_datetime()
    # A SOURCE_DATE_EPOCH older than the certificate would claim a signature made before the
    # certificate existed; the certificate's start is the earliest honest, reproducible time.
    return max(when.astimezone(timezone.utc), cert.not_valid_before_utc).replace(microsecond=0)


def _sign(key, data: bytes) -> tuple[bytes, bytes]:
    """(signatureAlgorithm, signature) over `data` with SHA-256."""
    if isinstance(key, rsa.RSAPrivateKey):
        return _RSA_ALGORITHM, key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _ECDSA_ALGORITHM, key.sign(data, ec.ECDSA(hashes.SHA256()))
    raise SigningError(f"unsupported profile-signing key type {type(key).__name__}",
                       hint="use an RSA (recommended) or ECDSA key")


@functools.lru_cache(maxsize=8)
def _signing_time_attribute(when: datetime) -> bytes:
    """The signingTime attribute: one per build (its time is the build's)."""
    return _attribute(OID_SIGNING_TIME, _der_time(when))


@by_object(maxsize=8)
def _signer_constants(cert: x509.Certificate, chain: tuple[x509.Certificate, ...]) -> tuple[bytes, bytes]:
    """(issuerAndSerialNumber, the certificates field's content): the same for every profile one
    signer signs (public data only), so a fleet build works them out once, not per device."""
    issuer_and_serial = der.seq(issuer_der(cert), der.integer(cert.serial_number))
    certs = {c.fingerprint(hashes.SHA256()): c.public_bytes(serialization.Encoding.DER) for c in (cert, *chain)}
    return issuer_and_serial, b"".join(sorted(certs.values()))


def sign_profile(xml: bytes, signer: ProfileSigner, *, signing_time: datetime | None = None) -> bytes:
    """CMS SignedData (DER) with `xml` attached, signed with SHA-256, signer chain included."""
    cert = signer.certificate
    if not signer.key_matches:
        raise SigningError("the signing key does not belong to the signing certificate",
                           where=signer.subject)
    when = _signing_time(signer, signing_time)
    sha256 = _SHA256_ALGORITHM
    # signed attributes: a DER SET OF, so sorted by encoding
    attrs_content = b"".join(sorted((
        _CONTENT_TYPE_ATTRIBUTE,
        _signing_time_attribute(when),
        _DIGEST_ATTRIBUTE_HEAD + hashlib.sha256(xml).digest(),
    )))
    sig_alg, signature = _sign(signer.key, der.tlv(der.SET, attrs_content))
    issuer_and_serial, certs = _signer_constants(cert, tuple(signer.chain))
    signer_info = der.seq(
        der.integer(1),
        issuer_and_serial,
        sha256,
        der.implicit_constructed(0, attrs_content),
        sig_alg,
        der.octets(signature),
    )
    signed_data = der.seq(
        der.integer(1),
        der.set_of(sha256),
        der.seq(der.oid(OID_DATA), der.explicit(0, der.octets(xml))),
        der.implicit_constructed(0, certs),
        der.set_of(signer_info),
    )
    return der.seq(der.oid(OID_SIGNED_DATA), der.explicit(0, signed_data))
