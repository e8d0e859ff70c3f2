"""The PKCS#12 files of the PyPI package cryptography-vectors (made by OpenSSL, Java and others),
with the passwords pyca/cryptography's own tests use for them."""

from __future__ import annotations

import os
from pathlib import Path

import cryptography_vectors

VECTORS = Path(os.path.dirname(cryptography_vectors.__file__))
PKCS12_DIR = VECTORS / "pkcs12"
PKITS_P12_DIR = VECTORS / "x509" / "PKITS_data" / "pkcs12"


def password_for(name: str) -> bytes:
    if name.startswith("cert-") or "aes256cbc" in name:
        return b"cryptography"
    if "no-pwd" in name or name in ("no-password.p12", "java-truststore.p12"):
        return b""
    return b"password"


def pkcs12_vectors() -> list[tuple[str, bytes]]:
    """(file name, password) for every vector in the pkcs12 folder."""
    return [(p.name, password_for(p.name)) for p in sorted(PKCS12_DIR.glob("*.p12"))]


def read_vector(name: str) -> bytes:
    return cryptography_vectors.open_vector_file(os.path.join("pkcs12", name), "rb").read()
