"""RC2 block cipher (RFC 2268) in CBC mode, for pbeWithSHAAnd40BitRC2-CBC certificate bags.

Older Windows CAs and Keychain Access export certificates under 40-bit RC2, which `cryptography`
no longer offers (its decrepit RC2 takes 128-bit keys only, with no effective-key-bits setting).
The cipher is tiny and only ever handles a few kilobytes per .pfx, so pure Python is fast enough.
"""

from __future__ import annotations

import struct

# RFC 2268 section 2: PITABLE, a permutation of 0..255 derived from the digits of pi.
PITABLE = bytes.fromhex(
    "d978f9c419ddb5ed28e9fd794aa0d89dc67e37832b76538e624c6488448bfba2"
    "179a59f587b34f1361456d8d09817d32bd8f40eb86b77b0bf09521225c6b4e82"
    "54d66593ce60b21c7356c014a78cf1dc1275ca1f3bbee4d1423dd430a33cb626"
    "6fbf0eda4669075727f21d9bbc944303f811c7f690ef3ee706c3d52fc8661ed7"
    "08e8eade8052eef784aa72ac354d6a2a961ad2715a1549744b9fd05e0418a4ec"
    "c2e0416e0f51cbcc2491af50a1f47039997c3a8523b8b47afc02365b25559731"
    "2d5dfa98e38a92ae05df2910676cbac9d300e6cfe19ea82c6316013f58e289a9"
    "0d38341bab33ffb0bb480c5fb9b1cd2ec5f3db47e5a59c770aa62068fe7fc1ad"
)

_MASK = 0xFFFF
BLOCK = 8


def expand_key(key: bytes, effective_bits: int) -> tuple[int, ...]:
    """RFC 2268 section 2: the 64 16-bit subkeys K[0..63]."""
    if not 1 <= len(key) <= 128 or not 1 <= effective_bits <= 1024:
        raise ValueError("RC2 key must be 1..128 bytes with 1..1024 effective bits")
    t = len(key)
    t8 = (effective_bits + 7) // 8
    tm = 255 % (1 << (8 + effective_bits - 8 * t8))
    buf = bytearray(key) + bytearray(128 - t)
    for i in range(t, 128):
        buf[i] = PITABLE[(buf[i - 1] + buf[i - t]) & 0xFF]
    buf[128 - t8] = PITABLE[buf[128 - t8] & tm]
    for i in range(127 - t8, -1, -1):
        buf[i] = PITABLE[buf[i + 1] ^ buf[i + t8]]
    return tuple(buf[2 * i] | (buf[2 * i + 1] << 8) for i in range(64))


def _rol(x: int, s: int) -> int:
    return ((x << s) | (x >> (16 - s))) & _MASK


def _ror(x: int, s: int) -> int:
    return ((x >> s) | (x << (16 - s))) & _MASK


def encrypt_block(k: tuple[int, ...], block: bytes) -> bytes:
    r0, r1, r2, r3 = (int.from_bytes(block[i:i + 2], "little") for i in range(0, 8, 2))
    j = 0
    for rnd in range(16):
        r0 = _rol((r0 + k[j] + (r3 & r2) + (~r3 & r1)) & _MASK, 1)
        r1 = _rol((r1 + k[j + 1] + (r0 & r3) + (~r0 & r2)) & _MASK, 2)
        r2 = _rol((r2 + k[j + 2] + (r1 & r0) + (~r1 & r3)) & _MASK, 3)
        r3 = _rol((r3 + k[j + 3] + (r2 & r1) + (~r2 & r0)) & _MASK, 5)
        j += 4
        if rnd in (4, 10):  # mashing rounds after mixing rounds 5 and 11
            r0 = (r0 + k[r3 & 63]) & _MASK
            r1 = (r1 + k[r0 & 63]) & _MASK
            r2 = (r2 + k[r1 & 63]) & _MASK
            r3 = (r3 + k[r2 & 63]) & _MASK
    return b"".join(r.to_bytes(2, "little") for r in (r0, r1, r2, r3))


