"""CA certificate files as admins export them: PEM bundles (several per file), DER `.cer`, and
PKCS#7 `.p7b` bundles (Windows' "Cryptographic Message Syntax" export)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from ..errors import CertificateError

_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)


def parse_certificates(data: bytes) -> list[x509.Certificate]:
    """The certificates in one blob: PEM (certificates or PKCS#7), DER certificate, or DER
    certs-only PKCS#7 (also what a SCEP server's GetCACert answers). Raises ValueError et al."""
    if b"-----BEGIN" in data:
        found: list[x509.Certificate] = []
        if b"-----BEGIN CERTIFICATE-----" in data:
            found += x509.load_pem_x509_certificates(data)
        if b"-----BEGIN PKCS7-----" in data:
            found += pkcs7.load_pem_pkcs7_certificates(data)
        return found
    try:
        return [x509.load_der_x509_certificate(data)]
    except _PARSE_ERRORS:
        return list(pkcs7.load_der_pkcs7_certificates(data))


def load_ca_files(paths: Sequence[Path]) -> list[x509.Certificate]:
    """All certificates in `paths`, in file order, duplicates dropped."""
    out: list[x509.Certificate] = []
    seen: set[bytes] = set()
    for path in paths:
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read the CA file ({exc.strerror or exc})", where=str(path)) from None
        try:
            certs = parse_certificates(data)
        except _PARSE_ERRORS as exc:
            raise CertificateError(f"not a certificate file ({exc})", where=str(path),
                                   hint="give PEM (BEGIN CERTIFICATE), DER .cer or .p7b files") from None
        if not certs:
            raise CertificateError("holds no certificate", where=str(path),
                                   hint="give PEM (BEGIN CERTIFICATE), DER .cer or .p7b files")
        for cert in certs:
            der = cert.public_bytes(serialization.Encoding.DER)
            if der not in seen:
                seen.add(der)
                out.append(cert)
    return out
