"""Re-encode a device identity as the PKCS#12 every macOS release imports.

macOS 12-14 reject the OpenSSL 3 / `cryptography` default (PBES2 + AES-256, HMAC-SHA256 MAC) with
"MAC verification failed" (docs/profiles-and-mdm.md section 4). The universally accepted form is
pbeWithSHAAnd3-KeyTripleDES-CBC for key and certificates, an HMAC-SHA1 MAC, 2048 iterations and
a non-empty password. Each artifact gets a fresh random password (ASCII alphanumerics, so it
survives any script or plist quoting); the output is re-parsed and its algorithms asserted
before anyone can ship it.

The output is deliberately not reproducible: salts and password are random per artifact.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import CertificateError, FleetpkgError
from .model import Identity
from .pfx import identity_from, parse_pfx

PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"
ITERATIONS = 2048
PASSWORD_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ReencodedIdentity:
    """A macOS-compatible PKCS#12 and its password. Neither appears in repr/str."""

    p12: bytes = field(repr=False)
    password: str = field(repr=False)


def new_password(length: int = PASSWORD_LENGTH) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def reencode_for_macos(identity: Identity, *, chain: Sequence[x509.Certificate] = (),
                       friendly_name: bytes | None = None) -> ReencodedIdentity:
    """PKCS#12 of identity's key + certificate + `chain` (default: the .pfx's extra certificates),
    with `friendly_name` (fleetpkg passes the hostname) on the key and certificate."""
    extra = list(chain) if chain else list(identity.extra_certificates)
    password = new_password()
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder()
                  .kdf_rounds(ITERATIONS)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1())
                  .build(password.encode()))
    try:
        p12 = pkcs12.serialize_key_and_certificates(friendly_name, identity.key, identity.certificate,
                                                    extra or None, encryption)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot re-encode the identity for macOS ({exc})",
                               where=str(identity.source) if identity.source else None) from None
    self_check(p12, password, identity, len(extra))
    return ReencodedIdentity(p12, password)


def self_check(p12: bytes, password: str, identity: Identity, extra_count: int) -> None:
    """Re-parse `p12` with fleetpkg's own reader and insist on exactly the macOS-safe algorithms."""
    where = str(identity.source) if identity.source else None

    def fail(why: str) -> None:
        raise CertificateError(f"re-encoded PKCS#12 failed its self-check: {why}", where=where)

    try:
        parsed = parse_pfx(p12, password.encode())
        again = identity_from(parsed)
    except FleetpkgError as exc:
        fail(exc.message)
        return
    mac = parsed.mac
    if mac is None or mac.scheme != "pkcs12" or mac.hash != "sha1" or mac.iterations != ITERATIONS:
        fail(f"MAC is {mac.name if mac else 'absent'} with {mac.iterations if mac else 0} iterations, "
             f"expected HMAC-SHA1 with {ITERATIONS}")
    if not parsed.keys or parsed.keys[0].pbe is None:
        fail("the key bag is not encrypted")
    if not parsed.certs or any(bag.pbe is None for bag in parsed.certs):
        fail("the certificate bags are not encrypted")
    for pbe in parsed.encryptions:
        if pbe.oid != PBE_SHA1_3DES or pbe.iterations != ITERATIONS:
            fail(f"found {pbe.name} with {pbe.iterations} iterations, expected "
                 f"pbeWithSHAAnd3-KeyTripleDES-CBC with {ITERATIONS}")
    if again.certificate != identity.certificate:
        fail("the key is not paired with the device certificate")
    if len(again.extra_certificates) != extra_count:
        fail(f"{len(again.extra_certificates)} chain certificates, expected {extra_count}")
