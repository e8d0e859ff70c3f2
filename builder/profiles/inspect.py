"""`fleetpkg inspect FILE.mobileconfig`: what a profile holds, signed or not, secrets left out.

Never returns a password or key material: for a pkcs12 payload only the identity's certificate
facts (and whether a password is embedded) are reported.
"""

from __future__ import annotations

import plistlib
from xml.parsers.expat import ExpatError
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import pkcs12

from ..certs.protection import describe_protection, read_protection
from ..errors import FormatError
from . import cms
from .model import PKCS1, PKCS12, ROOT

CERT_TYPES = {ROOT, PKCS1, "com.apple.security.pem"}


def _iso(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def name_text(name_of, cert: x509.Certificate) -> str:
    """RFC 4514 text of a name; cryptography parses names lazily, so damage surfaces only here."""
    try:
        return name_of(cert).rfc4514_string()
    except (ValueError, KeyError, TypeError):
        return "<unreadable name>"


def certificate_facts(cert: x509.Certificate) -> dict[str, Any]:
    return {
        "subject": name_text(lambda c: c.subject, cert),
        "issuer": name_text(lambda c: c.issuer, cert),
        "serial": format(cert.serial_number, "x"),
        "not_before": _iso(cert.not_valid_before_utc),
        "not_after": _iso(cert.not_valid_after_utc),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }


def split_signed(data: bytes) -> tuple[bytes, cms.SignedData | None]:
    """(plist bytes, SignedData or None). FormatError when a CMS wrapper is malformed or detached."""
    if not cms.looks_like_cms(data):
        return data, None
    sd = cms.parse_signed_data(data)
    if sd.content is None:
        raise FormatError("signed profile has no attached content (detached signature)")
    return sd.content, sd


def load_plist(content: bytes) -> dict:
    try:
        doc = plistlib.loads(content)
    except (plistlib.InvalidFileException, ExpatError, ValueError, TypeError, OverflowError,
            LookupError, AttributeError, RecursionError) as exc:
        raise FormatError(f"not a property list: {exc}") from None
    if not isinstance(doc, dict):
        raise FormatError("profile is a property list but not a dictionary")
    return doc


def _load_cert(blob: Any, payload_type: str) -> x509.Certificate:
    if not isinstance(blob, bytes):
        raise ValueError("PayloadContent is not data")
    if payload_type == "com.apple.security.pem":
        return x509.load_pem_x509_certificate(blob)
    return x509.load_der_x509_certificate(blob)


def _describe_payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        return {"type": None, "problem": "payload is not a dictionary"}
    ptype = payload.get("PayloadType")
    out: dict[str, Any] = {
        "type": ptype,
        "identifier": payload.get("PayloadIdentifier"),
        "display_name": payload.get("PayloadDisplayName"),
        "uuid": payload.get("PayloadUUID"),
    }
    if ptype in CERT_TYPES:
        try:
            out["certificate"] = certificate_facts(_load_cert(payload.get("PayloadContent"), ptype))
        except ValueError:
            out["problem"] = "PayloadContent is not a certificate"
    elif ptype == PKCS12:
        out.update(_describe_identity(payload))
    return out


def _describe_identity(payload: dict) -> dict[str, Any]:
    blob = payload.get("PayloadContent")
    password = payload.get("Password")
    out: dict[str, Any] = {
        "password_in_profile": isinstance(password, str),
        "allow_all_apps_access": payload.get("AllowAllAppsAccess", False),
        "key_is_extractable": payload.get("KeyIsExtractable", True),
        "identity": None,
    }
    if not isinstance(blob, bytes):
        out["problem"] = "PayloadContent is not data"
        return out
    try:
        out["pkcs12"] = describe_protection(read_protection(blob))
    except FormatError as exc:
        out["problem"] = exc.message
        return out
    if not isinstance(password, str):
        out["note"] = "no Password in the profile: the identity cannot be opened (macOS will prompt)"
        return out
    try:
        loaded = pkcs12.load_pkcs12(blob, password.encode("utf-8"))
    except ValueError:
        out["problem"] = "the PKCS#12 does not open with the profile's Password"
        return out
    if loaded.cert is None:
        out["problem"] = "the PKCS#12 holds no certificate"
        return out
    out["identity"] = certificate_facts(loaded.cert.certificate)
    out["identity"]["has_private_key"] = loaded.key is not None
    out["identity"]["extra_certificates"] = len(loaded.additional_certs)
    return out


def describe_mobileconfig(data: bytes) -> dict[str, Any]:
    """Summary of a .mobileconfig (XML, binary, or CMS-signed). FormatError if unreadable."""
    content, sd = split_signed(data)
    doc: dict[str, Any] = {"signed": sd is not None, "signer": None, "signing_time": None,
                           "digest_algorithm": None, "cms_certificates": []}
    if sd is not None:
        signer = sd.signers[0]
        cert = cms.find_signer_certificate(sd, signer)
        doc["signer"] = certificate_facts(cert) if cert else None
        when = signer.signing_time() if signer.signed_attrs else None
        doc["signing_time"] = _iso(when) if when else None
        doc["digest_algorithm"] = cms.digest_name(signer.digest_oid)
        doc["cms_certificates"] = [name_text(lambda c: c.subject, c) for c in sd.certificates]
    profile = load_plist(content)
    doc.update({
        "identifier": profile.get("PayloadIdentifier"),
        "uuid": profile.get("PayloadUUID"),
        "type": profile.get("PayloadType"),
        "display_name": profile.get("PayloadDisplayName"),
        "organization": profile.get("PayloadOrganization"),
        "scope": profile.get("PayloadScope"),
        "target_device_type": profile.get("TargetDeviceType"),
        "encrypted": bool(profile.get("IsEncrypted", False)),
    })
    payloads = profile.get("PayloadContent", [])
    if not isinstance(payloads, list):
        raise FormatError("PayloadContent is not an array")
    doc["payloads"] = [_describe_payload(p) for p in payloads]
    return doc
