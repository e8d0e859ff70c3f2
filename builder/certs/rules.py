"""The client-certificate rules (vendor guide "Certificate files", plus three fleetpkg adds).

The first four (`pfx-*`) judge the device's .pfx file itself: load_pfx raises them, and a .pfx
that breaks one (or `private-key`: no key, or another certificate's) gives that single finding,
since there is no identity left to lint. Each rule has a stable id used in `check` output and
the docs. A certificate with one defect gets one finding: rules that could restate another's
verdict stand aside --
  * a self-signed device certificate reports `self-signed` only (`chain` is not evaluated: there
    is no issuer to look for, and the fix is the same: have the CA issue it);
  * `chain` judges the issuers (found by name and signature, whatever the hash) and runs
    cryptography's path validator only when the leaf passes `validity` and `key-strength`,
    because the validator would otherwise just reject the leaf again for the same reason.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Callable, Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ..errors import CertificateError
from .chain import build_chain, day, describe, is_self_signed, utc, verify_fast, verify_path
from .model import ERROR, WARNING, Finding, Identity, Rule
from .pfx import PFX_MISSING, PFX_NO_CERTIFICATE, PFX_PASSWORD, PFX_UNREADABLE, PRIVATE_KEY, public_key_der

EXPIRY_WARNING = timedelta(days=30)
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
WEAK_HASHES = {"md5", "sha1", "md2", "md4"}

RULES: dict[str, Rule] = {r.id: r for r in [
    Rule(PFX_MISSING, "The .pfx file exists",
         "The inventory names a .pfx for every Mac; the file must be there when the fleet is checked or built.",
         "Export the Mac's certificate with its private key to the path in the inventory, or correct the "
         "path (relative paths start at the inventory CSV's folder)."),
    Rule(PFX_UNREADABLE, "The .pfx is a complete PKCS#12 file",
         "The file must be a whole, undamaged PKCS#12 (.pfx/.p12) export with password integrity and "
         "password-based encryption, not a folder, a certificate alone, or a truncated or damaged copy.",
         "Export the .pfx again (PKCS#12 with a password, AES-256 or 3DES) and copy the whole file."),
    Rule(PFX_PASSWORD, "The .pfx opens with its password",
         "The password from the device's password source (password_env or password_file in the inventory "
         "row, else the [devices] default) must be the one the .pfx was exported with.",
         "Point the device's password source at the export password, or export the .pfx again with the "
         "fleet's password."),
    Rule(PFX_NO_CERTIFICATE, "The .pfx holds the device certificate",
         "The .pfx must hold the device certificate, not only a private key.",
         "Export the certificate together with its private key (the key alone is not enough)."),
    Rule("chain", "Issued by a trusted CA, chain complete",
         "The device certificate must chain to a root CA configured in [trust] (intermediates may "
         "come from the CA files or the .pfx), every CA valid at the check time.",
         "Add the issuing/intermediate and root CA certificates to [trust] certificates, or reissue "
         "the device certificate from your CA."),
    Rule("eku-client-auth", "Extended Key Usage includes Client Authentication",
         "The Switch authenticates the device with TLS client authentication, which OpenSSL only "
         "allows when the EKU lists Client Authentication (1.3.6.1.5.5.7.3.2).",
         "Issue from a template whose Application Policies contain Client Authentication."),
    Rule("key-usage", "Key Usage has Digital Signature and Key Encipherment",
         "The vendor requires both Digital Signature and Key Encipherment in Key Usage (RSA keys).",
         "Issue from a template with Digital Signature and Key Encipherment (an RSA key)."),
    Rule(PRIVATE_KEY, "Has its private key",
         "The .pfx must hold exactly one private key, the one that belongs to the certificate, or the "
         "client cannot authenticate.",
         "Export the certificate with its own private key (mark the key exportable in the template), "
         "on the machine that holds that key."),
    Rule("crl-http", "CRL distribution point over HTTP",
         "The certificate must reference at least one CRL distribution point with an http:// URL "
         "so the Switch can check revocation.",
         "Add an HTTP CDP to the issuing CA's extensions and reissue the device certificate."),
    Rule("subject-hostname", "Subject CN or SAN DNS equals the hostname",
         "The subject CN or a SAN DNS name must equal the device's hostname exactly (case-sensitive), "
         "as the vendor guide requires.",
         "Reissue with CN=<hostname> exactly as the Mac reports it, or fix the hostname in devices.csv."),
    Rule("validity", "Valid now, not expiring soon",
         "The certificate must be valid at the check time; expiry within 30 days is a warning.",
         "Renew the device certificate."),
    Rule("key-strength", "Strong key and signature",
         "RSA keys need at least 2048 bits, EC keys at least 256 bits, and the certificate must not "
         "be signed with MD5 or SHA-1.",
         "Reissue with a 2048-bit (or larger) RSA key and a SHA-256 signature."),
    Rule("self-signed", "Not self-signed",
         "A self-signed device certificate is trusted by nobody; the Switch rejects it.",
         "Have your CA issue the device certificate."),
]}


def _ext(cert: x509.Certificate, cls):
    try:
        return cert.extensions.get_extension_for_class(cls).value
    except x509.ExtensionNotFound:
        return None
    except ValueError:
        return None  # unparsable extensions: treated as absent (the rule then says so)


def _oid_name(oid: x509.ObjectIdentifier) -> str:
    name = getattr(oid, "_name", None)
    return oid.dotted_string if not name or name == "Unknown OID" else name


def _key_description(key) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}-bit"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.replace("PublicKey", "")


# -- the rules ------------------------------------------------------------------------------

def check_eku(cert: x509.Certificate) -> list[Finding]:
    eku = _ext(cert, x509.ExtendedKeyUsage)
    if eku is None:
        return [Finding("eku-client-auth", ERROR,
                        "the certificate has no Extended Key Usage extension; expected one listing "
                        "Client Authentication (1.3.6.1.5.5.7.3.2)")]
    if ExtendedKeyUsageOID.CLIENT_AUTH in eku:
        return []
    held = ", ".join(_oid_name(o) for o in eku) or "nothing"
    return [Finding("eku-client-auth", ERROR,
                    f"Extended Key Usage lists {held}; expected Client Authentication (clientAuth, "
                    "1.3.6.1.5.5.7.3.2)")]


def check_key_usage(cert: x509.Certificate) -> list[Finding]:
    ku = _ext(cert, x509.KeyUsage)
    is_ec = isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    ec_note = ("; an EC key cannot do key encipherment (that is RSA key transport), so this rule "
               "needs an RSA certificate")
    if ku is None:
        return [Finding("key-usage", ERROR,
                        "the certificate has no Key Usage extension; expected digitalSignature and "
                        "keyEncipherment" + (ec_note if is_ec else ""))]
    names = ["digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
             "key_agreement", "key_cert_sign", "crl_sign"]
    held = [n for n in names if getattr(ku, n)]
    missing = [n for n in ("digital_signature", "key_encipherment") if not getattr(ku, n)]
    if not missing:
        return []

    def camel(n: str) -> str:
        head, *rest = n.split("_")
        return head + "".join(p.title() for p in rest)
    message = (f"Key Usage is {', '.join(camel(n) for n in held) or 'empty'}; missing "
               f"{' and '.join(camel(n) for n in missing)} (expected digitalSignature and keyEncipherment)")
    if is_ec and "key_encipherment" in missing:
        message += ec_note
    return [Finding("key-usage", ERROR, message)]


def check_private_key(identity: Identity) -> list[Finding]:
    if identity.key is None:
        return [Finding("private-key", ERROR, "the .pfx holds no private key for the certificate")]
    try:
        matches = public_key_der(identity.key.public_key()) == public_key_der(identity.certificate.public_key())
    except (ValueError, TypeError, UnsupportedAlgorithm):
        matches = False
    if not matches:
        return [Finding("private-key", ERROR,
                        f"the private key ({_key_description(identity.key.public_key())}) does not "
                        f"match the certificate's public key "
                        f"({_key_description(identity.certificate.public_key())})")]
    return []


def _uris(names) -> list[str]:
    return [n.value for n in names or () if isinstance(n, x509.UniformResourceIdentifier)]


def check_crl_http(cert: x509.Certificate) -> list[Finding]:
    cdp = _ext(cert, x509.CRLDistributionPoints)
    urls = [u for dp in cdp or () for u in _uris(dp.full_name)]
    if any(u.lower().startswith("http://") for u in urls):
        return []
    holds = (f"its CRL distribution points are {', '.join(urls)} (none over http://)" if urls
             else "it has no CRL distribution point with a URL" if cdp is not None
             else "it has no CRL distribution point")
    aia = _ext(cert, x509.AuthorityInformationAccess)
    ocsp = [d.access_location.value for d in aia or ()
            if d.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(d.access_location, x509.UniformResourceIdentifier)]
    if ocsp:
        return [Finding("crl-http", WARNING,
                        f"{holds}; it has an OCSP responder ({', '.join(ocsp)}) instead, but the vendor "
                        "guide asks for an http:// CRL distribution point")]
    return [Finding("crl-http", ERROR,
                    f"{holds} and no OCSP responder; expected a CRL distribution point with an http:// URL")]


def check_subject_hostname(cert: x509.Certificate, hostname: str) -> list[Finding]:
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    cns = [v if isinstance(v, str) else v.decode("utf-8", "replace") for v in cns]
    san = _ext(cert, x509.SubjectAlternativeName)
    dns = san.get_values_for_type(x509.DNSName) if san is not None else []
    if hostname in cns or hostname in dns:
        return []
    held = []
    if cns:
        held.append("CN " + ", ".join(repr(c) for c in cns))
    if dns:
        held.append("SAN DNS " + ", ".join(repr(d) for d in dns))
    message = (f"the certificate holds {' and '.join(held)}" if held
               else "the certificate has no subject CN and no SAN DNS name")
    message += f"; expected {hostname!r} exactly"
    if any(n.lower() == hostname.lower() for n in cns + dns):
        message += " (the names differ only in letter case, and the match is case-sensitive)"
    return [Finding("subject-hostname", ERROR, message)]


def check_validity(cert: x509.Certificate, at: datetime) -> list[Finding]:
    return validity_findings(cert.not_valid_before_utc, cert.not_valid_after_utc, at)


def validity_findings(start: datetime, end: datetime, at: datetime) -> list[Finding]:
    """The validity rule from the certificate's dates alone (a rebuild re-judges a carried-forward
    device's certificate at the new check time without decrypting its .pfx again)."""
    at = utc(at)
    if start > at:
        return [Finding("validity", ERROR,
                        f"the certificate is not valid until {day(start)} (checked at {day(at)})")]
    if end < at:
        return [Finding("validity", ERROR, f"the certificate expired on {day(end)} (checked at {day(at)})")]
    if end - at < EXPIRY_WARNING:
        days = (end - at).days
        return [Finding("validity", WARNING,
                        f"the certificate expires on {day(end)}, in {days} day{'s' if days != 1 else ''} "
                        f"(warning threshold {EXPIRY_WARNING.days} days)")]
    return []


