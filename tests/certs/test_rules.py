"""One certificate per rule violation (made with cryptography): each is reported with its rule id
and only that rule; compliant certificates give no findings. Chain verdicts are cross-checked
with `openssl verify`, an implementation nobody here wrote."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from builder.certs import RULES, CertificateError, Identity, build_chain, lint_identity
from tests.certs import factory
from tests.certs.factory import DAY, NOW
from tests.conftest import REPO, require_tool

HOST = "MAC01.local"


@pytest.fixture(scope="module")
def pki():
    root = factory.make_ca()
    issuing = factory.make_intermediate(root)
    other = factory.make_ca("Someone Else's Root CA", key_index=12)
    return root, issuing, other


def ident(issued: factory.Issued, *extra: x509.Certificate, key=None) -> Identity:
    return Identity(issued.certificate, key if key is not None else issued.key, tuple(extra), None)


def lint(issued, cas, *extra, hostname=HOST, at=NOW, key=None):
    return lint_identity(ident(issued, *extra, key=key), hostname, cas, at)


def only(findings, rule: str, severity: str = "error"):
    assert [(f.rule, f.severity) for f in findings] == [(rule, severity)], findings
    return findings[0].message


def test_rule_ids_are_stable():
    assert list(RULES) == ["pfx-missing", "pfx-unreadable", "pfx-password", "pfx-no-certificate",
                           "chain", "eku-client-auth", "key-usage", "private-key", "crl-http",
                           "subject-hostname", "validity", "key-strength", "self-signed"]
    for rule_id, rule in RULES.items():
        assert rule.id == rule_id and rule.title and rule.explanation and rule.fix


def test_readme_lists_every_rule_in_order():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert re.findall(r"^\| `([a-z-]+)` \|", readme, re.M) == list(RULES)


# -- compliant certificates ---------------------------------------------------------------------

def test_valid_via_configured_intermediate(pki):
    root, issuing, _ = pki
    assert lint(factory.make_device_cert(issuing, HOST), [root.certificate, issuing.certificate]) == []


def test_valid_with_intermediate_from_the_pfx(pki):
    root, issuing, _ = pki
    assert lint(factory.make_device_cert(issuing, HOST), [root.certificate], issuing.certificate) == []


def test_valid_issued_by_root_directly(pki):
    root, _, _ = pki
    assert lint(factory.make_device_cert(root, HOST), [root.certificate]) == []


def test_valid_cn_only_and_san_only(pki):
    root, issuing, _ = pki
    cas = [root.certificate, issuing.certificate]
    assert lint(factory.make_device_cert(issuing, HOST, san_dns=None), cas) == []
    assert lint(factory.make_device_cert(issuing, HOST, cn="Device 17", san_dns=["other", HOST]), cas) == []


def test_valid_with_ocsp_and_http_crl(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, ocsp_url="http://ocsp.fleetpkg.test",
                                    crl_urls=["ldap:///CN=crl", "http://pki.fleetpkg.test/a.crl"])
    assert lint(cert, [root.certificate, issuing.certificate]) == []


def test_naive_at_is_utc(pki):
    root, issuing, _ = pki
    assert lint(factory.make_device_cert(issuing, HOST), [root.certificate, issuing.certificate],
                at=NOW.replace(tzinfo=None)) == []


# -- one violation each ------------------------------------------------------------------------

def test_chain_unknown_ca(pki):
    root, issuing, other = pki
    msg = only(lint(factory.make_device_cert(issuing, HOST), [other.certificate]), "chain")
    assert "Fleetpkg Test Issuing CA" in msg and "not among the configured CA files" in msg


def test_chain_missing_intermediate(pki):
    root, issuing, _ = pki
    msg = only(lint(factory.make_device_cert(issuing, HOST), [root.certificate]), "chain")
    assert "CN=Fleetpkg Test Issuing CA" in msg


def test_chain_root_only_in_pfx(pki):
    root, issuing, other = pki
    cert = factory.make_device_cert(issuing, HOST)
    msg = only(lint(cert, [other.certificate], issuing.certificate, root.certificate), "chain")
    assert "ends at root" in msg and "Fleetpkg Test Root CA" in msg


def test_chain_expired_intermediate(pki):
    root, _, _ = pki
    old = factory.make_intermediate(root, "Old Issuing CA", not_before=NOW - 900 * DAY,
                                    not_after=NOW - DAY, key_index=13)
    cert = factory.make_device_cert(old, HOST, not_before=NOW - 10 * DAY)
    msg = only(lint(cert, [root.certificate, old.certificate]), "chain")
    assert "Old Issuing CA" in msg and "expired" in msg


def test_chain_same_name_different_key(pki):
    """A CA certificate with the right name but another key (a renewed CA key)."""
    root, issuing, _ = pki
    impostor = factory.make_intermediate(root, "Fleetpkg Test Issuing CA", key_index=14)
    msg = only(lint(factory.make_device_cert(issuing, HOST), [root.certificate, impostor.certificate]), "chain")
    assert "no configured certificate of that name signed it" in msg


def test_chain_issuer_not_a_ca(pki):
    root, _, _ = pki
    not_ca = factory.make_device_cert(root, "Not A CA", key_index=3, eku=None,
                                      key_usage={"digital_signature": True, "key_cert_sign": True})
    cert = factory.make_device_cert(not_ca, HOST)
    msg = only(lint(cert, [root.certificate, not_ca.certificate]), "chain")
    assert "not a CA certificate" in msg


def test_chain_path_length_exceeded(pki):
    root, issuing, _ = pki  # issuing has pathLenConstraint 0
    sub = factory.make_intermediate(issuing, "Sub Issuing CA", key_index=15, path_length=None)
    cert = factory.make_device_cert(sub, HOST)
    msg = only(lint(cert, [root.certificate, issuing.certificate, sub.certificate]), "chain")
    assert "pathLenConstraint" in msg


def test_chain_name_constraints_caught_by_path_validation(pki):
    """Nothing in fleetpkg's own chain walk looks at name constraints: cryptography's RFC 5280
    validator is what rejects this one."""
    root, _, _ = pki
    constrained = factory.make_intermediate(
        root, "Constrained CA", key_index=16,
        extensions=[(x509.NameConstraints(permitted_subtrees=[x509.DNSName("corp.example")],
                                          excluded_subtrees=None), True)])
    cert = factory.make_device_cert(constrained, HOST)
    msg = only(lint(cert, [root.certificate, constrained.certificate]), "chain")
    assert "path validation" in msg


def test_eku_missing(pki):
    root, issuing, _ = pki
    msg = only(lint(factory.make_device_cert(issuing, HOST, eku=None), [root.certificate, issuing.certificate]),
               "eku-client-auth")
    assert "no Extended Key Usage" in msg


def test_eku_server_only(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "eku-client-auth")
    assert "serverAuth" in msg and "Client Authentication" in msg


def test_eku_any_is_not_client_auth(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, eku=[ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    only(lint(cert, [root.certificate, issuing.certificate]), "eku-client-auth")


def test_key_usage_missing_encipherment(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, key_usage={"digital_signature": True})
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "key-usage")
    assert "missing keyEncipherment" in msg and "digitalSignature" in msg


def test_key_usage_absent(pki):
    root, issuing, _ = pki
    msg = only(lint(factory.make_device_cert(issuing, HOST, key_usage=None),
                    [root.certificate, issuing.certificate]), "key-usage")
    assert "no Key Usage" in msg


def test_key_usage_ec_key_explains(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, key=factory.ec_key(), key_usage={"digital_signature": True})
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "key-usage")
    assert "EC key cannot do key encipherment" in msg


def test_private_key_mismatch(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST)
    msg = only(lint(cert, [root.certificate, issuing.certificate], key=factory.rsa_key(1)), "private-key")
    assert "does not match" in msg


def test_private_key_absent(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST)
    findings = lint_identity(Identity(cert.certificate, None, (), None), HOST,
                             [root.certificate, issuing.certificate], NOW)
    only(findings, "private-key")


def test_crl_absent(pki):
    root, issuing, _ = pki
    msg = only(lint(factory.make_device_cert(issuing, HOST, crl_urls=None), [root.certificate, issuing.certificate]),
               "crl-http")
    assert "no CRL distribution point" in msg


def test_crl_ldap_only(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, crl_urls=["ldap:///CN=Issuing,CN=CDP?certificateRevocationList"])
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "crl-http")
    assert "ldap:///CN=Issuing" in msg


def test_crl_https_only(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, crl_urls=["https://pki.fleetpkg.test/a.crl"])
    only(lint(cert, [root.certificate, issuing.certificate]), "crl-http")


def test_crl_missing_but_ocsp_warns(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, crl_urls=None, ocsp_url="http://ocsp.fleetpkg.test/")
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "crl-http", "warning")
    assert "http://ocsp.fleetpkg.test/" in msg


def test_subject_wrong_host(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, "MAC02.local")
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "subject-hostname")
    assert "'MAC02.local'" in msg and "'MAC01.local'" in msg and "letter case" not in msg


def test_subject_case_only(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, "mac01.local")
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "subject-hostname")
    assert "letter case" in msg and "'mac01.local'" in msg


def test_subject_no_names(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, cn=None, san_dns=None)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "subject-hostname")
    assert "no subject CN and no SAN DNS" in msg


def test_validity_expired(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, not_before=NOW - 400 * DAY, not_after=NOW - DAY)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "validity")
    assert "expired on" in msg


def test_validity_not_yet_valid(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, not_before=NOW + 3 * DAY, not_after=NOW + 400 * DAY)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "validity")
    assert "not valid until" in msg


def test_validity_expiring_soon_warns(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, not_after=NOW + 10 * DAY)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "validity", "warning")
    assert "in 10 days" in msg


def test_validity_future_check_date(pki):
    """--at: the same certificate, checked at a later date, has expired."""
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST)
    only(lint(cert, [root.certificate, issuing.certificate], at=NOW + 400 * DAY), "validity")


def test_key_strength_rsa_1024(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, key=factory.rsa_key(0, 1024))
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "key-strength")
    assert "RSA 1024-bit" in msg


@pytest.mark.parametrize("hash_alg,name", [(hashes.SHA1(), "sha1WithRSAEncryption"),
                                           (hashes.MD5(), "md5WithRSAEncryption")])
def test_key_strength_weak_signature_hash(pki, hash_alg, name):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, hash_alg=hash_alg)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "key-strength")
    assert name in msg


def test_key_strength_small_ec_curve(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST, key=factory.ec_key(ec.SECP192R1()),
                                    key_usage={"digital_signature": True, "key_encipherment": True})
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "key-strength")
    assert "secp192r1" in msg


def test_self_signed(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(None, HOST, self_signed=True, key_index=2)
    msg = only(lint(cert, [root.certificate, issuing.certificate]), "self-signed")
    assert "self-signed" in msg
    # configured as a "CA" it is still a self-signed device certificate, and still only that
    only(lint(cert, [root.certificate, cert.certificate]), "self-signed")


def test_several_violations_come_in_rules_order(pki):
    root, issuing, other = pki
    cert = factory.make_device_cert(issuing, "elsewhere", eku=None, crl_urls=None,
                                    not_after=NOW + 5 * DAY)
    findings = lint(cert, [other.certificate])
    assert [f.rule for f in findings] == ["chain", "eku-client-auth", "crl-http", "subject-hostname", "validity"]
    assert findings[-1].severity == "warning"


# -- build_chain -------------------------------------------------------------------------------

def test_build_chain_returns_issuers_root_last(pki):
    root, issuing, _ = pki
    cert = factory.make_device_cert(issuing, HOST).certificate
    assert build_chain(cert, [root.certificate], [issuing.certificate], NOW) == [issuing.certificate, root.certificate]
    assert build_chain(cert, [issuing.certificate, root.certificate], at=NOW) == [issuing.certificate, root.certificate]
    with pytest.raises(CertificateError):
        build_chain(cert, [root.certificate], (), NOW)


def test_build_chain_prefers_renewed_ca(pki):
    """Two CA certificates for the same name and key (renewal): the valid one is chosen."""
    root, _, _ = pki
    key = factory.rsa_key(17)
    expired = factory.make_intermediate(root, "Renewed CA", key=key, not_before=NOW - 900 * DAY,
                                        not_after=NOW - DAY)
    renewed = factory.make_intermediate(root, "Renewed CA", key=key)
    cert = factory.make_device_cert(renewed, HOST).certificate
    assert build_chain(cert, [root.certificate, expired.certificate, renewed.certificate], at=NOW)[0] == renewed.certificate


# -- cross-check with openssl verify ------------------------------------------------------------

def _openssl_verify(tmp: Path, leaf, cas, untrusted, at: dt.datetime) -> bool:
    openssl = require_tool("openssl")
    factory.write_pem(tmp / "leaf.pem", leaf)
    factory.write_pem(tmp / "roots.pem", *cas)
    args = [openssl, "verify", "-attime", str(int(at.timestamp())), "-purpose", "sslclient",
            "-CAfile", str(tmp / "roots.pem")]
    if untrusted:
        factory.write_pem(tmp / "untrusted.pem", *untrusted)
        args += ["-untrusted", str(tmp / "untrusted.pem")]
    return subprocess.run(args + [str(tmp / "leaf.pem")], capture_output=True).returncode == 0


def test_chain_verdicts_agree_with_openssl(tmp_path, pki):
    root, issuing, other = pki
    old = factory.make_intermediate(root, "Old Issuing CA", not_before=NOW - 900 * DAY,
                                    not_after=NOW - DAY, key_index=13)
    sub = factory.make_intermediate(issuing, "Sub Issuing CA", key_index=15, path_length=None)
    good = factory.make_device_cert(issuing, HOST).certificate
    cases = [
        (good, [root.certificate], [issuing.certificate], True),
        (good, [other.certificate], [issuing.certificate], False),
        (good, [root.certificate], [], False),
        (factory.make_device_cert(old, HOST, not_before=NOW - 10 * DAY).certificate,
         [root.certificate], [old.certificate], False),
        (factory.make_device_cert(sub, HOST).certificate, [root.certificate],
         [issuing.certificate, sub.certificate], False),
    ]
    for leaf, roots, untrusted, expected in cases:
        ours = not [f for f in lint_identity(Identity(leaf, None, tuple(untrusted), None), HOST, roots, NOW)
                    if f.rule == "chain"]
        assert ours == expected == _openssl_verify(tmp_path, leaf, roots, untrusted, NOW), leaf.subject
