"""PKCS#12 (.pfx) reading without OpenSSL's full RSA key check.

`pkcs12.load_pkcs12` spends ~30 of its ~35 ms per 2048-bit device proving the RSA private key
consistent. fleetpkg instead walks the PFX itself (RFC 7292: PFX -> authSafe ContentInfos ->
SafeBags), verifies the MAC, decrypts the bags, loads the key with
`unsafe_skip_rsa_key_validation=True` and then checks the key against the certificate's public key
plus cheap RSA invariants (p*q = n, e*d = 1 mod p-1 and q-1). Left is the key derivation work the
file demands, which no reader can skip.

Input is hostile: every failure surfaces as CertificateError (or FormatError) naming the file;
`load_pfx` turns each into a PfxError carrying the rule it breaks, so `check` and `build` report a
bad .pfx as a finding on its device instead of stopping the fleet.
"""

from __future__ import annotations

import hashlib
import hmac
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ..formats import der
from ..errors import CertificateError, FleetpkgError, FormatError
from . import kdf
from .model import Identity
from .pbe import HMAC_PRF, PBKDF2, DecryptError, Pbe
from .pbe import decrypt as pbe_decrypt
from .pbe import parse as parse_pbe
from .tlv import oid

# RFC 7292 / PKCS#7 object identifiers
DATA = "1.2.840.113549.1.7.1"
SIGNED_DATA = "1.2.840.113549.1.7.2"
ENVELOPED_DATA = "1.2.840.113549.1.7.3"
ENCRYPTED_DATA = "1.2.840.113549.1.7.6"
KEY_BAG = "1.2.840.113549.1.12.10.1.1"
SHROUDED_KEY_BAG = "1.2.840.113549.1.12.10.1.2"
CERT_BAG = "1.2.840.113549.1.12.10.1.3"
SAFE_CONTENTS_BAG = "1.2.840.113549.1.12.10.1.6"
X509_CERTIFICATE = "1.2.840.113549.1.9.22.1"
FRIENDLY_NAME = "1.2.840.113549.1.9.20"
LOCAL_KEY_ID = "1.2.840.113549.1.9.21"
PBMAC1 = "1.2.840.113549.1.5.14"
DIGESTS = {
    "1.3.14.3.2.26": "sha1",
    "2.16.840.1.101.3.4.2.4": "sha224",
    "2.16.840.1.101.3.4.2.1": "sha256",
    "2.16.840.1.101.3.4.2.2": "sha384",
    "2.16.840.1.101.3.4.2.3": "sha512",
}

MAX_BAG_DEPTH = 4

# The rules (builder.certs.rules.RULES) a device .pfx breaks when it gives no usable identity.
PFX_MISSING = "pfx-missing"
PFX_UNREADABLE = "pfx-unreadable"  # not a file, damaged, truncated, not PKCS#12, unsupported
PFX_PASSWORD = "pfx-password"
PFX_NO_CERTIFICATE = "pfx-no-certificate"
PRIVATE_KEY = "private-key"  # no key, several keys, a key of another certificate, a damaged key


class PfxError(CertificateError):
    """A .pfx that gives no usable identity. `rule` is the RULES id it breaks (PFX_UNREADABLE when
    nothing more specific applies), so one bad device export becomes that device's finding."""

    def __init__(self, rule: str, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message, where=where, hint=hint)
        self.rule = rule


