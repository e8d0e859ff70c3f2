"""A device's new .pfx: PKCS#12 bytes, then an atomic replace that keeps the old file.

The file is written as `.<name>.<random>.tmp` (mode 0600, flushed to disk) beside the target and
renamed over it, so at every moment the inventory's path holds the old file or the new one,
never a part. The replaced file is first copied the same way to `<name>.previous` (0600), so a
bad renewal can be undone by hand. The PKCS#12 is what `cryptography` writes by default for a
password (PBES2/AES-256, HMAC-SHA256): `check` and `build` read it with builder/certs/pfx.py and
`openssl pkcs12` opens it; `build` re-encodes it for macOS anyway.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12

PREVIOUS_SUFFIX = ".previous"


def pfx_bytes(hostname: str, key: rsa.RSAPrivateKey, cert: x509.Certificate,
              chain: Sequence[x509.Certificate], password: bytes) -> bytes:
    """PKCS#12 of the key, the certificate (friendly name = hostname) and its CA chain."""
    return pkcs12.serialize_key_and_certificates(
        hostname.encode("utf-8"), key, cert, list(chain) or None,
        serialization.BestAvailableEncryption(bytes(password)))


def _write_new(target: Path, data: bytes) -> Path:
    """`data` in a fresh 0600 temporary file beside `target`, on disk before it is renamed."""
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(name)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _replace(tmp: Path, target: Path) -> None:
    try:
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pfx(target: Path, data: bytes) -> Path | None:
    """Put `data` at `target` atomically (0600); an existing file is kept as target.previous
    (0600, replacing an older one). Returns the .previous path when one was written."""
    previous = None
    if target.exists():
        previous = target.with_name(target.name + PREVIOUS_SUFFIX)
        _replace(_write_new(target, target.read_bytes()), previous)
    _replace(_write_new(target, data), target)
    _sync_dir(target.parent)
    return previous
