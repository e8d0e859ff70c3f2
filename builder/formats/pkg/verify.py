"""Verify a flat package's signatures and integrity the way Installer would, from Linux.

Checks, each reported by name: the TOC checksum (done by XarReader on open), every member's
archived/extracted checksums, the RSA signature and the CMS signature over the TOC checksum (both
with the leaf of the TOC chain), the CMS certificates against the TOC chain, the chain itself
(each certificate signed by the next, validity) and its anchor: Apple Root CA or a root the caller
trusts. An RFC 3161 timestamp (productsign adds Apple's) is checked too.

Expiry policy: Installer keeps accepting a productsign package after its certificate expires
when the signature carries a timestamp from while it was valid. So an expired chain is only
information when a valid, trusted timestamp falls inside its validity; without one it is a problem.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from ...errors import ChecksumError, FleetpkgError, FormatError
from . import cms, timestamp

# SHA-256 of Apple Root CA (C=US, O=Apple Inc., OU=Apple Certification Authority, CN=Apple Root CA),
# the root every Developer ID chain ends at. Taken from the signed fixture's last certificate and
# equal to the fingerprint Apple publishes (apple.com/certificateauthority).
APPLE_ROOT_CA_SHA256 = "b0b1730ecbc7ff4505142c49f1295e6eda6bcaed7e2c68c5be91b5a11001f024"
EKU_DEVELOPER_ID_INSTALLER = x509.ObjectIdentifier("1.2.840.113635.100.4.13")

TOC_MISMATCH = "TOC checksum mismatch"
RSA_INVALID = "RSA signature invalid"
CMS_INVALID = "CMS signature invalid"
NOT_APPLE = "certificate chain does not end at Apple Root CA (use --trust-root)"
NOT_SIGNED = "package is not signed"


@dataclass
class SignatureReport:
    path: str
    toc_checksum_ok: bool = False
    files_ok: bool = False
    files_checked: int = 0
    signed: bool = False
    rsa_ok: bool = False
    cms_ok: bool = False
    chain: list[dict] = field(default_factory=list)  # {subject, issuer, not_after, sha256}
    chain_ok: bool = False
    anchored_at: str | None = None  # "apple-root" | "trusted-root" | "untrusted" | None (unsigned)
    timestamp: dict | None = None  # {time, tsa, ok, problem}
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        doc = asdict(self)
        doc["ok"] = self.ok
        return doc


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _describe(cert: x509.Certificate) -> dict:
    return {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
            "not_after": cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"), "sha256": fingerprint(cert)}


def _cn(cert: x509.Certificate) -> str:
    names = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Signature check by hand: cryptography's verify_directly_issued_by refuses SHA-1, and Apple
    Root CA (2006) is self-signed with sha1WithRSAEncryption."""
    if cert.issuer != issuer.subject:
        return False
    key = issuer.public_key()
    try:
        params = cert.signature_algorithm_parameters
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params, cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, params)
        else:
            return False
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        return False
    return True


@dataclass(frozen=True)
class ChainCheck:
    anchored_at: str
    problems: tuple[str, ...]


def check_chain(chain: Sequence[x509.Certificate], trust_roots: Sequence[x509.Certificate]) -> ChainCheck:
    """Signatures along `chain` (leaf first) and its anchor; validity dates are checked by callers,
    which know the time that matters (a timestamp, or now)."""
    problems = []
    for child, parent in zip(chain, chain[1:]):
        if not _issued_by(child, parent):
            problems.append(f"certificate chain broken: '{_cn(child)}' is not signed by '{_cn(parent)}'")
    last = chain[-1]
    trusted = {fingerprint(r): r for r in trust_roots}
    if last.subject == last.issuer and not _issued_by(last, last):
        problems.append(f"certificate chain broken: root '{_cn(last)}' has a bad self-signature")
        return ChainCheck("untrusted", tuple(problems))
    if fingerprint(last) == APPLE_ROOT_CA_SHA256:
        return ChainCheck("apple-root", tuple(problems))
    if fingerprint(last) in trusted:
        return ChainCheck("trusted-root", tuple(problems))
    for root in trusted.values():
        if last.issuer == root.subject and _issued_by(last, root):
            return ChainCheck("apple-root" if fingerprint(root) == APPLE_ROOT_CA_SHA256 else "trusted-root",
                              tuple(problems))
    return ChainCheck("untrusted", tuple(problems))


