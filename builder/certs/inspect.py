"""`fleetpkg inspect x.pfx`: what a .pfx holds and how it is protected, never the password or
any key material. Works on incomplete files too (no key, several certificates), since finding
out why a .pfx is rejected is the point of inspecting it."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ..errors import FleetpkgError
from .pfx import load_certificate, load_private_key, parse_pfx, public_key_der


def _iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _key_info(public_key) -> dict[str, Any]:
    if isinstance(public_key, rsa.RSAPublicKey):
        return {"type": "RSA", "size": public_key.key_size}
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        return {"type": "EC", "size": public_key.curve.key_size, "curve": public_key.curve.name}
    return {"type": type(public_key).__name__.replace("PublicKey", ""), "size": None}


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except (x509.ExtensionNotFound, ValueError):
        return None


def describe_certificate(cert: x509.Certificate) -> dict[str, Any]:
    san = _ext(cert, x509.SubjectAlternativeName)
    eku = _ext(cert, x509.ExtendedKeyUsage)
    ku = _ext(cert, x509.KeyUsage)
    ku_names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
                "key_agreement", "key_cert_sign", "crl_sign"]
    try:
        key = _key_info(cert.public_key())
    except (ValueError, UnsupportedAlgorithm):
        key = {"type": "unreadable", "size": None}
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "san_dns": san.get_values_for_type(x509.DNSName) if san else [],
        "key": key,
        "signature_algorithm": getattr(cert.signature_algorithm_oid, "_name", None)
        or cert.signature_algorithm_oid.dotted_string,
        "eku": [getattr(o, "_name", o.dotted_string) for o in eku] if eku else None,
        "key_usage": [n for n in ku_names if getattr(ku, n)] if ku else None,
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def describe_pfx(data: bytes, password: bytes) -> dict[str, Any]:
    parsed = parse_pfx(data, password)
    certs = [load_certificate(bag.der) for bag in parsed.certs]
    leaf_index = 0 if certs else None
    key_doc: dict[str, Any] = {"count": len(parsed.keys)}
    if parsed.keys:
        try:
            key = load_private_key(parsed.keys[0].pkcs8)
            spki = public_key_der(key.public_key())
            key_doc.update(_key_info(key.public_key()))
            matches = [i for i, c in enumerate(certs) if public_key_der(c.public_key()) == spki]
            key_doc["matches_certificate"] = bool(matches)
            if matches:
                leaf_index = matches[0]
        except (FleetpkgError, ValueError, UnsupportedAlgorithm):
            key_doc["unreadable"] = True
    mac = parsed.mac
    return {
        "certificate": describe_certificate(certs[leaf_index]) if leaf_index is not None else None,
        "extra_certificates": [
            {"subject": c.subject.rfc4514_string(), "issuer": c.issuer.rfc4514_string(),
             "not_after": _iso(c.not_valid_after_utc), "sha256": c.fingerprint(hashes.SHA256()).hex()}
            for i, c in enumerate(certs) if i != leaf_index],
        "private_key": key_doc,
        "friendly_names": sorted({b.friendly_name for b in (*parsed.keys, *parsed.certs) if b.friendly_name}),
        "encryption": {
            "mac": None if mac is None else {"algorithm": mac.name, "iterations": mac.iterations,
                                             "salt_bytes": len(mac.salt)},
            "key_bags": [b.pbe.name if b.pbe else "none" for b in parsed.keys],
            "cert_bags": sorted({b.pbe.name if b.pbe else "none" for b in parsed.certs}),
            "iterations": sorted({p.iterations for p in parsed.encryptions}),
        },
    }