def check_key_strength(cert: x509.Certificate) -> list[Finding]:
    problems = []
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        return [Finding("key-strength", ERROR, f"the certificate's public key cannot be read ({exc})")]
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            problems.append(f"an RSA {key.key_size}-bit key (expected at least {MIN_RSA_BITS} bits)")
    elif isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.key_size < MIN_EC_BITS:
            problems.append(f"an EC {key.curve.name} key (expected at least {MIN_EC_BITS} bits)")
    else:
        problems.append(f"a {_key_description(key)} key (expected RSA of at least {MIN_RSA_BITS} bits)")
    sig_name = _oid_name(cert.signature_algorithm_oid)
    try:
        hash_alg = cert.signature_hash_algorithm
        if hash_alg is not None and hash_alg.name in WEAK_HASHES:
            problems.append(f"a {sig_name} signature (expected SHA-256 or stronger)")
    except UnsupportedAlgorithm:
        problems.append(f"a {sig_name} signature, which is obsolete (expected SHA-256 or stronger)")
    if not problems:
        return []
    return [Finding("key-strength", ERROR, "the certificate has " + " and ".join(problems))]


def check_self_signed(cert: x509.Certificate) -> list[Finding]:
    if is_self_signed(cert):
        return [Finding("self-signed", ERROR,
                        f"the certificate is self-signed (issuer = subject = {describe(cert)}); "
                        "expected one issued by your CA")]
    return []