def decrypt_block(k: tuple[int, ...], block: bytes) -> bytes:
    r0, r1, r2, r3 = (int.from_bytes(block[i:i + 2], "little") for i in range(0, 8, 2))
    j = 60
    for rnd in range(15, -1, -1):
        if rnd in (4, 10):
            r3 = (r3 - k[r2 & 63]) & _MASK
            r2 = (r2 - k[r1 & 63]) & _MASK
            r1 = (r1 - k[r0 & 63]) & _MASK
            r0 = (r0 - k[r3 & 63]) & _MASK
        r3 = (_ror(r3, 5) - k[j + 3] - (r2 & r1) - (~r2 & r0)) & _MASK
        r2 = (_ror(r2, 3) - k[j + 2] - (r1 & r0) - (~r1 & r3)) & _MASK
        r1 = (_ror(r1, 2) - k[j + 1] - (r0 & r3) - (~r0 & r2)) & _MASK
        r0 = (_ror(r0, 1) - k[j] - (r3 & r2) - (~r3 & r1)) & _MASK
        j -= 4
    return b"".join(r.to_bytes(2, "little") for r in (r0, r1, r2, r3))


def cbc_decrypt(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    """Raw CBC decryption (padding is the caller's business). len(data) must be a multiple of 8.

    The block function is inlined here (same steps as decrypt_block): this loop is the whole cost
    of reading an RC2 certificate bag.
    """
    if len(iv) != BLOCK or len(data) % BLOCK:
        raise ValueError("RC2-CBC needs an 8-byte IV and whole 8-byte blocks")
    k = expand_key(key, effective_bits)
    words = struct.unpack(f"<{len(data) // 2}H", data)
    p0, p1, p2, p3 = struct.unpack("<4H", iv)
    out = []
    m = _MASK
    for i in range(0, len(words), 4):
        c0, c1, c2, c3 = words[i:i + 4]
        r0, r1, r2, r3 = c0, c1, c2, c3
        j = 63
        for rnd in range(15, -1, -1):
            if rnd == 4 or rnd == 10:
                r3 = (r3 - k[r2 & 63]) & m
                r2 = (r2 - k[r1 & 63]) & m
                r1 = (r1 - k[r0 & 63]) & m
                r0 = (r0 - k[r3 & 63]) & m
            r3 = (((r3 >> 5) | (r3 << 11)) - k[j] - (r2 & r1) - (~r2 & r0)) & m
            r2 = (((r2 >> 3) | (r2 << 13)) - k[j - 1] - (r1 & r0) - (~r1 & r3)) & m
            r1 = (((r1 >> 2) | (r1 << 14)) - k[j - 2] - (r0 & r3) - (~r0 & r2)) & m
            r0 = (((r0 >> 1) | (r0 << 15)) - k[j - 3] - (r3 & r2) - (~r3 & r1)) & m
            j -= 4
        out += (r0 ^ p0, r1 ^ p1, r2 ^ p2, r3 ^ p3)
        p0, p1, p2, p3 = c0, c1, c2, c3
    return struct.pack(f"<{len(out)}H", *out)


def cbc_encrypt(key: bytes, effective_bits: int, iv: bytes, data: bytes) -> bytes:
    """Raw CBC encryption; fleetpkg never writes RC2, this exists to test decryption round trips."""
    if len(iv) != BLOCK or len(data) % BLOCK:
        raise ValueError("RC2-CBC needs an 8-byte IV and whole 8-byte blocks")
    k = expand_key(key, effective_bits)
    out = bytearray()
    prev = iv
    for i in range(0, len(data), BLOCK):
        prev = encrypt_block(k, bytes(a ^ b for a, b in zip(data[i:i + BLOCK], prev)))
        out += prev
    return bytes(out)
