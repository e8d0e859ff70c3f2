"""Password-based key derivation used by PKCS#12: the PKCS#12 KDF (RFC 7292 appendix B.2) and
PBKDF2 (RFC 8018, via hashlib). These iterations are the work a .pfx *demands*; everything else
fleetpkg does with a .pfx should cost little next to them (see benchmarks/bench_check.py).
"""

from __future__ import annotations

import hashlib

# PKCS#12 KDF purposes (the "ID" byte of RFC 7292 B.3)
KEY_MATERIAL = 1
IV_MATERIAL = 2
MAC_MATERIAL = 3

# hash name -> (output bytes u, block bytes v)
_HASHES = {
    "sha1": (20, 64),
    "sha224": (28, 64),
    "sha256": (32, 64),
    "sha384": (48, 128),
    "sha512": (64, 128),
}

MAX_ITERATIONS = 10_000_000  # a hostile file must not be able to stall a fleet check for hours


def supported_hash(name: str) -> bool:
    return name in _HASHES


def bmp_password(password: bytes) -> bytes:
    """The PKCS#12 KDF's password form: BMPString (UTF-16BE) plus a two-byte NUL terminator.

    Matches OpenSSL: UTF-8 input is converted as UTF-8; bytes that are not valid UTF-8 map one
    byte to one character. The empty password gives just the terminator.
    """
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        text = password.decode("latin-1")
    return text.encode("utf-16-be") + b"\x00\x00"


# Deliberately not memoised: a cache would keep passwords and derived keys alive in process
# memory. Callers avoid reading the same p12 twice instead (see profiles.device_profile).
def pkcs12_kdf(hash_name: str, password: bytes, salt: bytes, iterations: int, purpose: int,
               length: int) -> bytes:
    """RFC 7292 B.2. `password` is already in BMP form (see bmp_password; b"" = absent)."""
    u, v = _HASHES[hash_name]
    new = getattr(hashlib, hash_name)
    d = bytes([purpose]) * v
    i_blocks = bytearray(_fill(salt, v) + _fill(password, v))
    out = bytearray()
    while True:
        a = new(d + i_blocks).digest()
        for _ in range(iterations - 1):
            a = new(a).digest()
        out += a
        if len(out) >= length:
            return bytes(out[:length])
        b = int.from_bytes((a * (v // u + 1))[:v], "big") + 1
        mod = 1 << (8 * v)
        for j in range(0, len(i_blocks), v):
            block = (int.from_bytes(i_blocks[j:j + v], "big") + b) % mod
            i_blocks[j:j + v] = block.to_bytes(v, "big")


def _fill(data: bytes, v: int) -> bytes:
    """`data` repeated to v * ceil(len(data) / v) bytes (empty stays empty)."""
    if not data:
        return b""
    target = v * ((len(data) + v - 1) // v)
    return (data * ((target + len(data) - 1) // len(data)))[:target]


def pbkdf2(hash_name: str, password: bytes, salt: bytes, iterations: int, length: int) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, length)