@dataclass(frozen=True)
class MacInfo:
    """The file's integrity MAC as declared: classic (PKCS#12 KDF + HMAC) or PBMAC1."""

    scheme: str  # "pkcs12" | "pbmac1"
    hash: str  # HMAC hash
    salt: bytes
    iterations: int
    kdf_hash: str  # PKCS#12 KDF hash, or PBKDF2 PRF hash for PBMAC1
    key_len: int
    digest: bytes = b""  # the MAC value stored in the file

    @property
    def name(self) -> str:
        return f"PBMAC1/PBKDF2-hmacWith{self.kdf_hash.upper()}/HMAC-{self.hash.upper()}" \
            if self.scheme == "pbmac1" else f"HMAC-{self.hash.upper()}"

    def key(self, password: bytes, bmp: bytes) -> bytes:
        if self.scheme == "pbmac1":
            return kdf.pbkdf2(self.kdf_hash, password, self.salt, self.iterations, self.key_len)
        return kdf.pkcs12_kdf(self.kdf_hash, bmp, self.salt, self.iterations, kdf.MAC_MATERIAL,
                              self.key_len)


@dataclass(frozen=True)
class KeyBag:
    pkcs8: bytes = field(repr=False)  # PrivateKeyInfo DER: secret
    pbe: Pbe | None  # shrouding (pkcs8ShroudedKeyBag) or None for a plain keyBag
    friendly_name: str | None
    local_key_id: bytes | None


@dataclass(frozen=True)
class CertBag:
    der: bytes
    pbe: Pbe | None  # encryption of the encryptedData holding it, None if in plain data
    friendly_name: str | None
    local_key_id: bytes | None


@dataclass(frozen=True)
class ParsedPfx:
    """Everything a .pfx holds, in file order, plus every encryption it declared."""

    keys: tuple[KeyBag, ...]
    certs: tuple[CertBag, ...]
    mac: MacInfo | None
    encryptions: tuple[Pbe, ...]  # containers and shrouded key bags, in file order


def _password_forms(password: bytes) -> list[tuple[bytes, bytes]]:
    """(raw, BMP) candidates. An empty password is ambiguous in PKCS#12: absent (no bytes) or
    empty BMPString (the two-byte terminator); OpenSSL tries both, so do we."""
    if password:
        return [(password, kdf.bmp_password(password))]
    return [(b"", b""), (b"", b"\x00\x00")]


def _parse_mac(node: der.Node) -> MacInfo:
    parts = node.expect(der.SEQUENCE, "MacData").children()
    digest_info = parts[0].children()
    alg = digest_info[0].children()
    digest = digest_info[1].as_octets()
    alg_oid = oid(alg[0])
    salt = parts[1].as_octets()
    iterations = parts[2].as_int() if len(parts) > 2 else 1
    if not 1 <= iterations <= kdf.MAX_ITERATIONS:
        raise FormatError(f"MAC iteration count {iterations} is out of range")
    if alg_oid in DIGESTS:
        name = DIGESTS[alg_oid]
        return MacInfo("pkcs12", name, salt, iterations, name, hashlib.new(name).digest_size, digest)
    if alg_oid == PBMAC1:
        params = alg[1].children()
        kdf_alg, mac_alg = params[0].children(), params[1].children()
        if oid(kdf_alg[0]) != PBKDF2:
            raise CertificateError("unsupported PBMAC1 key derivation (only PBKDF2)")
        kp = kdf_alg[1].children()
        ksalt, kiter = kp[0].as_octets(), kp[1].as_int()
        if not 1 <= kiter <= kdf.MAX_ITERATIONS:
            raise FormatError(f"PBMAC1 iteration count {kiter} is out of range")
        rest = kp[2:]
        key_len = None
        if rest and rest[0].tag == der.INTEGER:
            key_len = rest[0].as_int()
            rest = rest[1:]
        prf = HMAC_PRF.get(oid(rest[0].child(0))) if rest else "sha1"
        mac_hash = HMAC_PRF.get(oid(mac_alg[0]))
        if prf is None or mac_hash is None:
            raise CertificateError("unsupported PBMAC1 hash")
        if key_len is None or not 1 <= key_len <= 64:
            raise FormatError("PBMAC1 without a valid PBKDF2 key length")
        return MacInfo("pbmac1", mac_hash, ksalt, kiter, prf, key_len, digest)
    raise CertificateError(f"unsupported MAC algorithm {alg_oid}")


