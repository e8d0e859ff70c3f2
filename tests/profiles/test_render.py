"""Profile content: layout, identifiers, deterministic UUIDs, rebuild stability, embedded PKCS#12."""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import uuid

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from builder.errors import CertificateError, ConfigError
from builder.profiles import device_profile, login_items_profile, render_xml, trust_profile
from tests.certs import factory
from tests.conftest import require_tool
from tests.profiles.conftest import macos_identity

DER = serialization.Encoding.DER


def parsed(profile: dict) -> dict:
    return plistlib.loads(render_xml(profile))


def without_secrets(doc: dict) -> dict:
    """The profile minus the two values that are fresh on every build by design."""
    doc = plistlib.loads(plistlib.dumps(doc))
    for payload in doc["PayloadContent"]:
        if payload["PayloadType"] == "com.apple.security.pkcs12":
            del payload["PayloadContent"], payload["Password"]
    return doc


def test_device_profile_layout(pki, device_args):
    doc = parsed(device_profile(**device_args))
    assert doc["PayloadType"] == "Configuration"
    assert doc["PayloadVersion"] == 1
    assert doc["PayloadScope"] == "System"
    assert doc["TargetDeviceType"] == 5
    assert doc["PayloadIdentifier"] == "com.acme.oneE.identity.mac-01"
    assert doc["PayloadOrganization"] == "Acme Corp"
    assert "MAC-01" in doc["PayloadDisplayName"] and doc["PayloadDescription"]
    types = [p["PayloadType"] for p in doc["PayloadContent"]]
    assert types == ["com.apple.security.pkcs12", "com.apple.security.root", "com.apple.security.pkcs1"]
    ident, root, inter = doc["PayloadContent"]
    assert ident["PayloadContent"] == device_args["p12"]
    assert ident["Password"] == device_args["p12_password"]
    assert ident["PayloadCertificateFileName"] == "MAC-01.p12"
    assert ident["AllowAllAppsAccess"] is True and ident["KeyIsExtractable"] is False
    assert x509.load_der_x509_certificate(root["PayloadContent"]) == pki.root.certificate
    assert x509.load_der_x509_certificate(inter["PayloadContent"]) == pki.issuing.certificate
    for payload in doc["PayloadContent"]:
        assert payload["PayloadVersion"] == 1
        assert payload["PayloadIdentifier"].startswith(doc["PayloadIdentifier"] + ".")
        assert payload["PayloadOrganization"] == "Acme Corp"


def test_uuids_are_valid_and_unique(device_args):
    doc = parsed(device_profile(**device_args))
    ids = [doc["PayloadUUID"]] + [p["PayloadUUID"] for p in doc["PayloadContent"]]
    for value in ids:
        assert re.fullmatch(r"[0-9A-F]{8}-[0-9A-F]{4}-5[0-9A-F]{3}-[89AB][0-9A-F]{3}-[0-9A-F]{12}", value)
        assert uuid.UUID(value).version == 5
    assert len(set(ids)) == len(ids)
    idents = [p["PayloadIdentifier"] for p in doc["PayloadContent"]]
    assert len(set(idents)) == len(idents)


def test_key_access_flags_are_configurable(device_args):
    doc = parsed(device_profile(**device_args, allow_all_apps_access=False, key_is_extractable=True))
    ident = doc["PayloadContent"][0]
    assert ident["AllowAllAppsAccess"] is False and ident["KeyIsExtractable"] is True
    # a different meaning must give a different payload UUID
    assert ident["PayloadUUID"] != parsed(device_profile(**device_args))["PayloadContent"][0]["PayloadUUID"]


def test_rebuild_differs_only_in_p12_and_password(pki, device_args):
    first = render_xml(device_profile(**device_args))
    p12, password = macos_identity(pki.device, [pki.issuing.certificate])
    again = dict(device_args, p12=p12, p12_password=password)
    second = render_xml(device_profile(**again))
    assert first != second  # fresh salts/IV and password, by design
    a, b = plistlib.loads(first), plistlib.loads(second)
    assert a["PayloadContent"][0]["PayloadContent"] != b["PayloadContent"][0]["PayloadContent"]
    assert a["PayloadContent"][0]["Password"] != b["PayloadContent"][0]["Password"]
    assert without_secrets(a) == without_secrets(b)  # UUIDs included
    # and the same inputs give the same bytes
    assert render_xml(device_profile(**device_args)) == first


