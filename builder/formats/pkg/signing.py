"""Sign xar packages exactly as Apple's productsign does (see flat-package-format.md §2).

Both signatures cover the raw TOC checksum bytes: `<signature style="RSA">` is PKCS#1 v1.5 with
SHA-1 over those bytes as the message (productsign hashes the checksum once more; signing it as a
prehashed digest does not verify on Apple's files), and `<x-signature style="CMS">` is a detached
SignedData whose SignerInfo carries no signed attributes, so its signature value is the very same
RSA signature. PKCS#1 v1.5 is deterministic, so with SOURCE_DATE_EPOCH the output is
byte-identical run to run (unless a timestamp is requested).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ...errors import SigningError
from . import cms, timestamp


class SigningIdentity(Protocol):
    """What signing needs of an identity (builder/certs/signing_identity.py loads and vets one)."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuers, leaf excluded

PRODUCTSIGN_CMS_SIZE = 9216  # productsign's reserved CMS slot (timestamped blob of 8,428 bytes there)
CMS_MARGIN = 512  # rcodesign's margin over a trial signature
TIMESTAMP_ALLOWANCE = 6144  # Apple's token in the fixture is 4,291 bytes with its attribute header


class PackageSigner:
    """The Signer protocol xar.XarWriter/resign use: sizes fixed up front, then sign(checksum)."""

    def __init__(self, identity: SigningIdentity, *, timestamp_url: str | None = None,
                 timestamp_digest: str = cms.OID_SHA256):
        self.identity = identity
        self.timestamp_url = timestamp_url
        self.timestamp_digest = timestamp_digest
        chain = (identity.certificate, *identity.chain)
        self.certificates: tuple[bytes, ...] = tuple(c.public_bytes(serialization.Encoding.DER) for c in chain)
        self.rsa_size: int = (identity.key.key_size + 7) // 8
        trial = self._cms(bytes(self.rsa_size), ())
        margin = CMS_MARGIN + (TIMESTAMP_ALLOWANCE if timestamp_url else 0)
        self.cms_size: int = max(PRODUCTSIGN_CMS_SIZE, len(trial) + margin)

    def _cms(self, signature: bytes, unsigned: tuple[bytes, ...]) -> bytes:
        leaf = self.identity.certificate
        return cms.build_signed_data(
            certificates=self.certificates, issuer=leaf.issuer.public_bytes(),
            serial=leaf.serial_number, signature=signature, unsigned_attributes=unsigned)

    def sign(self, toc_checksum: bytes) -> tuple[bytes, bytes]:
        signature = self.identity.key.sign(toc_checksum, padding.PKCS1v15(), hashes.SHA1())
        if len(signature) != self.rsa_size:
            raise SigningError(f"RSA signature is {len(signature)} bytes, expected {self.rsa_size}")
        unsigned: tuple[bytes, ...] = ()
        if self.timestamp_url:
            token = timestamp.request_timestamp(self.timestamp_url, signature, digest_oid=self.timestamp_digest)
            unsigned = (timestamp.token_attribute(token),)
        blob = self._cms(signature, unsigned)
        if len(blob) > self.cms_size:
            raise SigningError(f"CMS signature needs {len(blob)} bytes but {self.cms_size} were reserved",
                               hint="the timestamp token is unusually large; retry without --timestamp-url")
        return signature, blob


def sign_package(src: Path, dest: Path, identity: SigningIdentity, timestamp_url: str | None = None,
                 *, check_data: bool = False) -> None:
    """Re-sign `src` into `dest`: rewrites the TOC, copies the file data through in one pass.
    Damaged data stays detectable (the signed TOC holds every member's checksum); check_data
    refuses it up front at the cost of a second read.

    Any existing signature is replaced; the stapled notarization ticket, being tied to the old
    TOC checksum, is dropped by the rewrite and must be stapled again.
    """
    from . import xar

    src, dest = Path(src), Path(dest)
    if dest.exists() and src.exists() and os.path.samefile(src, dest):
        raise SigningError("output would overwrite the input package", where=str(dest),
                           hint="write the signed package to another path")
    xar.resign(src, dest, PackageSigner(identity, timestamp_url=timestamp_url),  # atomic: temp + rename
               verify_data=check_data)


# the verifier lives in its own module; re-exported here for callers that sign and then check
from .verify import SignatureReport, verify_package_signature  # noqa: E402,F401