def _attributes(bag_parts: list[der.Node]) -> tuple[str | None, bytes | None]:
    name = key_id = None
    if len(bag_parts) > 2:
        for attr in bag_parts[2].expect(der.SET, "bag attributes").children():
            pieces = attr.children()
            attr_oid = oid(pieces[0])
            values = pieces[1].expect(der.SET, "attribute values").children() if len(pieces) > 1 else []
            if not values:
                continue
            if attr_oid == FRIENDLY_NAME:
                name = values[0].as_string()
            elif attr_oid == LOCAL_KEY_ID:
                key_id = values[0].as_octets()
    return name, key_id


def iter_safe_bags(data: bytes, depth: int = 0) -> Iterator[tuple[str, der.Node, list[der.Node]]]:
    """(bag type OID, bag value, SafeBag fields) for every bag in a SafeContents, nested
    safeContentsBags flattened (bounded depth)."""
    if depth > MAX_BAG_DEPTH:
        raise FormatError("SafeContents nested too deeply")
    for bag in der.parse(data).expect(der.SEQUENCE, "SafeContents").children():
        parts = bag.expect(der.SEQUENCE, "SafeBag").children()
        if len(parts) < 2:
            raise FormatError("SafeBag without a value")
        bag_id = oid(parts[0])
        value = parts[1].expect(0xA0, "SafeBag value").child(0)
        if bag_id == SAFE_CONTENTS_BAG:
            yield from iter_safe_bags(value.raw, depth + 1)
        else:
            yield bag_id, value, parts


class _Reader:
    """Walks SafeContents collecting bags; holds the password candidate that passed the MAC."""

    def __init__(self, password: bytes, bmp: bytes):
        self.password = password
        self.bmp = bmp
        self.keys: list[KeyBag] = []
        self.certs: list[CertBag] = []
        self.encryptions: list[Pbe] = []

    def decrypt(self, pbe: Pbe, data: bytes) -> bytes:
        self.encryptions.append(pbe)
        return pbe_decrypt(pbe, self.password, self.bmp, data)

    def safe_contents(self, data: bytes, container_pbe: Pbe | None) -> None:
        for bag_id, value, parts in iter_safe_bags(data):
            name, key_id = _attributes(parts)
            if bag_id == KEY_BAG:
                self.keys.append(KeyBag(value.expect(der.SEQUENCE, "PrivateKeyInfo").raw, None, name, key_id))
            elif bag_id == SHROUDED_KEY_BAG:
                epki = value.expect(der.SEQUENCE, "EncryptedPrivateKeyInfo").children()
                pbe = parse_pbe(epki[0])
                plain = self.decrypt(pbe, epki[1].as_octets())
                self.keys.append(KeyBag(plain, pbe, name, key_id))
            elif bag_id == CERT_BAG:
                cert_parts = value.expect(der.SEQUENCE, "CertBag").children()
                if oid(cert_parts[0]) != X509_CERTIFICATE:
                    continue  # SDSI certificates: never used for X.509 identities
                cert_der = cert_parts[1].expect(0xA0, "certValue").child(0).as_octets()
                self.certs.append(CertBag(cert_der, container_pbe, name, key_id))
            # crlBag, secretBag: not part of an identity; ignored like OpenSSL does

    def content_info(self, info: der.Node) -> None:
        parts = info.expect(der.SEQUENCE, "ContentInfo").children()
        ctype = oid(parts[0])
        if ctype == DATA:
            self.safe_contents(parts[1].expect(0xA0, "content").child(0).as_octets(), None)
        elif ctype == ENCRYPTED_DATA:
            enc = parts[1].expect(0xA0, "content").child(0).children()  # EncryptedData
            eci = enc[1].expect(der.SEQUENCE, "EncryptedContentInfo").children()
            pbe = parse_pbe(eci[1])
            if len(eci) < 3:
                return  # no content
            body = eci[2]
            if body.tag == 0x80:
                ciphertext = body.value
            elif body.tag == 0xA0:
                ciphertext = b"".join(c.as_octets() for c in body.children())
            else:
                raise FormatError("encryptedContent has an unexpected tag")
            self.safe_contents(self.decrypt(pbe, ciphertext), pbe)
        elif ctype == ENVELOPED_DATA:
            raise CertificateError("public-key encrypted (envelopedData) PKCS#12 is not supported",
                                   hint="re-export the .pfx with password protection")
        else:
            raise CertificateError(f"unsupported PKCS#12 content type {ctype}")


