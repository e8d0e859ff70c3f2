"""Chain building and verification for device certificates.

Two layers, on purpose:

1. `build_chain` finds the issuers itself (name match + signature check with the issuer's public
   key, CA flag, path length, CA validity at `at`), so every failure gets a message that names the
   certificate at fault, and a leaf that breaks *another* rule (SHA-1 signature, 1024-bit key,
   expired, no clientAuth EKU) still gets its chain judged on the chain alone.
2. `verify_path` then hands the path to `cryptography.x509.verification` (the RFC 5280 path
   validator) as the final word. Its policy is configured to check only what belongs to the
   `chain` rule: the end-entity extension policy permits everything (EKU and key usage are their
   own rules), and the CA policy is OpenSSL's -- the Tachyon Switch validates with OpenSSL --
   rather than the stricter Web PKI one: basicConstraints cA required at any criticality, key
   usage optional but with keyCertSign when present. Callers run it only when the leaf is valid
   at `at` and has a strong key and hash; otherwise the validator would merely repeat the
   `validity` / `key-strength` findings.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from typing import Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.verification import (Criticality, ExtensionPolicy, PolicyBuilder, Store,
                                            VerificationError)

from ..errors import CertificateError
from .memo import by_object

MAX_DEPTH = 8

# Signature and CA checks are remembered per certificate object (memo.by_object): across a fleet
# the same intermediate/root objects, the build's configured CAs, come up for every device.


def utc(at: datetime | None) -> datetime:
    """`at` as an aware UTC datetime (naive = UTC; None = the build time)."""
    if at is None:
        from ..repro import build_datetime
        return build_datetime()
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at.astimezone(timezone.utc)


def describe(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or f"(empty subject, serial {cert.serial_number:x})"


def day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


@by_object(maxsize=4096)
def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer`'s name and key signed `cert`. Weak hashes (SHA-1, MD5) are accepted here:
    judging them is the key-strength rule's job, not the chain's."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except InvalidSignature:
        return False
    except (ValueError, TypeError, UnsupportedAlgorithm):
        pass  # e.g. md5WithRSAEncryption, which the high-level API refuses: check by hand
    try:
        hash_alg = cert.signature_hash_algorithm
        key = issuer.public_key()
        if isinstance(key, rsa.RSAPublicKey) and hash_alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), hash_alg)
            return True
        if isinstance(key, ec.EllipticCurvePublicKey) and hash_alg is not None:
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hash_alg))
            return True
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return False


@by_object(maxsize=1024)
def is_self_signed(cert: x509.Certificate) -> bool:
    return cert.issuer == cert.subject and signed_by(cert, cert)


@by_object(maxsize=256)
def _ca_problem(cert: x509.Certificate) -> str | None:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return f"{describe(cert)} is not a CA certificate (no basicConstraints)"
    except ValueError as exc:
        return f"{describe(cert)} has unreadable extensions ({exc})"
    if not bc.ca:
        return f"{describe(cert)} is not a CA certificate (basicConstraints cA is false)"
    try:
        ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not ku.key_cert_sign:
            return f"{describe(cert)} may not sign certificates (its key usage lacks keyCertSign)"
    except x509.ExtensionNotFound:
        pass
    return None


def _validity_problem(cert: x509.Certificate, at: datetime) -> str | None:
    if cert.not_valid_before_utc > at:
        return f"CA certificate {describe(cert)} is not valid until {day(cert.not_valid_before_utc)}"
    if cert.not_valid_after_utc < at:
        return f"CA certificate {describe(cert)} expired on {day(cert.not_valid_after_utc)}"
    return None


def _path_len(cert: x509.Certificate) -> int | None:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length
    except (x509.ExtensionNotFound, ValueError):
        return None


@by_object(maxsize=32)
def _ca_pool(*cas: x509.Certificate) -> tuple[tuple[x509.Certificate, ...], tuple[x509.Certificate, ...]]:
    """(the self-signed configured CAs, the configured CAs without duplicates) for a CA set: the
    same for every device of a fleet. Tuples, searched with `in` (identity, then DER equality):
    cheaper than hashing certificates."""
    roots = tuple(c for c in cas if is_self_signed(c))
    unique: dict[x509.Certificate, None] = dict.fromkeys(cas)  # the first of equal DERs, in order
    return roots, tuple(unique)


def _extend(path: list[x509.Certificate], roots, pool: list[x509.Certificate], at: datetime,
            problems: list[str]) -> list[x509.Certificate] | None:
    """build_chain's walk from path[-1] towards a root, depth first; None (and why, in `problems`)
    when no issuer leads there. A module function, not a closure: a closure that calls itself is a
    reference cycle per device, which the build (its collector off, pipeline._forking) would keep."""
    current = path[-1]
    if len(path) > 1 and current in roots:
        return path[1:]
    if len(path) > MAX_DEPTH:
        problems.append(f"the chain is longer than {MAX_DEPTH} certificates")
        return None
    named = [c for c in pool if c.subject == current.issuer and c not in path]
    if not named:
        if len(path) > 1 and is_self_signed(current):
            problems.append(f"the chain ends at root {describe(current)}, which is not among "
                            "the configured CA files")
        else:
            problems.append(f"the issuer of {describe(current)} ({current.issuer.rfc4514_string()}) "
                            "is not among the configured CA files or the .pfx's certificates")
        return None
    signers = [c for c in named if signed_by(current, c)]
    if not signers:
        problems.append(f"{describe(current)} names {current.issuer.rfc4514_string()} as issuer, but "
                        "no configured certificate of that name signed it (a renewed CA key? "
                        "configure the CA certificate that issued it)")
        return None
    # valid, proper CAs first, so a renewed CA certificate wins over its expired predecessor
    signers.sort(key=lambda c: (_ca_problem(c) is not None, _validity_problem(c, at) is not None))
    for issuer in signers:
        problem = _ca_problem(issuer) or _validity_problem(issuer, at)
        limit = _path_len(issuer)
        below = len(path) - 1  # CA certificates between this issuer and the leaf
        if problem is None and limit is not None and below > limit:
            problem = (f"{describe(issuer)} allows {limit} intermediate CA(s) below it "
                       f"(pathLenConstraint) but the chain has {below}")
        if problem:
            problems.append(problem)
            continue
        found = _extend(path + [issuer], roots, pool, at, problems)
        if found is not None:
            return found
    return None


def build_chain(leaf: x509.Certificate, cas: Sequence[x509.Certificate],
                extra: Sequence[x509.Certificate] = (), at: datetime | None = None) -> list[x509.Certificate]:
    """The issuers of `leaf` up to a configured (self-signed) root: leaf excluded, root last.

    Intermediates may come from the configured CAs or the .pfx (`extra`); the root must be a
    configured one. Raises CertificateError saying where the chain breaks.
    """
    at = utc(at)
    roots, configured = _ca_pool(*cas)
    pool = list(configured)
    for cert in extra:
        if cert not in pool:  # by DER
            pool.append(cert)

    problems: list[str] = []
    chain = _extend([leaf], roots, pool, at, problems)
    if chain is None:
        raise CertificateError(problems[0] if problems else "no chain to a configured root")
    return chain


# -- cryptography's path validator ----------------------------------------------------------

def _require_ca(policy, cert, ext) -> None:
    if not ext.ca:
        raise ValueError("basicConstraints cA is false")


def _ku_permits_signing(policy, cert, ext) -> None:
    if ext is not None and not ext.key_cert_sign:
        raise ValueError("key usage lacks keyCertSign")


@functools.lru_cache(maxsize=32)
def _verifier(root_ders: tuple[bytes, ...], at: datetime):
    roots = [x509.load_der_x509_certificate(d) for d in root_ders]
    ca_policy = (ExtensionPolicy.permit_all()
                 .require_present(x509.BasicConstraints, Criticality.AGNOSTIC, _require_ca)
                 .may_be_present(x509.KeyUsage, Criticality.AGNOSTIC, _ku_permits_signing))
    return (PolicyBuilder().store(Store(roots)).time(at).max_chain_depth(MAX_DEPTH)
            .extension_policies(ca_policy=ca_policy, ee_policy=ExtensionPolicy.permit_all())
            .build_client_verifier())


@by_object(maxsize=32)
def _anchors(*cas: x509.Certificate) -> tuple[tuple[bytes, ...], tuple[x509.Certificate, ...]]:
    """(DER of the self-signed configured CAs, the other configured CAs) for a CA set."""
    roots = tuple(sorted(_der(c) for c in cas if is_self_signed(c)))
    return roots, tuple(c for c in cas if not is_self_signed(c))


def verify_fast(leaf: x509.Certificate, cas: Sequence[x509.Certificate],
                extra: Sequence[x509.Certificate], at: datetime) -> bool:
    """Whether cryptography's validator accepts `leaf` against the configured roots, with the
    configured intermediates and the .pfx's certificates as candidates. The common case -- a
    good certificate -- is settled here with one validator call; only failures are walked by
    build_chain to say what is wrong."""
    roots, intermediates = _anchors(*cas)
    if not roots:
        return False
    try:
        path = _verifier(roots, utc(at)).verify(leaf, list(intermediates) + list(extra)).chain
    except VerificationError:
        return False
    # The validator matched each certificate's issuer name and checked its signature with the
    # issuer's key (the very objects passed in): build_chain, walking this path again for the
    # chain a device's profile carries, need not verify those signatures a second time.
    for cert, issuer in zip(path, path[1:]):
        signed_by.remember(True, cert, issuer)
    return True


def verify_path(leaf: x509.Certificate, chain: Sequence[x509.Certificate], at: datetime) -> str | None:
    """RFC 5280 validation of leaf + chain (as build_chain returned it) at `at`: None when it
    passes, else the validator's reason."""
    at = utc(at)
    if not chain:
        return "no chain"
    verifier = _verifier((_der(chain[-1]),), at)
    try:
        verifier.verify(leaf, list(chain[:-1]))
    except VerificationError as exc:
        return str(exc)
    return None
