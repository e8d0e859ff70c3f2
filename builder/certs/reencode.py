"""Re-encode a device identity as the PKCS#12 every macOS release imports.

macOS 12-14 reject the OpenSSL 3 / `cryptography` default (PBES2 + AES-256, HMAC-SHA256 MAC) with
"MAC verification failed" (docs/profiles-and-mdm.md section 4). The universally accepted form is
pbeWithSHAAnd3-KeyTripleDES-CBC for key and certificates, an HMAC-SHA1 MAC, 2048 iterations and
a non-empty password. Each artifact gets a fresh random password (ASCII alphanumerics, so it
survives any script or plist quoting); the output's algorithms are asserted before anyone can
ship it.

Two checks, so that a fleet does not pay every p12's key derivations twice (once in OpenSSL to
write it, once here to read it back):
- every p12: its structure, read without the password (certs/protection.py, the reader that
  inspect and profile verify use too): MAC, every container's and key bag's PBE, iteration
  counts, salt sizes, nothing left unencrypted;
- the first p12 each process makes (and any with full_check=True): also a complete read with
  the password by fleetpkg's own reader (MAC verified, bags decrypted, key paired with the
  certificate, chain count). That catches an OpenSSL/cryptography build that writes the right
  algorithm identifiers around wrong bytes, which no structural check could.

The output is deliberately not reproducible: salts and password are random per artifact.
"""

from __future__ import annotations

import os
import secrets
import string
from dataclasses import dataclass, field
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ..errors import CertificateError, FleetpkgError
from .model import Identity
from .pbe import PBE_SHA1_3DES
from .pfx import MacInfo, identity_from, parse_pfx
from .protection import Unsupported, read_protection

ITERATIONS = 2048
SALT_BYTES = 8  # what OpenSSL and Apple write (PKCS5_SALT_LEN)
PASSWORD_LENGTH = 32
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True)
class ReencodedIdentity:
    """A macOS-compatible PKCS#12 and its password. Neither appears in repr/str."""

    p12: bytes = field(repr=False)
    password: str = field(repr=False)


# random byte -> password character: the byte values below the largest multiple of the alphabet's
# size (248 = 4 x 62) map four to each character (uniform, like secrets.choice); the rest are dropped
_KEPT = 256 - 256 % len(_ALPHABET)
_TO_ALPHABET = bytes(ord(_ALPHABET[b % len(_ALPHABET)]) if b < _KEPT else 0 for b in range(256))
_DROPPED = bytes(range(_KEPT, 256))


def new_password(length: int = PASSWORD_LENGTH) -> str:
    """`length` characters drawn uniformly from the alphabet (os.urandom via secrets): one
    translate of random bytes rather than one secrets.choice call per character."""
    text = b""
    while len(text) < length:
        text += secrets.token_bytes(length + 8).translate(_TO_ALPHABET, _DROPPED)
    return text[:length].decode("ascii")


# pid of the process whose reader has fully read back one of its own p12s (a forked worker
# inherits the parent's value, hence the pid rather than a flag)
_fully_checked_in: int | None = None


def reencode_for_macos(identity: Identity, *, chain: Sequence[x509.Certificate] = (),
                       friendly_name: bytes | None = None,
                       full_check: bool | None = None) -> ReencodedIdentity:
    """PKCS#12 of identity's key + certificate + `chain` (default: the .pfx's extra certificates),
    with `friendly_name` (fleetpkg passes the hostname) on the key and certificate.

    full_check: read the result back with its password too (True), or only its structure
    (False); None, the default, does the full read for the first p12 of each process."""
    global _fully_checked_in
    where = str(identity.source) if identity.source else None
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
        raise CertificateError(f"cannot re-encode the identity for macOS ({exc})", where=where) from None
    check_structure(p12, password, where=where)
    if full_check or (full_check is None and _fully_checked_in != os.getpid()):
        self_check(p12, password, identity, len(extra))
        _fully_checked_in = os.getpid()
    return ReencodedIdentity(p12, password)


def _failure(where: str | None):
    def fail(why: str) -> None:
        raise CertificateError(f"re-encoded PKCS#12 failed its self-check: {why}", where=where)
    return fail


def check_structure(p12: bytes, password: str, *, where: str | None = None) -> None:
    """Without the password: exactly the macOS-safe algorithms, parameters and layout."""
    fail = _failure(where)
    if not password or not password.isascii():
        fail("the password is not non-empty ASCII")
    try:
        prot = read_protection(p12)
    except FleetpkgError as exc:
        fail(exc.message)
        return
    mac = prot.mac
    if (not isinstance(mac, MacInfo) or mac.scheme != "pkcs12" or mac.hash != "sha1"
            or mac.kdf_hash != "sha1" or mac.iterations != ITERATIONS):
        fail(f"MAC is {mac.name if mac else 'absent'} with {mac.iterations if mac else 0} iterations, "
             f"expected HMAC-SHA1 with {ITERATIONS}")
    if len(mac.salt) != SALT_BYTES or len(mac.digest) != 20:
        fail(f"MAC salt of {len(mac.salt)} bytes / digest of {len(mac.digest)}, expected {SALT_BYTES} / 20")
    others = [c for c in prot.containers if c not in ("data", "encryptedData")]
    if others:
        fail(f"unexpected content types {', '.join(others)}")
    if prot.plain_keys or len(prot.shrouded_keys) != 1:
        fail(f"{prot.plain_keys} unencrypted and {len(prot.shrouded_keys)} encrypted key bags, "
             "expected exactly one encrypted key bag")
    if prot.plain_certs or not prot.container_pbes:
        fail("the certificate bags are not encrypted")
    for pbe in (*prot.shrouded_keys, *prot.container_pbes):
        if isinstance(pbe, Unsupported):
            fail(f"found {pbe.name} ({pbe.reason}), expected pbeWithSHAAnd3-KeyTripleDES-CBC")
        if pbe.oid != PBE_SHA1_3DES or pbe.iterations != ITERATIONS:
            fail(f"found {pbe.name} with {pbe.iterations} iterations, expected "
                 f"pbeWithSHAAnd3-KeyTripleDES-CBC with {ITERATIONS}")
        if len(pbe.salt) != SALT_BYTES:
            fail(f"{pbe.name} salt of {len(pbe.salt)} bytes, expected {SALT_BYTES}")


def self_check(p12: bytes, password: str, identity: Identity, extra_count: int) -> None:
    """Re-parse `p12` with fleetpkg's own reader and its password, and insist on exactly the
    macOS-safe algorithms and on the identity and chain that went in."""
    where = str(identity.source) if identity.source else None
    fail = _failure(where)

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
