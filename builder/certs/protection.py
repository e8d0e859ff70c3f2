"""How a PKCS#12 is protected, read from its structure alone: no password, no key derivation.

The MAC parameters, every encrypted container's and every shrouded key bag's PBE are visible
in the clear (RFC 7292 sections 4 and 4.2.2); only the bags inside encrypted containers are not.
That is enough to prove a freshly written p12 uses the algorithms macOS imports, at the cost of
a DER walk instead of all its key derivations.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..formats import der
from ..errors import FormatError
from .pbe import Pbe
from .pbe import parse as parse_pbe
from .pfx import (CERT_BAG, DATA, ENCRYPTED_DATA, KEY_BAG, SHROUDED_KEY_BAG, MacInfo, _parse_mac,
                  iter_safe_bags)
from .tlv import oid


@dataclass(frozen=True)
class Protection:
    mac: MacInfo | None
    containers: tuple[str, ...]  # per authSafe ContentInfo: "data" | "encryptedData" | other OID
    container_pbes: tuple[Pbe, ...]  # of the encryptedData containers, in file order
    shrouded_keys: tuple[Pbe, ...]  # of the pkcs8ShroudedKeyBags in plain containers
    plain_keys: int  # unencrypted keyBags in plain containers
    plain_certs: int  # certBags in plain containers (readable without the password)


def read_protection(data: bytes) -> Protection:
    """Raises FormatError (malformed) or CertificateError (an algorithm fleetpkg cannot name)."""
    try:
        return _read(bytes(data))
    except FormatError:
        raise
    except (ValueError, TypeError, IndexError, OverflowError) as exc:
        raise FormatError(f"not a valid PKCS#12 file ({type(exc).__name__}: {exc})") from None


def _read(data: bytes) -> Protection:
    pfx = der.parse(data).expect(der.SEQUENCE, "PFX").children()
    if len(pfx) < 2 or pfx[0].tag != der.INTEGER or pfx[0].as_int() != 3:
        raise FormatError("expected a PFX with version 3")
    auth = pfx[1].expect(der.SEQUENCE, "authSafe").children()
    if oid(auth[0]) != DATA:
        raise FormatError(f"authSafe content type is {oid(auth[0])}, not data (password integrity)")
    auth_bytes = auth[1].expect(0xA0, "authSafe content").child(0).as_octets()
    mac = _parse_mac(pfx[2]) if len(pfx) > 2 else None
    containers: list[str] = []
    container_pbes: list[Pbe] = []
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
            container_pbes.append(parse_pbe(eci[1]))
        else:
            containers.append(ctype)
    return Protection(mac, tuple(containers), tuple(container_pbes), tuple(walk.shrouded),
                      walk.plain_keys, walk.plain_certs)


class _Walk:
    def __init__(self) -> None:
        self.shrouded: list[Pbe] = []
        self.plain_keys = 0
        self.plain_certs = 0

    def safe_contents(self, data: bytes) -> None:
        for bag_id, value, _parts in iter_safe_bags(data):
            if bag_id == SHROUDED_KEY_BAG:
                epki = value.expect(der.SEQUENCE, "EncryptedPrivateKeyInfo").children()
                self.shrouded.append(parse_pbe(epki[0]))
            elif bag_id == KEY_BAG:
                self.plain_keys += 1
            elif bag_id == CERT_BAG:
                self.plain_certs += 1