def check_chain(identity: Identity, cas: Sequence[x509.Certificate], at: datetime,
                leaf_checkable: bool) -> list[Finding]:
    cert = identity.certificate
    if leaf_checkable and verify_fast(cert, cas, identity.extra_certificates, at):
        return []  # the path validator accepts it: nothing for fleetpkg's own walk to explain
    try:
        chain = build_chain(cert, cas, identity.extra_certificates, at)
    except CertificateError as exc:
        return [Finding("chain", ERROR, f"not issued by a configured CA: {exc.message}")]
    if leaf_checkable:
        reason = verify_path(cert, chain, at)
        if reason is not None:
            return [Finding("chain", ERROR,
                            f"the chain to {describe(chain[-1])} fails X.509 path validation: {reason}")]
    return []


def lint_identity(identity: Identity, hostname: str, cas: Sequence[x509.Certificate],
                  at: datetime) -> list[Finding]:
    """Every finding for one device, in RULES order (no findings = the certificate passes)."""
    at = utc(at)
    cert = identity.certificate
    by_rule: dict[str, list[Finding]] = {}
    checks: list[tuple[str, Callable[[], list[Finding]]]] = [
        ("eku-client-auth", lambda: check_eku(cert)),
        ("key-usage", lambda: check_key_usage(cert)),
        ("private-key", lambda: check_private_key(identity)),
        ("crl-http", lambda: check_crl_http(cert)),
        ("subject-hostname", lambda: check_subject_hostname(cert, hostname)),
        ("validity", lambda: check_validity(cert, at)),
        ("key-strength", lambda: check_key_strength(cert)),
        ("self-signed", lambda: check_self_signed(cert)),
    ]
    for rule, check in checks:
        by_rule[rule] = check()
    if not by_rule["self-signed"]:
        leaf_checkable = not any(f.severity == ERROR for f in by_rule["validity"] + by_rule["key-strength"])
        by_rule["chain"] = check_chain(identity, cas, at, leaf_checkable)
    return [f for rule in RULES for f in by_rule.get(rule, [])]
