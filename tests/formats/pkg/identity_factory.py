"""Test signing identities shaped like Apple's Developer ID Installer chain, built with cryptography.

root ("Test Root CA") -> "Developer ID Certification Authority"-like intermediate -> leaf with the
Developer ID Installer EKU (critical) and Apple's critical 1.2.840.113635.100.6.1.14 marker, as on
the leaf of tests/fixtures/pkg/installomator-Installomator-0.5-c53f9d1b.pkg.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEVID_INSTALLER = x509.ObjectIdentifier("1.2.840.113635.100.4.13")
DEVID_MARKER = x509.ObjectIdentifier("1.2.840.113635.100.6.1.14")
NOW = datetime.now(timezone.utc).replace(microsecond=0)


@dataclass(frozen=True)
class DevIdChain:
    root_key: rsa.RSAPrivateKey
    root: x509.Certificate
    ca_key: rsa.RSAPrivateKey
    ca: x509.Certificate
    leaf_key: object
    leaf: x509.Certificate

    def pem(self, cert: x509.Certificate) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    def write_pem(self, directory: Path, *, key_password: bytes | None = None) -> dict[str, Path]:
        enc = (serialization.BestAvailableEncryption(key_password) if key_password
               else serialization.NoEncryption())
        paths = {
            "cert": directory / "leaf.pem", "key": directory / "leaf.key",
            "ca": directory / "ca.pem", "root": directory / "root.pem",
        }
        paths["cert"].write_bytes(self.pem(self.leaf))
        paths["key"].write_bytes(self.leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc))
        paths["key"].chmod(0o600)
        paths["ca"].write_bytes(self.pem(self.ca))
        paths["root"].write_bytes(self.pem(self.root))
        return paths

    def write_p12(self, path: Path, password: bytes | None, *, with_chain: bool = True) -> Path:
        enc = serialization.BestAvailableEncryption(password) if password else serialization.NoEncryption()
        extra = [self.root, self.ca] if with_chain else None  # deliberately root first
        path.write_bytes(pkcs12.serialize_key_and_certificates(b"test", self.leaf_key, self.leaf, extra, enc))
        path.chmod(0o600)
        return path


def _name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Fleetpkg Test"),
              x509.NameAttribute(NameOID.COUNTRY_NAME, "US")]
    return x509.Name(attrs)


def _ca(subject, issuer, key, signer_key, serial, days):
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(serial)
            .not_valid_before(NOW - timedelta(days=30)).not_valid_after(NOW + timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(signer_key, hashes.SHA256()))


@functools.lru_cache(maxsize=None)
def make_chain(tag: str = "A", *, leaf_bits: int = 2048, eku: str = "installer", leaf_kind: str = "rsa",
               expired: bool = False) -> DevIdChain:
    """A fresh chain per `tag`; eku is "installer", "codesign" or "server"."""
    root_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root_name = _name(f"Test Root CA {tag}", "Fleetpkg Test Certification Authority")
    root = _ca(root_name, root_name, root_key, root_key, 2, 3650)
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = _name("Developer ID Certification Authority", f"Fleetpkg Test Certification Authority {tag}")
    ca = _ca(ca_name, root_name, ca_key, root_key, 0x187AA9A8C296210C, 1800)
    if leaf_kind == "ec":
        leaf_key = ec.generate_private_key(ec.SECP256R1())
    else:
        leaf_key = rsa.generate_private_key(public_exponent=65537, key_size=leaf_bits)
    usage = {"installer": [DEVID_INSTALLER], "codesign": [ExtendedKeyUsageOID.CODE_SIGNING],
             "server": [ExtendedKeyUsageOID.SERVER_AUTH]}[eku]
    not_after = NOW - timedelta(days=1) if expired else NOW + timedelta(days=365)
    leaf = (x509.CertificateBuilder()
            .subject_name(_name(f"Developer ID Installer: Fleetpkg Test {tag} (TEAM{tag}12345)", f"TEAM{tag}12345"))
            .issuer_name(ca_name).public_key(leaf_key.public_key()).serial_number(0x1FAF39C90C13A647)
            .not_valid_before(NOW - timedelta(days=10)).not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=True)
            .add_extension(x509.UnrecognizedExtension(DEVID_MARKER, b"\x05\x00"), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return DevIdChain(root_key, root, ca_key, ca, leaf_key, leaf)