def parse_pfx(data: bytes, password: bytes) -> ParsedPfx:
    """Verify and decrypt a PKCS#12 file. Raises CertificateError / FormatError."""
    try:
        return _parse_pfx(bytes(data), password)
    except FormatError as exc:
        raise FormatError(f"not a valid PKCS#12 file ({exc.message})") from None
    except FleetpkgError:
        raise
    except DecryptError:
        raise PfxError(PFX_PASSWORD, "wrong password (the encrypted contents do not decrypt)",
                       hint="check the password source for this device") from None
    except (ValueError, TypeError, IndexError, OverflowError, UnsupportedAlgorithm) as exc:
        raise FormatError(f"not a valid PKCS#12 file ({type(exc).__name__}: {exc})") from None


def _parse_pfx(data: bytes, password: bytes) -> ParsedPfx:
    pfx = der.parse(data).expect(der.SEQUENCE, "PFX").children()
    if len(pfx) < 2 or pfx[0].tag != der.INTEGER or pfx[0].as_int() != 3:
        raise FormatError("expected a PFX with version 3")
    auth = pfx[1].expect(der.SEQUENCE, "authSafe").children()
    ctype = oid(auth[0])
    if ctype == SIGNED_DATA:
        raise CertificateError("public-key integrity mode (signedData) PKCS#12 is not supported",
                               hint="re-export the .pfx with password integrity (the usual kind)")
    if ctype != DATA:
        raise FormatError(f"unexpected authSafe content type {ctype}")
    auth_bytes = auth[1].expect(0xA0, "authSafe content").child(0).as_octets()
    mac = _parse_mac(pfx[2]) if len(pfx) > 2 else None
    forms = _password_forms(password)
    if mac is not None:
        expected = mac.digest
        for raw, bmp in forms:
            key = mac.key(raw, bmp)
            if hmac.compare_digest(hmac.new(key, auth_bytes, mac.hash).digest(), expected):
                forms = [(raw, bmp)]
                break
        else:
            raise PfxError(PFX_PASSWORD, "wrong password (MAC verification failed)",
                           hint="check the password source for this device")
    infos = der.parse(auth_bytes).expect(der.SEQUENCE, "AuthenticatedSafe").children()
    last: Exception | None = None
    for raw, bmp in forms:  # several only for an empty password in a MAC-less file
        reader = _Reader(raw, bmp)
        try:
            for info in infos:
                reader.content_info(info)
        except DecryptError as exc:
            if mac is not None:
                raise CertificateError("the encrypted contents do not decrypt with this password "
                                       "although the MAC matched (damaged or oddly made file)") from None
            last = exc
            continue
        return ParsedPfx(tuple(reader.keys), tuple(reader.certs), mac, tuple(reader.encryptions))
    raise DecryptError(str(last))


# -- identity ------------------------------------------------------------------------------

