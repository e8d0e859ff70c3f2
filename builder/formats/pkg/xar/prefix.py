"""Everything before a xar's file data: header, zlib TOC, the TOC checksum and the signature
space, filled by the signer; shared by the writer and resign, which differ only in the TOC."""

from __future__ import annotations

import hashlib
import zlib

from ....errors import SigningError
from .model import ALGORITHM_IDS, HEADER, HEADER_SIZE, MAGIC, Signer


def check_signer(signer: Signer) -> tuple[int, int, list[bytes]]:
    """(rsa size, cms size, certificates), refused early when a signer could not fill its space."""
    rsa_size, cms_size = int(signer.rsa_size), int(signer.cms_size)
    certs = [bytes(c) for c in signer.certificates]
    if rsa_size <= 0 or cms_size < 0:
        raise SigningError(f"signer reserves invalid sizes rsa={rsa_size} cms={cms_size}")
    if not certs:
        raise SigningError("signer has no certificates")
    return rsa_size, cms_size, certs


def _signatures(signer: Signer, checksum: bytes, rsa_size: int, cms_size: int) -> bytes:
    rsa, cms = signer.sign(checksum)
    if not isinstance(rsa, (bytes, bytearray)) or len(rsa) != rsa_size:
        raise SigningError(f"RSA signature is {len(rsa)} bytes, not the reserved {rsa_size}")
    if not isinstance(cms, (bytes, bytearray)) or len(cms) > cms_size:
        raise SigningError(f"CMS signature is {len(cms)} bytes, more than the reserved {cms_size}",
                           hint="reserve more CMS space in the signer")
    return bytes(rsa) + bytes(cms).ljust(cms_size, b"\x00")


def assemble_prefix(toc_xml: bytes, alg: str, signer: Signer | None, sizes: tuple[int, int]) -> bytes:
    """header ‖ zlib TOC ‖ checksum ‖ signatures: everything before the file data."""
    toc_z = zlib.compress(toc_xml, 9)
    checksum = hashlib.new(alg, toc_z).digest()
    sigs = _signatures(signer, checksum, *sizes) if signer is not None else b""
    header = HEADER.pack(MAGIC, HEADER_SIZE, 1, len(toc_z), len(toc_xml), ALGORITHM_IDS[alg])
    return header + toc_z + checksum + sigs
