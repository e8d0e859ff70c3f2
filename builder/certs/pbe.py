"""Password-based encryption schemes found in .pfx files, identified by AlgorithmIdentifier.

Each scheme is parsed into a `Pbe` (names, salt, iterations) before anything is decrypted, so
`inspect` can report what a file uses and the benchmark can time exactly the KDF work it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..formats import der
from ..errors import CertificateError, FormatError
from . import kdf, rc2
from .tlv import oid

# PKCS#12 PBE (RFC 7292 appendix C): oid -> (name, cipher, key bytes, iv bytes, RC2 effective bits)
PBE_SHA1_3DES = "1.2.840.113549.1.12.1.3"
PBE_SHA1_RC2_40 = "1.2.840.113549.1.12.1.6"
PKCS12_PBE = {
    PBE_SHA1_3DES: ("pbeWithSHAAnd3-KeyTripleDES-CBC", "3des", 24, 8, None),
    "1.2.840.113549.1.12.1.4": ("pbeWithSHAAnd2-KeyTripleDES-CBC", "3des", 16, 8, None),
    "1.2.840.113549.1.12.1.5": ("pbeWithSHAAnd128BitRC2-CBC", "rc2", 16, 8, 128),
    PBE_SHA1_RC2_40: ("pbeWithSHAAnd40BitRC2-CBC", "rc2", 5, 8, 40),
}
PKCS12_RC4 = {"1.2.840.113549.1.12.1.1": "pbeWithSHAAnd128BitRC4",
              "1.2.840.113549.1.12.1.2": "pbeWithSHAAnd40BitRC4"}
PBES2 = "1.2.840.113549.1.5.13"
PBKDF2 = "1.2.840.113549.1.5.12"
# PBKDF2 PRFs (RFC 8018 B.1)
HMAC_PRF = {
    "1.2.840.113549.2.7": "sha1",
    "1.2.840.113549.2.8": "sha224",
    "1.2.840.113549.2.9": "sha256",
    "1.2.840.113549.2.10": "sha384",
    "1.2.840.113549.2.11": "sha512",
}
# PBES2 encryption schemes: oid -> (name, cipher, key bytes)
PBES2_CIPHERS = {
    "2.16.840.1.101.3.4.1.2": ("AES-128-CBC", "aes", 16),
    "2.16.840.1.101.3.4.1.22": ("AES-192-CBC", "aes", 24),
    "2.16.840.1.101.3.4.1.42": ("AES-256-CBC", "aes", 32),
    "1.2.840.113549.3.7": ("DES-EDE3-CBC", "3des", 24),
}


@dataclass(frozen=True)
class Pbe:
    """One password-based encryption as a file declares it (no secrets in here)."""

    oid: str
    name: str  # e.g. "pbeWithSHAAnd3-KeyTripleDES-CBC" or "PBES2/PBKDF2-hmacWithSHA256/AES-256-CBC"
    kdf: str  # "pkcs12" or "pbkdf2"
    hash: str  # KDF hash / PRF hash name
    salt: bytes
    iterations: int
    cipher: str  # "3des" | "rc2" | "aes"
    key_len: int
    iv: bytes | None = None  # PBES2: stated in the parameters; PKCS#12 PBE: derived
    rc2_bits: int | None = None

    def derive(self, password: bytes, bmp: bytes) -> tuple[bytes, bytes]:
        """(key, iv): the KDF work. PBKDF2 takes the password as typed (`password`), the PKCS#12
        KDF its BMPString form (`bmp`, see kdf.bmp_password)."""
        if self.kdf == "pbkdf2":
            return kdf.pbkdf2(self.hash, password, self.salt, self.iterations, self.key_len), self.iv
        key = kdf.pkcs12_kdf(self.hash, bmp, self.salt, self.iterations, kdf.KEY_MATERIAL, self.key_len)
        iv = kdf.pkcs12_kdf(self.hash, bmp, self.salt, self.iterations, kdf.IV_MATERIAL, 8)
        return key, iv


def _iterations(node: der.Node) -> int:
    count = node.as_int()
    if not 1 <= count <= kdf.MAX_ITERATIONS:
        raise FormatError(f"iteration count {count} is out of range (1..{kdf.MAX_ITERATIONS})")
    return count


def parse(alg: der.Node) -> Pbe:
    """AlgorithmIdentifier -> Pbe. Unsupported schemes raise CertificateError naming them."""
    parts = alg.expect(der.SEQUENCE, "AlgorithmIdentifier").children()
    if not parts:
        raise FormatError("empty AlgorithmIdentifier")
    alg_oid = oid(parts[0])
    if alg_oid in PKCS12_PBE:
        name, cipher, key_len, _, bits = PKCS12_PBE[alg_oid]
        params = parts[1].expect(der.SEQUENCE, "PBE parameters").children() if len(parts) > 1 else []
        if len(params) != 2:
            raise FormatError("PKCS#12 PBE parameters must be (salt, iterations)")
        return Pbe(alg_oid, name, "pkcs12", "sha1", params[0].as_octets(), _iterations(params[1]),
                   cipher, key_len, None, bits)
    if alg_oid == PBES2:
        if len(parts) < 2:
            raise FormatError("PBES2 without parameters")
        kdf_alg, enc_alg = parts[1].expect(der.SEQUENCE, "PBES2 parameters").children()[:2]
        kdf_parts = kdf_alg.children()
        if oid(kdf_parts[0]) != PBKDF2:
            raise CertificateError(f"unsupported PBES2 key derivation {oid(kdf_parts[0])} (only PBKDF2)")
        kp = kdf_parts[1].expect(der.SEQUENCE, "PBKDF2 parameters").children()
        salt = kp[0].as_octets()
        iterations = _iterations(kp[1])
        rest = kp[2:]
        key_len = None
        if rest and rest[0].tag == der.INTEGER:
            key_len = rest[0].as_int()
            rest = rest[1:]
        prf = "sha1"
        if rest:
            prf_oid = oid(rest[0].child(0))
            if prf_oid not in HMAC_PRF:
                raise CertificateError(f"unsupported PBKDF2 PRF {prf_oid}")
            prf = HMAC_PRF[prf_oid]
        enc_parts = enc_alg.children()
        enc_oid = oid(enc_parts[0])
        if enc_oid not in PBES2_CIPHERS:
            raise CertificateError(f"unsupported PBES2 cipher {enc_oid}")
        cname, cipher, ckey_len = PBES2_CIPHERS[enc_oid]
        if key_len is not None and key_len != ckey_len:
            raise FormatError(f"PBKDF2 key length {key_len} does not fit {cname}")
        iv = enc_parts[1].as_octets() if len(enc_parts) > 1 else b""
        want_iv = 16 if cipher == "aes" else 8
        if len(iv) != want_iv:
            raise FormatError(f"{cname} IV must be {want_iv} bytes, found {len(iv)}")
        prf_name = "hmacWith" + prf.upper()
        return Pbe(alg_oid, f"PBES2/PBKDF2-{prf_name}/{cname}", "pbkdf2", prf, salt, iterations,
                   cipher, ckey_len, iv)
    if alg_oid in PKCS12_RC4:
        raise CertificateError(f"unsupported encryption {PKCS12_RC4[alg_oid]} (RC4)",
                               hint="re-export the .pfx with 3DES or AES")
    raise CertificateError(f"unsupported encryption algorithm {alg_oid}",
                           hint="re-export the .pfx with 3DES or AES")


class DecryptError(Exception):
    """Decryption produced no valid padding: with a MAC-less file, the sign of a wrong password."""


def decrypt(pbe: Pbe, password: bytes, bmp: bytes, data: bytes) -> bytes:
    key, iv = pbe.derive(password, bmp)
    return decrypt_with(pbe, key, iv, data)


def decrypt_with(pbe: Pbe, key: bytes, iv: bytes, data: bytes) -> bytes:
    block = 16 if pbe.cipher == "aes" else 8
    if not data or len(data) % block:
        raise DecryptError("ciphertext is not a whole number of blocks")
    if pbe.cipher == "rc2":
        plain = rc2.cbc_decrypt(key, pbe.rc2_bits or 128, iv, data)
    else:
        algorithm = algorithms.AES(key) if pbe.cipher == "aes" else TripleDES(key)
        dec = Cipher(algorithm, modes.CBC(iv)).decryptor()
        plain = dec.update(data) + dec.finalize()
    pad = plain[-1]
    if not 1 <= pad <= block or plain[-pad:] != bytes([pad]) * pad:
        raise DecryptError("bad padding")
    return plain[:-pad]