def load_private_key(pkcs8: bytes) -> PrivateKeyTypes:
    """PKCS#8 DER -> key, skipping OpenSSL's slow RSA check (see rsa_consistent instead)."""
    try:
        return serialization.load_der_private_key(pkcs8, None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PfxError(PRIVATE_KEY, f"the private key cannot be read ({exc})") from None


def rsa_consistent(key: rsa.RSAPrivateKey) -> bool:
    """The cheap part of an RSA key check: p*q = n and e*d = 1 modulo p-1 and q-1 (microseconds,
    where OpenSSL's full check with its primality tests costs ~30 ms)."""
    nums = key.private_numbers()
    p, q, d = nums.p, nums.q, nums.d
    n, e = nums.public_numbers.n, nums.public_numbers.e
    return p > 1 and q > 1 and p * q == n and (e * d) % (p - 1) == 1 and (e * d) % (q - 1) == 1


def public_key_der(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether `key` is the private half of `cert`'s public key (and, for RSA, self-consistent)."""
    try:
        if public_key_der(key.public_key()) != public_key_der(cert.public_key()):
            return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return rsa_consistent(key) if isinstance(key, rsa.RSAPrivateKey) else True


def load_certificate(der_bytes: bytes) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der_bytes)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise CertificateError(f"a certificate in it cannot be read ({exc})") from None


def identity_from(parsed: ParsedPfx, source: Path | None = None) -> Identity:
    """The one key, the certificate it belongs to, and the rest as extra certificates."""
    if not parsed.keys:
        raise PfxError(PRIVATE_KEY, "contains no private key",
                       hint='export the certificate *with* its private key ("Yes, export the private key")')
    if len(parsed.keys) > 1:
        raise PfxError(PRIVATE_KEY, f"contains {len(parsed.keys)} private keys; a device .pfx must hold exactly one")
    if not parsed.certs:
        raise PfxError(PFX_NO_CERTIFICATE, "contains no certificate",
                       hint="export the device certificate with its key")
    key = load_private_key(parsed.keys[0].pkcs8)
    certs = [load_certificate(bag.der) for bag in parsed.certs]
    try:
        key_spki = public_key_der(key.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise PfxError(PRIVATE_KEY, f"the private key cannot be used ({exc})") from None
    leaf_index = None
    for i, cert in enumerate(certs):
        try:
            if public_key_der(cert.public_key()) == key_spki:
                leaf_index = i
                break
        except (ValueError, TypeError, UnsupportedAlgorithm):
            continue
    if leaf_index is None:
        subjects = "; ".join(c.subject.rfc4514_string() or "(empty subject)" for c in certs)
        raise PfxError(PRIVATE_KEY, f"the private key does not match any certificate in it ({subjects})",
                       hint="export the key together with its own certificate")
    if isinstance(key, rsa.RSAPrivateKey) and not rsa_consistent(key):
        raise PfxError(PRIVATE_KEY, "the RSA private key is damaged (its numbers are inconsistent)")
    extra = tuple(c for i, c in enumerate(certs) if i != leaf_index)
    return Identity(certs[leaf_index], key, extra, source)


def load_pfx(path: Path, password: bytes) -> Identity:
    """Read a device .pfx into an Identity; every problem is one PfxError naming the file and the
    rule it breaks. A path that is not a regular file (a folder, a device) is unreadable, not
    missing: something is there, and it is not a .pfx."""
    path = Path(path)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # never open a folder, FIFO or device
            kind = "a folder" if path.is_dir() else "not a regular file"
            raise PfxError(PFX_UNREADABLE, f"is {kind}, not a .pfx file", where=str(path))
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        raise PfxError(PFX_MISSING, "no such file", where=str(path),
                       hint="export this Mac's .pfx there or fix its path in the inventory; "
                            "relative paths start at the CSV's folder") from None
    except OSError as exc:
        raise PfxError(PFX_UNREADABLE, f"cannot read the .pfx ({exc.strerror or exc})", where=str(path)) from None
    try:
        return identity_from(parse_pfx(data, password), path)
    except FleetpkgError as exc:
        rule = exc.rule if isinstance(exc, PfxError) else PFX_UNREADABLE
        raise PfxError(rule, exc.message, where=str(path), hint=exc.hint) from None
