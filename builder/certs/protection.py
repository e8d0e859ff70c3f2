"""How a PKCS#12 is protected, read from its structure alone: no password, no key derivation.

The MAC parameters, every encrypted container's and every shrouded key bag's PBE are visible
in the clear (RFC 7292 sections 4 and 4.2.2); only the bags inside encrypted containers are not.
One walk gives one `Protection`, which serves three readers: `fleetpkg inspect` of a profile
(`describe_protection`: what the file uses, unusable algorithms named rather than refused),
profile verify (`macos_problems`: what macOS would refuse to import) and the re-encoder's
self-check (certs/reencode.py: exactly the form fleetpkg writes), at the cost of a DER walk
instead of all its key derivations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import CertificateError, FormatError
from ..formats import der
from .pbe import PBE_SHA1_3DES, PBE_SHA1_RC2_40, PBES2, PBES2_CIPHERS, PKCS12_RC4, Pbe
from .pbe import parse as parse_pbe
from .pfx import (CERT_BAG, DATA, ENCRYPTED_DATA, KEY_BAG, PBMAC1, SHROUDED_KEY_BAG, SIGNED_DATA,
                  MacInfo, _parse_mac, iter_safe_bags)
from .tlv import oid

# What macOS imports (profiles-and-mdm.md §4): an HMAC-SHA1 MAC and these bag PBEs.
MACOS_BAG_PBES = frozenset({PBE_SHA1_3DES, PBE_SHA1_RC2_40})


@dataclass(frozen=True)
class Unsupported:
    """An algorithm the file declares but fleetpkg cannot use, kept so that inspect can name it."""

    oid: str
    name: str  # as describe_protection shows it: a known name, else the dotted OID
    reason: str  # why fleetpkg cannot use it (what the full reader would refuse with)
    iterations: int | None = None  # known for a MAC (stated in MacData whatever the algorithm)


@dataclass(frozen=True)
class Protection:
    mac: MacInfo | Unsupported | None
    containers: tuple[str, ...]  # per authSafe ContentInfo: "data" | "encryptedData" | other OID
    container_pbes: tuple[Pbe | Unsupported, ...]  # of the encryptedData containers, in file order
    shrouded_keys: tuple[Pbe | Unsupported, ...]  # of the pkcs8ShroudedKeyBags in plain containers
    plain_keys: int  # unencrypted keyBags in plain containers
    plain_certs: int  # certBags in plain containers (readable without the password)


def read_protection(data: bytes) -> Protection:
    """Raises FormatError only (a malformed file, or one in public-key integrity mode); algorithms
    fleetpkg cannot use are recorded as `Unsupported`, not raised."""
    try:
        return _read(bytes(data))
    except FormatError as exc:
        raise FormatError(f"malformed PKCS#12: {exc.message}") from None
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise FormatError(f"malformed PKCS#12 ({type(exc).__name__}: {exc})") from None


def _read(data: bytes) -> Protection:
    pfx = der.parse(data).expect(der.SEQUENCE, "PFX").children()
    if len(pfx) < 2 or pfx[0].tag != der.INTEGER or pfx[0].as_int() != 3:
        raise FormatError("expected a PFX with version 3")
    auth = pfx[1].expect(der.SEQUENCE, "authSafe").children()
    if oid(auth[0]) == SIGNED_DATA:
        raise FormatError("PKCS#12 uses public-key integrity mode, which macOS does not import")
    if oid(auth[0]) != DATA:
        raise FormatError(f"authSafe content type is {oid(auth[0])}, not data (password integrity)")
    auth_bytes = auth[1].expect(0xA0, "authSafe content").child(0).as_octets()
    mac = _mac(pfx[2]) if len(pfx) > 2 else None
    containers: list[str] = []
    container_pbes: list[Pbe | Unsupported] = []
    walk = _Walk()
    for info in der.parse(auth_bytes).expect(der.SEQUENCE, "AuthenticatedSafe").children():
        parts = info.expect(der.SEQUENCE, "ContentInfo").children()
        ctype = oid(parts[0])
        if ctype == DATA:
            containers.append("data")
            walk.safe_contents(parts[1].expect(0xA0, "content").child(0).as_octets())
        elif ctype == ENCRYPTED_DATA:
            containers.append("encryptedData")
            enc = parts[1].expect(0xA0, "content").child(0).children()
            eci = enc[1].expect(der.SEQUENCE, "EncryptedContentInfo").children()
            container_pbes.append(_pbe(eci[1]))
        else:
            containers.append(ctype)
    return Protection(mac, tuple(containers), tuple(container_pbes), tuple(walk.shrouded),
                      walk.plain_keys, walk.plain_certs)


def _mac(node: der.Node) -> MacInfo | Unsupported:
    try:
        return _parse_mac(node)
    except CertificateError as exc:
        parts = node.expect(der.SEQUENCE, "MacData").children()
        alg_oid = oid(parts[0].child(0).child(0))
        iterations = parts[2].as_int() if len(parts) > 2 else 1
        return Unsupported(alg_oid, "PBMAC1" if alg_oid == PBMAC1 else alg_oid, exc.message, iterations)


def _pbe(alg: der.Node) -> Pbe | Unsupported:
    try:
        return parse_pbe(alg)
    except CertificateError as exc:
        alg_oid = oid(alg.child(0))
        if alg_oid == PBES2:  # name it by its cipher, as for the PBES2 schemes fleetpkg reads
            cipher_oid = oid(alg.child(1).child(1).child(0))
            known = PBES2_CIPHERS.get(cipher_oid)
            name = f"PBES2/{_openssl_cipher(known[1], known[2]) if known else cipher_oid}"
        else:
            name = _openssl_spelling(PKCS12_RC4.get(alg_oid, alg_oid))
        return Unsupported(alg_oid, name, exc.message)


class _Walk:
    def __init__(self) -> None:
        self.shrouded: list[Pbe | Unsupported] = []
        self.plain_keys = 0
        self.plain_certs = 0

    def safe_contents(self, data: bytes) -> None:
        for bag_id, value, _parts in iter_safe_bags(data):
            if bag_id == SHROUDED_KEY_BAG:
                epki = value.expect(der.SEQUENCE, "EncryptedPrivateKeyInfo").children()
                self.shrouded.append(_pbe(epki[0]))
            elif bag_id == KEY_BAG:
                self.plain_keys += 1
            elif bag_id == CERT_BAG:
                self.plain_certs += 1


# -- what inspect shows and what macOS refuses, from the same Protection ------------------------
#
# Names are OpenSSL's (`openssl pkcs12 -info`), which fleetpkg's profile inspection has always
# printed: pbeWithSHA1And3-KeyTripleDES-CBC for RFC 7292's pbeWithSHAAnd3-KeyTripleDES-CBC,
# PBES2/aes-256-cbc, and the MAC by its digest (sha1).

def _openssl_spelling(rfc_name: str) -> str:
    return rfc_name.replace("pbeWithSHAAnd", "pbeWithSHA1And")


def _openssl_cipher(cipher: str, key_len: int) -> str:
    return f"aes-{key_len * 8}-cbc" if cipher == "aes" else "des-ede3-cbc"


def _pbe_name(pbe: Pbe | Unsupported) -> str:
    if isinstance(pbe, Unsupported):
        return pbe.name
    if pbe.kdf == "pbkdf2":
        return f"PBES2/{_openssl_cipher(pbe.cipher, pbe.key_len)}"
    return _openssl_spelling(pbe.name)


def _mac_name(mac: MacInfo | Unsupported | None) -> str | None:
    if mac is None:
        return None
    if isinstance(mac, MacInfo) and mac.scheme == "pkcs12":
        return mac.hash
    return mac.name


def describe_protection(prot: Protection) -> dict[str, Any]:
    """{"mac", "mac_iterations", "certificate_encryption": [...], "key_encryption": [...]}."""
    mac = prot.mac
    return {"mac": _mac_name(mac), "mac_iterations": None if mac is None else mac.iterations,
            "certificate_encryption": sorted({_pbe_name(p) for p in prot.container_pbes}),
            "key_encryption": sorted({_pbe_name(p) for p in prot.shrouded_keys})}


def macos_problems(prot: Protection) -> list[str]:
    """Why macOS would refuse to import this PKCS#12 (empty when it would import it)."""
    problems = []
    mac = prot.mac
    if not (isinstance(mac, MacInfo) and mac.scheme == "pkcs12" and mac.hash == "sha1"):
        problems.append(f"PKCS#12 MAC is {_mac_name(mac)}, macOS needs HMAC-SHA1")
    for kind, pbes in (("certificate encryption", prot.container_pbes),
                       ("key encryption", prot.shrouded_keys)):
        bad = sorted({_pbe_name(p) for p in pbes if not (isinstance(p, Pbe) and p.oid in MACOS_BAG_PBES)})
        if bad:
            problems.append(f"PKCS#12 {kind} {', '.join(bad)} is not importable by macOS "
                            "(needs pbeWithSHA1And3-KeyTripleDES-CBC)")
    return problems
