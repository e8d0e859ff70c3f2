"""Load and vet the identity that signs packages (Developer ID Installer or a code-signing cert).

Every check happens here, before any output is written, so a wrong password, an expired
certificate or a key from another certificate fails with one line naming the file instead of
producing a package Installer rejects later. Passwords come from the caller (env, file, prompt).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from ..errors import SigningError

EKU_DEVELOPER_ID_INSTALLER = x509.ObjectIdentifier("1.2.840.113635.100.4.13")
RSA_SIZES = (2048, 4096)
CODESIGN_WARNING = ("certificate has the generic codeSigning purpose, not Developer ID Installer: "
                    "packages will verify, but Gatekeeper will not trust it")


@dataclass(frozen=True)
class SigningIdentity:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]  # issuers, leaf excluded, root last
    warnings: tuple[str, ...]


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read {what}: {exc.strerror or exc}", where=str(path)) from None


def _load_pem_certs(path: Path) -> list[x509.Certificate]:
    data = _read(path, "certificate file")
    try:
        if b"-----BEGIN" in data:
            certs = x509.load_pem_x509_certificates(data)
        else:
            certs = [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise SigningError("not a PEM or DER X.509 certificate", where=str(path)) from None
    return certs


def _load_key(path: Path, password: bytes | None):
    data = _read(path, "private key")
    try:
        if b"-----BEGIN" in data:
            return serialization.load_pem_private_key(data, password)
        return serialization.load_der_private_key(data, password)
    except TypeError:
        if password is None:
            raise SigningError("private key is encrypted", where=str(path),
                               hint="pass its password with --key-password-env") from None
        raise SigningError("private key is not encrypted but a password was given", where=str(path)) from None
    except ValueError:
        raise SigningError("cannot load the private key (wrong password or not a PEM/DER key)",
                           where=str(path)) from None


def _order_chain(leaf: x509.Certificate, others: Sequence[x509.Certificate], source: str
                 ) -> tuple[tuple[x509.Certificate, ...], list[str]]:
    """Issuers from the leaf upwards; a .p12 or chain file may list them in any order."""
    unique = {c.public_bytes(serialization.Encoding.DER): c for c in others}
    pool = [c for c in unique.values() if c != leaf]
    chain: list[x509.Certificate] = []
    current = leaf
    while current.issuer != current.subject:
        parent = next((c for c in pool if c.subject == current.issuer), None)
        if parent is None:
            break
        chain.append(parent)
        pool.remove(parent)
        current = parent
    warnings = []
    for extra in pool:
        warnings.append(f"{source}: ignored certificate not in the signing chain: {extra.subject.rfc4514_string()}")
    if not chain:
        warnings.append(f"{source}: no issuer certificates: Macs build the chain from their keychain, but "
                        "`fleetpkg verify` cannot (add the Developer ID CA and Apple Root CA with --chain)")
    elif current.issuer != current.subject:
        warnings.append(f"{source}: chain ends at {current.subject.rfc4514_string()}, not at a root certificate")
    return tuple(chain), warnings


def _check_leaf(cert: x509.Certificate, source: str, now: datetime) -> list[str]:
    warnings = []
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is not None and EKU_DEVELOPER_ID_INSTALLER in eku:
        pass
    elif eku is not None and ExtendedKeyUsageOID.CODE_SIGNING in eku:
        warnings.append(f"{source}: {CODESIGN_WARNING}")
    else:
        raise SigningError(
            "certificate cannot sign installer packages (needs the Developer ID Installer or codeSigning "
            "extended key usage)", where=source, hint="export the 'Developer ID Installer' identity")
    if cert.not_valid_after_utc < now:
        raise SigningError(f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}", where=source,
                           hint="renew it in your Apple Developer account")
    if cert.not_valid_before_utc > now:
        raise SigningError(f"certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d}", where=source)
    return warnings


def _check_key(key, cert: x509.Certificate, source: str) -> rsa.RSAPrivateKey:
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SigningError("signing key is not RSA (Installer signatures need RSA 2048 or 4096)", where=source)
    if key.key_size not in RSA_SIZES:
        raise SigningError(f"RSA key is {key.key_size} bits; use 2048 or 4096", where=source)
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    enc = serialization.Encoding.DER
    if key.public_key().public_bytes(enc, pub) != cert.public_key().public_bytes(enc, pub):
        raise SigningError("private key does not belong to the certificate", where=source)
    return key


def load_signing_identity(
    p12: Path | None,
    password: bytes | None,
    *,
    certificate: Path | None = None,
    key: Path | None = None,
    chain: Sequence[Path] = (),
    now: datetime | None = None,
) -> SigningIdentity:
    """From a .p12 (`password` is its password) or PEM/DER certificate + key (`password` is the
    key's password) + optional chain files; validates it for installer signing."""
    now = now or datetime.now(timezone.utc)
    extra: list[x509.Certificate] = []
    if p12 is not None:
        if certificate is not None or key is not None:
            raise SigningError("give either a .p12 identity or --certificate/--key, not both")
        source = str(p12)
        data = _read(p12, "signing identity")
        try:
            bundle = pkcs12.load_pkcs12(data, password)
        except ValueError:
            hint = "set the password with --password-env or --password-file" if password is None else None
            raise SigningError("cannot open the PKCS#12 file (wrong password or not a .p12)",
                               where=source, hint=hint) from None
        if bundle.key is None or bundle.cert is None:
            raise SigningError("PKCS#12 file holds no private key with its certificate", where=source)
        priv, leaf = bundle.key, bundle.cert.certificate
        extra = [c.certificate for c in bundle.additional_certs]
    else:
        if certificate is None or key is None:
            raise SigningError("a signing identity needs a .p12, or both --certificate and --key")
        source = str(certificate)
        certs = _load_pem_certs(certificate)
        leaf, extra = certs[0], certs[1:]
        priv = _load_key(key, password)
    for path in chain:
        extra.extend(_load_pem_certs(path))
    priv = _check_key(priv, leaf, source)
    warnings = _check_leaf(leaf, source, now)
    ordered, chain_warnings = _order_chain(leaf, extra, source)
    for cert in ordered:
        if cert.not_valid_after_utc < now:
            raise SigningError(f"chain certificate {cert.subject.rfc4514_string()} expired on "
                               f"{cert.not_valid_after_utc:%Y-%m-%d}", where=source)
    return SigningIdentity(priv, leaf, ordered, tuple(warnings + chain_warnings))
