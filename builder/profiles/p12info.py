"""What protects a PKCS#12: MAC and bag encryption algorithms, readable without the password.

macOS only imports PKCS#12 files with PBE-SHA1-3DES (or RC2) bags and an HMAC-SHA1 MAC (see
profiles-and-mdm.md §4), so inspect and verify report these for every embedded identity.
"""

from __future__ import annotations

from ..formats import der
from ..errors import FormatError

OID_DATA = "1.2.840.113549.1.7.1"
OID_ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
OID_SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
OID_PBES2 = "1.2.840.113549.1.5.13"

NAMES = {
    "1.2.840.113549.1.12.1.3": "pbeWithSHA1And3-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.4": "pbeWithSHA1And2-KeyTripleDES-CBC",
    "1.2.840.113549.1.12.1.5": "pbeWithSHA1And128BitRC2-CBC",
    "1.2.840.113549.1.12.1.6": "pbeWithSHA1And40BitRC2-CBC",
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
    "2.16.840.1.101.3.4.1.2": "aes-128-cbc",
    "2.16.840.1.101.3.4.1.22": "aes-192-cbc",
    "2.16.840.1.101.3.4.1.42": "aes-256-cbc",
    "1.2.840.113549.3.7": "des-ede3-cbc",
}
MACOS_SAFE_BAGS = {"pbeWithSHA1And3-KeyTripleDES-CBC", "pbeWithSHA1And40BitRC2-CBC"}


def _alg_name(alg: der.Node) -> str:
    oid = alg.child(0).as_oid()
    if oid == OID_PBES2:  # name the cipher: params = SEQ { kdf, encryptionScheme }
        cipher = alg.child(1).child(1).child(0).as_oid()
        return f"PBES2/{NAMES.get(cipher, cipher)}"
    return NAMES.get(oid, oid)


def pkcs12_algorithms(p12: bytes) -> dict:
    """{"mac": ..., "mac_iterations": n, "certificate_encryption": [...], "key_encryption": [...]}."""
    try:
        pfx = der.parse(p12).expect(der.SEQUENCE, "PFX").children()
        auth = pfx[1]
        if auth.child(0).as_oid() != OID_DATA:
            raise FormatError("PKCS#12 uses public-key integrity mode, which macOS does not import")
        safe = der.parse(auth.child(1).child(0).as_octets())
        cert_algs: list[str] = []
        key_algs: list[str] = []
        for content in safe.children():
            ctype = content.child(0).as_oid()
            if ctype == OID_ENCRYPTED_DATA:
                eci = content.child(1).child(0).child(1)
                cert_algs.append(_alg_name(eci.child(1)))
            elif ctype == OID_DATA:
                for bag in der.parse(content.child(1).child(0).as_octets()).children():
                    if bag.child(0).as_oid() == OID_SHROUDED_KEY_BAG:
                        key_algs.append(_alg_name(bag.child(1).child(0).child(0)))
        mac = mac_iter = None
        if len(pfx) > 2:
            mac_data = pfx[2].children()
            mac = _alg_name(mac_data[0].child(0))
            mac_iter = mac_data[2].as_int() if len(mac_data) > 2 else 1
    except (FormatError, IndexError) as exc:
        raise FormatError(f"malformed PKCS#12: {getattr(exc, 'message', exc)}") from None
    return {"mac": mac, "mac_iterations": mac_iter,
            "certificate_encryption": sorted(set(cert_algs)), "key_encryption": sorted(set(key_algs))}


def macos_compatible(algs: dict) -> list[str]:
    """Problems that would make macOS refuse the PKCS#12 (empty when it is fine)."""
    problems = []
    if algs["mac"] != "sha1":
        problems.append(f"PKCS#12 MAC is {algs['mac']}, macOS needs HMAC-SHA1")
    for kind in ("certificate_encryption", "key_encryption"):
        bad = [a for a in algs[kind] if a not in MACOS_SAFE_BAGS]
        if bad:
            problems.append(f"PKCS#12 {kind.replace('_', ' ')} {', '.join(bad)} is not importable "
                            "by macOS (needs pbeWithSHA1And3-KeyTripleDES-CBC)")
    return problems