def _build_chain(leaf: x509.Certificate, pool: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    chain = [leaf]
    while chain[-1].subject != chain[-1].issuer and len(chain) < 10:
        parent = next((c for c in pool if c.subject == chain[-1].issuer and c not in chain), None)
        if parent is None:
            break
        chain.append(parent)
    return chain


def _expired_at(chain: Sequence[x509.Certificate], when: datetime) -> list[x509.Certificate]:
    return [c for c in chain if not (c.not_valid_before_utc <= when <= c.not_valid_after_utc)]


def _load_certs(ders: Sequence[bytes]) -> list[x509.Certificate] | None:
    certs = [cms.load_certificate(d) for d in ders]
    return None if any(c is None for c in certs) else certs


def _check_files(reader, report: SignatureReport) -> None:
    bad, unreadable = [], 0
    for entry in reader.entries:
        if entry.data is None:
            continue
        report.files_checked += 1
        try:
            for _ in reader.iter_data(entry):
                pass
        except ChecksumError:
            bad.append(entry.path)
        except FormatError as exc:
            unreadable += 1
            report.problems.append(f"file data of {entry.path} cannot be read: {exc.message}")
    for path in bad:
        report.problems.append(f"file data checksum mismatch in {path}")
    report.files_ok = not bad and not unreadable


def _check_timestamp(si: cms.SignerInfo, trust_roots, report: SignatureReport) -> datetime | None:
    """The trusted signing time from the token, or None."""
    tokens = si.attribute_values(cms.OID_TIMESTAMP_TOKEN, signed=False)
    if not tokens:
        return None
    check = timestamp.check_token(tokens[0], si.signature)
    info = {"time": check.gen_time.strftime("%Y-%m-%dT%H:%M:%SZ") if check.gen_time else None,
            "tsa": check.tsa_subject, "ok": False, "problem": check.problem}
    report.timestamp = info
    if check.problem is not None:
        report.problems.append(f"timestamp invalid: {check.problem}")
        return None
    try:
        sd = cms.parse_signed_data(tokens[0])
        certs = _load_certs(sd.certificates) or []
        signer = cms.signer_certificate(sd, sd.signer_infos[0])
    except FormatError:
        signer = None
    if signer is None:  # check_token found it, so this only guards against surprises
        report.problems.append("timestamp invalid: TSA certificate missing")
        return None
    chain = _build_chain(signer, certs)
    result = check_chain(chain, trust_roots)
    if result.problems:
        report.problems.extend(f"timestamp {p}" for p in result.problems)
        return None
    if _expired_at(chain[1:], check.gen_time):
        report.problems.append("timestamp invalid: TSA chain was not valid at the timestamp time")
        return None
    if result.anchored_at == "untrusted":
        report.notes.append(f"timestamp from '{_cn(chain[-1])}' is not anchored at a trusted root; ignored")
        info["problem"] = "TSA not trusted"
        return None
    info["ok"] = True
    return check.gen_time


def verify_package_signature(path: str | Path, trust_roots: Sequence[x509.Certificate] = (), *,
                             now: datetime | None = None) -> SignatureReport:
    """Everything `fleetpkg verify` reports about one .pkg; never raises for damaged input."""
    from . import xar

    now = now or datetime.now(timezone.utc)
    report = SignatureReport(path=str(path))
    try:
        reader = xar.XarReader(path)
    except ChecksumError:
        report.problems.append(TOC_MISMATCH)
        return report
    except FleetpkgError as exc:
        report.problems.append(f"not a readable package: {exc.message}")
        return report
    with reader:
        report.toc_checksum_ok = True
        # the header is outside every checksum: hold it to what bsdtar and Apple's xar require
        if reader.version != 1 or reader.header_size != 28:
            report.problems.append(f"xar header is damaged (version {reader.version}, size {reader.header_size}; "
                                   "expected version 1, size 28)")
        trailer = reader.file_size - reader.heap_offset - reader.heap_data_end()
        if trailer > 0:
            report.notes.append(f"{trailer} bytes follow the xar heap (a stapled notarization ticket): not verified")
        _check_files(reader, report)
        _check_signatures(reader, trust_roots, now, report)
    return report


def _check_signatures(reader, trust_roots, now: datetime, report: SignatureReport) -> None:
    rsa_sig, cms_sig = reader.signature, reader.x_signature
    if rsa_sig is None and cms_sig is None:
        report.problems.append(NOT_SIGNED)
        return
    report.signed = True
    checksum = reader.read_heap(reader.checksum_offset, reader.checksum_size)
    if checksum != reader.stored_toc_checksum:
        report.problems.append(TOC_MISMATCH)
        return
    ders = (rsa_sig or cms_sig).certificates
    chain = _load_certs(ders) if ders else None
    if not chain:
        report.problems.append("signature has no usable certificates in its KeyInfo")
        return
    report.chain = [_describe(c) for c in chain]
    if rsa_sig is not None and cms_sig is not None and rsa_sig.certificates != cms_sig.certificates:
        report.problems.append("RSA and CMS signatures list different certificates")
    leaf = chain[0]
    key = leaf.public_key()

    # RSA: PKCS#1 v1.5, SHA-1 over the checksum bytes as the message (flat-package-format §2.2)
    if rsa_sig is None:
        report.problems.append(f"{RSA_INVALID}: no <signature style=\"RSA\">")
    elif rsa_sig.style.upper() != "RSA" or not isinstance(key, rsa.RSAPublicKey):
        report.problems.append(f"{RSA_INVALID}: style {rsa_sig.style!r} with a non-RSA leaf key is unsupported")
    else:
        try:
            key.verify(reader.read_signature(rsa_sig), checksum, padding.PKCS1v15(), hashes.SHA1())
            report.rsa_ok = True
        except InvalidSignature:
            report.problems.append(RSA_INVALID)

    # CMS: detached over the same bytes; its certificates must be the TOC chain
    signing_time = None
    if cms_sig is None:
        report.problems.append(f"{CMS_INVALID}: no <x-signature style=\"CMS\"> (such a package cannot be stapled)")
    else:
        try:
            sd = cms.parse_signed_data(reader.read_signature(cms_sig))
        except FormatError as exc:
            report.problems.append(f"{CMS_INVALID}: {exc.message}")
            sd = None
        if sd is not None:
            why = None
            if sd.content_type != cms.OID_DATA or sd.content is not None:
                why = "not a detached id-data signature"
            elif len(sd.signer_infos) != 1:
                why = f"{len(sd.signer_infos)} signers instead of 1"
            elif sorted(sd.certificates) != sorted(set(ders)):
                why = "its certificates differ from the TOC chain"
            else:
                si = sd.signer_infos[0]
                signer = cms.signer_certificate(sd, si)
                if signer is None or signer != leaf:
                    why = "its signer is not the TOC leaf certificate"
                else:
                    why = cms.verify_signer(sd, si, checksum, key)
                    if why is None:
                        report.cms_ok = True
                        signing_time = _check_timestamp(si, trust_roots, report)
            if why is not None:
                report.problems.append(f"{CMS_INVALID}: {why}")

    # chain: signatures and anchor, then validity at the trusted signing time or now
    result = check_chain(chain, trust_roots)
    report.anchored_at = result.anchored_at
    report.problems.extend(result.problems)
    if result.anchored_at == "untrusted":
        report.problems.append(NOT_APPLE)
    when = signing_time or now
    dated = _expired_at(chain, when)
    for cert in dated:
        report.problems.append(f"certificate '{_cn(cert)}' was not valid at {when:%Y-%m-%d} "
                               f"(valid {cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d})"
                               + ("" if signing_time else "; the signature has no trusted timestamp"))
    if signing_time is not None:
        for cert in _expired_at(chain, now):
            report.notes.append(f"certificate '{_cn(cert)}' expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
                                f"the signature was timestamped on {signing_time:%Y-%m-%d} while it was valid")
    report.chain_ok = not result.problems and not dated and result.anchored_at != "untrusted"
    try:
        eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        installer = EKU_DEVELOPER_ID_INSTALLER in eku
    except x509.ExtensionNotFound:
        installer = False
    if not installer:
        text = f"leaf '{_cn(leaf)}' is not a Developer ID Installer certificate: Gatekeeper will not trust it"
        (report.problems if result.anchored_at == "apple-root" else report.notes).append(text)


def load_trust_roots(paths: Sequence[Path]) -> list[x509.Certificate]:
    """PEM (one or more certificates) or DER files given with --trust-root."""
    from ...errors import CertificateError

    roots: list[x509.Certificate] = []
    for path in paths:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read trust root: {exc.strerror or exc}", where=str(path)) from None
        try:
            roots.extend(x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                         else [x509.load_der_x509_certificate(data)])
        except ValueError:
            raise CertificateError("not a PEM or DER certificate", where=str(path)) from None
    return roots