def test_renewed_certificate_changes_identity_uuid_only(pki, device_args):
    renewed = factory.make_device_cert(pki.issuing, "MAC-01", key_index=2)
    p12, password = macos_identity(renewed)
    doc_old = parsed(device_profile(**device_args))
    doc_new = parsed(device_profile(**dict(device_args, p12=p12, p12_password=password)))
    assert doc_old["PayloadIdentifier"] == doc_new["PayloadIdentifier"]  # replaces, never duplicates
    assert doc_old["PayloadUUID"] != doc_new["PayloadUUID"]
    assert doc_old["PayloadContent"][0]["PayloadUUID"] != doc_new["PayloadContent"][0]["PayloadUUID"]
    assert [p["PayloadUUID"] for p in doc_old["PayloadContent"][1:]] == \
           [p["PayloadUUID"] for p in doc_new["PayloadContent"][1:]]


def test_identifier_ignores_hostname_case(device_args):
    upper = parsed(device_profile(**device_args))
    lower = parsed(device_profile(**dict(device_args, hostname="mac-01")))
    assert upper["PayloadIdentifier"] == lower["PayloadIdentifier"] == "com.acme.oneE.identity.mac-01"
    assert lower["PayloadContent"][0]["PayloadCertificateFileName"] == "mac-01.p12"


def test_ca_payloads_sorted_and_deduplicated(pki):
    roots = [pki.root.certificate, pki.other_root.certificate, pki.root.certificate]
    inters = [pki.issuing.certificate, pki.root.certificate]  # a root listed again: kept once, as root
    doc = parsed(trust_profile(fleet="F", organization="O", identifier_prefix="com.acme.oneE",
                               roots=roots, intermediates=inters))
    got = [(p["PayloadType"], x509.load_der_x509_certificate(p["PayloadContent"]).subject.rfc4514_string())
           for p in doc["PayloadContent"]]
    assert got == [
        ("com.apple.security.root", "CN=Profiles Other Root CA,O=Fleetpkg Test"),
        ("com.apple.security.root", "CN=Profiles Test Root CA,O=Fleetpkg Test"),
        ("com.apple.security.pkcs1", "CN=Profiles Test Issuing CA,O=Fleetpkg Test"),
    ]
    reordered = parsed(trust_profile(fleet="F", organization="O", identifier_prefix="com.acme.oneE",
                                     roots=list(reversed(roots)), intermediates=list(reversed(inters))))
    assert reordered == doc


def test_trust_profile_is_byte_identical_across_builds(pki):
    kwargs = dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE",
                  roots=[pki.root.certificate], intermediates=[pki.issuing.certificate])
    first = render_xml(trust_profile(**kwargs))
    assert render_xml(trust_profile(**kwargs)) == first
    doc = plistlib.loads(first)
    assert doc["PayloadIdentifier"] == "com.acme.oneE.trust"
    assert [p["PayloadType"] for p in doc["PayloadContent"]] == ["com.apple.security.root",
                                                                 "com.apple.security.pkcs1"]
    assert doc["PayloadScope"] == "System" and doc["TargetDeviceType"] == 5


def test_login_items_profile(pki):
    kwargs = dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE",
                  label="com.1e.pkg.1E.Client", team_id="ABCDE12345")
    first = render_xml(login_items_profile(**kwargs))
    assert render_xml(login_items_profile(**kwargs)) == first
    doc = plistlib.loads(first)
    (payload,) = doc["PayloadContent"]
    assert payload["PayloadType"] == "com.apple.servicemanagement"
    rules = [(r["RuleType"], r["RuleValue"]) for r in payload["Rules"]]
    assert rules == [("Label", "com.1e.pkg.1E.Client"), ("TeamIdentifier", "ABCDE12345")]
    no_team = plistlib.loads(render_xml(login_items_profile(**dict(kwargs, team_id=None))))
    assert [r["RuleType"] for r in no_team["PayloadContent"][0]["Rules"]] == ["Label"]
    assert no_team["PayloadUUID"] != doc["PayloadUUID"]


