"""`fleetpkg verify FILE.mobileconfig`: is this profile intact, well formed and trustworthy?

The CMS signature is checked here because cryptography has no CMS verify API: digest of the
content against the signed messageDigest, then the signer's signature over the DER SET of signed
attributes (or over the content itself when, as in some third-party profiles, there are none),
then a certificate path from the signer to one of `trust_roots`. Every finding is a sentence in
`problems`; nothing is raised for a bad file.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12

from ..certs.protection import macos_problems, read_protection
from ..errors import FormatError
from . import cms
from .inspect import CERT_TYPES, _load_cert, certificate_facts, load_plist, name_text, split_signed
from .model import PKCS12

MAX_CHAIN = 10


def _name(cert: x509.Certificate) -> str:
    return name_text(lambda c: c.subject, cert)


def _fp(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


def _check_signature_value(cert: x509.Certificate, signer: cms.SignerInfo, signed: bytes) -> str | None:
    family, hash_oid = cms.SIGNATURES.get(signer.signature_oid, (None, None))
    hash_oid = hash_oid or signer.digest_oid
    if family is None or hash_oid not in cms.DIGESTS:
        return f"unsupported CMS signature algorithm {signer.signature_oid}"
    algorithm = cms.DIGESTS[hash_oid][1]()
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm):
        return "the signer's certificate holds a public key that cannot be read"
    try:
        if family == "rsa" and isinstance(key, rsa.RSAPublicKey):
            key.verify(signer.signature, signed, padding.PKCS1v15(), algorithm)
        elif family == "ec" and isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signer.signature, signed, ec.ECDSA(algorithm))
        else:
            return "CMS signature algorithm does not match the signer's key type"
    except InvalidSignature:
        return "CMS signature does not verify with the signer's public key: the signed data was altered"
    return None


def _check_signer(sd: cms.SignedData, signer: cms.SignerInfo, content: bytes) -> tuple[x509.Certificate | None, list[str]]:
    cert = cms.find_signer_certificate(sd, signer)
    if cert is None:
        return None, ["the signer's certificate is not included in the signed profile"]
    if signer.digest_oid not in cms.DIGESTS:
        return cert, [f"unsupported CMS digest algorithm {signer.digest_oid}"]
    digest = hashlib.new(cms.digest_name(signer.digest_oid), content).digest()
    problems: list[str] = []
    if signer.signed_attrs is not None:
        md = signer.attr(cms.OID_MESSAGE_DIGEST)
        ct = signer.attr(cms.OID_CONTENT_TYPE)
        if md is None:
            problems.append("CMS signed attributes lack messageDigest")
        elif md.as_octets() != digest:
            problems.append("content digest does not match the signed messageDigest: "
                            "the profile was changed after signing")
        if ct is None or ct.as_oid() != sd.content_type:
            problems.append("CMS signed contentType attribute does not match the content type")
        signed = signer.signed_attrs_der or b""
    else:
        signed = content
    problem = _check_signature_value(cert, signer, signed)
    if problem:
        problems.append(problem)
    return cert, problems


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        if cert.issuer != issuer.subject:
            return False
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, KeyError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def build_chain(leaf: x509.Certificate, pool: Sequence[x509.Certificate],
                roots: Sequence[x509.Certificate], at: datetime) -> tuple[list[x509.Certificate], list[str]]:
    """Path leaf -> ... -> trust root, each link signature-checked; plus problems found on the way."""
    root_fps = {_fp(r) for r in roots}
    path = [leaf]
    problems: list[str] = []
    while _fp(path[-1]) not in root_fps:
        current = path[-1]
        issuer = next((c for c in [*roots, *pool] if _fp(c) != _fp(current) and _issued_by(current, c)), None)
        if issuer is None:
            if _issued_by(current, current):
                problems.append(f"signer chain ends at {_name(current)}, which is not a trusted root")
            else:
                problems.append(f"no issuer found for {_name(current)}: the signer chain does not "
                                "reach a trusted root")
            break
        if not _is_ca(issuer):
            problems.append(f"{_name(issuer)} signed {_name(current)} but is not a CA certificate")
        path.append(issuer)
        if len(path) > MAX_CHAIN:
            problems.append("signer chain is too long")
            break
    for cert in path:
        if at > cert.not_valid_after_utc:
            problems.append(f"{_name(cert)} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
        elif at < cert.not_valid_before_utc:
            problems.append(f"{_name(cert)} is not valid before {cert.not_valid_before_utc:%Y-%m-%d}")
    return path, problems


def _check_payload(payload: Any, index: int) -> list[str]:
    where = f"payload {index}"
    if not isinstance(payload, dict):
        return [f"{where} is not a dictionary"]
    problems = []
    for key, kind in (("PayloadType", str), ("PayloadIdentifier", str), ("PayloadUUID", str)):
        if not isinstance(payload.get(key), kind) or not payload.get(key):
            problems.append(f"{where} lacks {key}")
    if payload.get("PayloadVersion") != 1:
        problems.append(f"{where} PayloadVersion is not 1")
    ptype = payload.get("PayloadType")
    blob = payload.get("PayloadContent")
    if ptype in CERT_TYPES:
        try:
            _load_cert(blob, ptype)
        except ValueError:
            problems.append(f"{where} ({ptype}) PayloadContent is not a certificate")
    elif ptype == PKCS12:
        if not isinstance(blob, bytes):
            return problems + [f"{where} (pkcs12) PayloadContent is not data"]
        try:
            problems += [f"{where}: {p}" for p in macos_problems(read_protection(blob))]
        except FormatError as exc:
            return problems + [f"{where}: {exc.message}"]
        password = payload.get("Password")
        if isinstance(password, str):
            try:
                loaded = pkcs12.load_pkcs12(blob, password.encode("utf-8"))
                if loaded.key is None or loaded.cert is None:
                    problems.append(f"{where}: the PKCS#12 lacks its certificate or private key")
            except ValueError:
                problems.append(f"{where}: the PKCS#12 does not open with the profile's Password")
    return problems


def check_structure(profile: dict) -> list[str]:
    """Profile-level rules macOS enforces at install (independent of the schema validator)."""
    problems = []
    if profile.get("PayloadType") != "Configuration":
        problems.append("top-level PayloadType is not Configuration")
    if profile.get("PayloadVersion") != 1:
        problems.append("top-level PayloadVersion is not 1")
    for key in ("PayloadIdentifier", "PayloadUUID"):
        if not isinstance(profile.get(key), str) or not profile.get(key):
            problems.append(f"top-level {key} is missing")
    payloads = profile.get("PayloadContent")
    if profile.get("IsEncrypted"):
        return problems
    if not isinstance(payloads, list):
        return problems + ["PayloadContent is missing or not an array"]
    for i, payload in enumerate(payloads):
        problems += _check_payload(payload, i)
    for key in ("PayloadIdentifier", "PayloadUUID"):
        values = [p.get(key) for p in payloads if isinstance(p, dict) and p.get(key)]
        dupes = sorted({v for v in values if values.count(v) > 1})
        if dupes:
            problems.append(f"duplicate payload {key}: {', '.join(map(str, dupes))}")
    return problems


def verify_profile(data: bytes, trust_roots: Sequence[x509.Certificate], *,
                   at: datetime | None = None) -> dict:
    """{"ok", "problems", "signed", "signer", "trusted", "chain", "identifier", "payloads"}.

    `trusted` is None for unsigned profiles (fine for MDM upload) and when no trust roots were
    given (signature checked, chain not judged); `at` is the time validity is judged at (now).
    """
    at = at or datetime.now(timezone.utc)
    problems: list[str] = []
    result: dict[str, Any] = {"ok": False, "problems": problems, "signed": False, "signer": None,
                              "trusted": None, "chain": [], "identifier": None, "payloads": 0}
    try:
        content, sd = split_signed(data)
    except FormatError as exc:
        problems.append(f"signed profile is unreadable: {exc.message}")
        return result
    if sd is not None:
        result["signed"] = True
        if sd.content_type != cms.OID_DATA:
            problems.append(f"signed content type {sd.content_type} is not data")
        for signer in sd.signers:
            cert, found = _check_signer(sd, signer, content)
            problems += found
            if cert is None:
                continue
            result["signer"] = result["signer"] or certificate_facts(cert)
            if trust_roots:
                path, chain_problems = build_chain(cert, sd.certificates, trust_roots, at)
                problems += chain_problems
                result["chain"] = [_name(c) for c in path]
                result["trusted"] = not chain_problems
            elif at > cert.not_valid_after_utc:
                problems.append(f"signer certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    try:
        profile = load_plist(content)
    except FormatError as exc:
        problems.append(exc.message)
        return result
    result["identifier"] = profile.get("PayloadIdentifier")
    payloads = profile.get("PayloadContent")
    result["payloads"] = len(payloads) if isinstance(payloads, list) else 0
    problems += check_structure(profile)
    result["ok"] = not problems
    return result