@pytest.mark.parametrize("override, error", [
    (dict(p12_password="wrong"), CertificateError),
    (dict(p12_password=""), CertificateError),
    (dict(p12=b"not a p12"), CertificateError),
    (dict(identifier_prefix="acme"), ConfigError),
    (dict(identifier_prefix="com..acme"), ConfigError),
    (dict(hostname="mac 01"), ConfigError),
    (dict(hostname="../etc"), ConfigError),
])
def test_bad_device_inputs_raise_clear_errors(device_args, override, error):
    with pytest.raises(error) as info:
        device_profile(**dict(device_args, **override))
    assert "\n" not in str(info.value)


def test_given_certificate_skips_reopening_the_p12(pki, device_args, monkeypatch):
    """With `certificate` (the build passes the one it has just re-encoded and checked) the p12
    is not parsed again: no key derivation runs, and the profile is the same as when it is."""
    from builder.certs import kdf

    opened = parsed(device_profile(**device_args))

    def no_kdf(*args):
        raise AssertionError("the p12 was opened again")

    monkeypatch.setattr(kdf, "pkcs12_kdf", no_kdf)
    given = parsed(device_profile(**device_args, certificate=pki.device.certificate))
    assert given == opened
    for bad in ("", "pässwort"):  # the password rules still apply without opening the p12
        with pytest.raises(CertificateError, match="non-empty ASCII"):
            device_profile(**dict(device_args, p12_password=bad), certificate=pki.device.certificate)


def test_p12_without_key_is_refused(pki):
    password = "abc123"
    only_cert = factory.make_pfx(pki.device.certificate, None, password.encode(), encryption="3des")
    with pytest.raises(CertificateError, match="no private key"):
        device_profile(fleet="F", organization="O", identifier_prefix="com.acme.x", hostname="MAC-01",
                       p12=only_cert, p12_password=password, roots=[], intermediates=[])


@pytest.mark.parametrize("override", [dict(team_id="abc"), dict(label=""), dict(label="com.1e.*")])
def test_bad_login_items_inputs(override):
    kwargs = dict(fleet="F", organization="O", identifier_prefix="com.acme.x",
                  label="com.1e.pkg.1E.Client", team_id=None)
    with pytest.raises(ConfigError):
        login_items_profile(**dict(kwargs, **override))


def test_trust_profile_needs_certificates():
    with pytest.raises(ConfigError):
        trust_profile(fleet="F", organization="O", identifier_prefix="com.acme.x", roots=[],
                      intermediates=[])


def _openssl(args: list[str], password: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PW=password)
    return subprocess.run([require_tool("openssl"), *args], input=stdin, env=env,
                          capture_output=True, check=True)


def test_embedded_p12_opens_with_openssl_and_matches_the_device(pki, device_args, tmp_path):
    doc = parsed(device_profile(**device_args))
    ident = doc["PayloadContent"][0]
    p12 = tmp_path / "id.p12"
    p12.write_bytes(ident["PayloadContent"])
    info = _openssl(["pkcs12", "-legacy", "-info", "-noout", "-in", str(p12), "-passin", "env:PW"],
                    ident["Password"])
    text = info.stdout.decode() + info.stderr.decode()
    assert re.search(r"^MAC: sha1, Iteration \d+$", text, re.M)
    assert re.search(r"^PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC,", text, re.M)
    assert re.search(r"^Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC,", text, re.M)
    assert "PBES2" not in text
    key_pem = _openssl(["pkcs12", "-legacy", "-in", str(p12), "-passin", "env:PW", "-nocerts",
                        "-nodes"], ident["Password"]).stdout
    key_pub = _openssl(["pkey", "-pubout"], "", stdin=key_pem).stdout
    cert_pem = pki.device.certificate.public_bytes(serialization.Encoding.PEM)
    cert_pub = _openssl(["x509", "-noout", "-pubkey"], "", stdin=cert_pem).stdout
    assert key_pub == cert_pub
    leaf = _openssl(["pkcs12", "-legacy", "-in", str(p12), "-passin", "env:PW", "-clcerts",
                     "-nokeys"], ident["Password"]).stdout
    assert x509.load_pem_x509_certificate(leaf[leaf.index(b"-----BEGIN"):]) == pki.device.certificate
