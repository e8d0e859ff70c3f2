"""describe_mobileconfig and verify_profile on real fixtures and on our own output."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import plistlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from builder.errors import FormatError
from builder.profiles import (ProfileSigner, describe_mobileconfig, device_profile, render_xml,
                              sign_profile, trust_profile, verify_profile)
from tests.certs import factory
from tests.conftest import FIXTURES, require_tool
from tests.formats.pkg.sigparts import signature_parts
from tests.profiles.conftest import TODAY

# Signed by Apple's CMS code with a Developer ID Installer certificate (Developer ID CA -> Apple Root
# CA; the CMS carries leaf and intermediate, not the root). Its leaf expired on 2026-05-17, so its
# chain is judged at SIGNED_AT, the date of the commit that published it (tests/fixtures/README.md).
SIGNED_FIXTURE = FIXTURES / "mobileconfig" / "encrypted-dns-signed-developerid-adguard-https.mobileconfig"
SIGNED_AT = dt.datetime(2021, 5, 24, 18, 18, 37, tzinfo=dt.timezone.utc)
SIGNER = ("C=US,O=Andrew Glaze,OU=RJNC97Y8QD,CN=Developer ID Installer: Andrew Glaze (RJNC97Y8QD),"
          "UID=RJNC97Y8QD")
UNSIGNED_FIXTURE = FIXTURES / "mobileconfig" / "encrypted-dns-unsigned-adguard-default-https.mobileconfig"
# Unsigned, written by Apple Configurator: one com.apple.security.root and twelve com.apple.security.pkcs1
CERTS_FIXTURE = FIXTURES / "mobileconfig" / "idmanagement-fpki-unmanaged-bundle.mobileconfig"
# The Apple Root CA the signed fixture chains to is taken from another real file, the CMS signature of
# the productsign-signed Installomator package, and pinned by Apple's published SHA-256 fingerprint.
APPLE_ROOT_PKG = FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg"
APPLE_ROOT_SHA256 = "b0b1730ecbc7ff4505142c49f1295e6eda6bcaed7e2c68c5be91b5a11001f024"


def _openssl(*args: str) -> str:
    return subprocess.run([require_tool("openssl"), *args], capture_output=True, check=True).stdout.decode()


def _openssl_subject(der_or_pem: bytes, tmp_path: Path, inform: str = "DER") -> str:
    path = tmp_path / "c.crt"
    path.write_bytes(der_or_pem)
    out = _openssl("x509", "-inform", inform, "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253")
    return out.strip().removeprefix("subject=")


@pytest.fixture(scope="module")
def fixture_content(tmp_path_factory) -> tuple[dict, bytes, bytes]:
    """The signed fixture's plist, signer certificate and signed bytes, as openssl (not our code)
    extracts them."""
    tmp = tmp_path_factory.mktemp("fixture")
    subprocess.run([require_tool("openssl"), "cms", "-verify", "-noverify", "-inform", "DER",
                    "-in", str(SIGNED_FIXTURE), "-out", str(tmp / "content.plist"),
                    "-signer", str(tmp / "signer.pem")], check=True, capture_output=True)
    signed = (tmp / "content.plist").read_bytes()
    return plistlib.loads(signed), (tmp / "signer.pem").read_bytes(), signed


@pytest.fixture(scope="module")
def apple_root(tmp_path_factory) -> x509.Certificate:
    """Apple Root CA out of the Installomator package's CMS signature, read by openssl."""
    tmp = tmp_path_factory.mktemp("apple-root")
    (tmp / "cms.der").write_bytes(signature_parts(APPLE_ROOT_PKG)["cms"])
    pem = _openssl("pkcs7", "-inform", "DER", "-in", str(tmp / "cms.der"), "-print_certs")
    certs = x509.load_pem_x509_certificates(pem.encode())
    root = next(c for c in certs if c.fingerprint(hashes.SHA256()).hex() == APPLE_ROOT_SHA256)
    assert root.subject == root.issuer
    return root


def test_describe_signed_fixture(fixture_content, tmp_path):
    content, signer_pem, _ = fixture_content
    doc = describe_mobileconfig(SIGNED_FIXTURE.read_bytes())
    assert doc["signed"] is True
    assert doc["signer"]["subject"] == _openssl_subject(signer_pem, tmp_path, "PEM")
    assert doc["signer"]["subject"] == SIGNER
    signer = x509.load_pem_x509_certificate(signer_pem)
    assert doc["signer"]["not_after"] == signer.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["signer"]["not_after"] == "2026-05-17T01:50:27Z"
    assert doc["digest_algorithm"] == "sha1"
    assert doc["identifier"] == content["PayloadIdentifier"] == "com.paulmillr.apple-dns"
    assert doc["display_name"] == "Adguard Default DNS over HTTPS"
    assert [p["type"] for p in doc["payloads"]] == ["com.apple.dnsSettings.managed"]
    assert [p["identifier"] for p in doc["payloads"]] == [p["PayloadIdentifier"] for p in content["PayloadContent"]]


def test_describe_certificate_payloads_fixture(tmp_path):
    content = plistlib.loads(CERTS_FIXTURE.read_bytes())
    doc = describe_mobileconfig(CERTS_FIXTURE.read_bytes())
    assert doc["signed"] is False and doc["signer"] is None
    assert doc["identifier"] == "FCPCAG2-00002"
    assert doc["display_name"] == "Distribute FCPCAG2 and Intermediates"
    types = [p["type"] for p in doc["payloads"]]
    assert types == ["com.apple.security.pkcs1"] * 2 + ["com.apple.security.root"] + ["com.apple.security.pkcs1"] * 10
    assert len(doc["payloads"]) == len(content["PayloadContent"]) == 13
    for described, raw in zip(doc["payloads"], content["PayloadContent"]):
        assert described["identifier"] == raw["PayloadIdentifier"]
        assert described["certificate"]["subject"] == _openssl_subject(raw["PayloadContent"], tmp_path)
    root = doc["payloads"][2]["certificate"]
    assert root["subject"] == root["issuer"] == "CN=Federal Common Policy CA G2,OU=FPKI,O=U.S. Government,C=US"
    assert doc["payloads"][0]["certificate"]["issuer"] == root["subject"]


def test_describe_unsigned_fixture():
    doc = describe_mobileconfig(UNSIGNED_FIXTURE.read_bytes())
    assert doc["signed"] is False and doc["signer"] is None
    assert doc["identifier"] == "com.paulmillr.apple-dns"
    assert doc["scope"] == "System"
    assert [(p["type"], p["display_name"]) for p in doc["payloads"]] == [
        ("com.apple.dnsSettings.managed", "AdGuard DNS Default Encrypted DNS over HTTPS")]


def _signer(pki) -> ProfileSigner:
    return ProfileSigner(pki.signer.certificate, pki.signer.key, (pki.issuing.certificate,))


@pytest.mark.parametrize("signed", [False, True])
def test_describe_device_profile_never_reveals_secrets(pki, device_args, signed):
    xml = render_xml(device_profile(**device_args))
    data = sign_profile(xml, _signer(pki)) if signed else xml
    doc = describe_mobileconfig(data)
    assert doc["signed"] is signed
    assert doc["scope"] == "System" and doc["target_device_type"] == 5
    ident = doc["payloads"][0]
    assert ident["type"] == "com.apple.security.pkcs12"
    assert ident["password_in_profile"] is True
    assert ident["identity"]["subject"] == pki.device.certificate.subject.rfc4514_string()
    assert ident["identity"]["not_after"] == pki.device.certificate.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ident["identity"]["has_private_key"] is True
    assert ident["pkcs12"]["mac"] == "sha1"
    assert ident["pkcs12"]["key_encryption"] == ["pbeWithSHA1And3-KeyTripleDES-CBC"]
    assert [p["certificate"]["subject"] for p in doc["payloads"][1:]] == [
        pki.root.certificate.subject.rfc4514_string(), pki.issuing.certificate.subject.rfc4514_string()]
    if signed:
        assert doc["signer"]["subject"] == pki.signer.certificate.subject.rfc4514_string()
    text = json.dumps(doc, default=str)
    assert device_args["p12_password"] not in text
    assert "PRIVATE KEY" not in text and "BEGIN" not in text
    assert base64.b64encode(device_args["p12"]).decode()[:40] not in text
    assert format(pki.device.key.private_numbers().d, "x")[:32] not in text


def test_describe_without_password_reports_no_identity(pki, device_args):
    profile = device_profile(**device_args)
    del profile["PayloadContent"][0]["Password"]
    ident = describe_mobileconfig(render_xml(profile))["payloads"][0]
    assert ident["password_in_profile"] is False and ident["identity"] is None
    assert ident["pkcs12"]["mac"] == "sha1"  # algorithms are readable without the password


@pytest.mark.parametrize("data", [b"", b"hello", b"\x30\x03\x02\x01", b"<?xml version='1.0'?><plist>"])
def test_describe_rejects_garbage_with_format_error(data):
    with pytest.raises(FormatError):
        describe_mobileconfig(data)


# -- verify ------------------------------------------------------------------------------------

def test_verify_signed_fixture_with_its_own_root(apple_root, tmp_path):
    data = SIGNED_FIXTURE.read_bytes()
    result = verify_profile(data, [apple_root], at=SIGNED_AT)
    assert result["ok"] is True, result["problems"]
    assert result["signed"] is True and result["trusted"] is True
    assert result["chain"] == [SIGNER, "C=US,O=Apple Inc.,OU=Apple Certification Authority,"
                               "CN=Developer ID Certification Authority", apple_root.subject.rfc4514_string()]
    # openssl agrees: the signature verifies and the chain ends at this root at that time
    (tmp_path / "root.pem").write_bytes(apple_root.public_bytes(serialization.Encoding.PEM))
    _openssl("cms", "-verify", "-inform", "DER", "-in", str(SIGNED_FIXTURE), "-out", str(tmp_path / "c.plist"),
             "-CAfile", str(tmp_path / "root.pem"), "-purpose", "any", "-ignore_critical",
             "-attime", str(int(SIGNED_AT.timestamp())))
    # judged today, the expired leaf is named
    today = verify_profile(data, [apple_root])
    assert today["ok"] is False and today["trusted"] is False
    assert any("Developer ID Installer: Andrew Glaze" in p and "expired on 2026-05-17" in p
               for p in today["problems"]), today["problems"]


def test_verify_fixture_against_wrong_root(pki):
    result = verify_profile(SIGNED_FIXTURE.read_bytes(), [pki.root.certificate], at=SIGNED_AT)
    assert result["ok"] is False and result["trusted"] is False
    assert result["chain"][0] == SIGNER and len(result["chain"]) == 2
    assert any("no issuer found for" in p and "Developer ID Certification Authority" in p
               and "does not reach a trusted root" in p for p in result["problems"]), result["problems"]


def test_verify_our_signed_profile(pki, device_args):
    signed = sign_profile(render_xml(device_profile(**device_args)), _signer(pki))
    result = verify_profile(signed, [pki.root.certificate])
    assert result["ok"] is True, result["problems"]
    assert result["chain"] == [c.subject.rfc4514_string() for c in
                               (pki.signer.certificate, pki.issuing.certificate, pki.root.certificate)]
    assert verify_profile(signed, [])["trusted"] is None  # no roots: signature checked, trust not judged
    other = verify_profile(signed, [pki.other_root.certificate])
    assert other["ok"] is False


def test_verify_tampered_signed_profile_fails_clearly(pki, device_args):
    signed = bytearray(sign_profile(render_xml(device_profile(**device_args)), _signer(pki)))
    at = bytes(signed).index(b"<string>Acme Corp</string>") + len("<string>")
    signed[at] ^= 0x20  # "Acme" -> "acme": still a valid plist, but not what was signed
    result = verify_profile(bytes(signed), [pki.root.certificate])
    assert result["ok"] is False
    assert any("changed after signing" in p for p in result["problems"]), result["problems"]


def test_verify_tampered_fixture(fixture_content):
    """The signed fixture has signed attributes: a changed profile fails the messageDigest check while
    the signature over the attributes still holds; a changed messageDigest fails both."""
    data = SIGNED_FIXTURE.read_bytes()
    at = data.index(b"<string>Adguard Default DNS over HTTPS</string>") + len("<string>")
    changed = data[:at] + bytes([data[at] ^ 0x20]) + data[at + 1:]  # "Adguard" -> "adguard"
    result = verify_profile(changed, [], at=SIGNED_AT)
    assert result["ok"] is False
    assert any("changed after signing" in p for p in result["problems"]), result["problems"]
    assert not any("signature does not verify" in p for p in result["problems"])
    digest = hashlib.sha1(fixture_content[2]).digest()
    assert data.count(digest) == 1
    at = data.index(digest)
    attrs = verify_profile(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:], [], at=SIGNED_AT)
    assert any("changed after signing" in p for p in attrs["problems"])
    assert any("signature does not verify" in p for p in attrs["problems"]), attrs["problems"]


def test_verify_tampered_signature_and_truncation(pki, device_args):
    signed = sign_profile(render_xml(device_profile(**device_args)), _signer(pki))
    flipped = signed[:-1] + bytes([signed[-1] ^ 0xFF])  # last byte of the RSA signature
    result = verify_profile(flipped, [pki.root.certificate])
    assert not result["ok"] and any("signature does not verify" in p for p in result["problems"])
    truncated = verify_profile(signed[: len(signed) // 2], [pki.root.certificate])
    assert not truncated["ok"] and truncated["problems"]


def test_verify_expired_chain(pki, device_args):
    signed = sign_profile(render_xml(device_profile(**device_args)), _signer(pki))
    later = verify_profile(signed, [pki.root.certificate], at=TODAY + dt.timedelta(days=800))
    assert not later["ok"] and any("expired" in p for p in later["problems"])


def test_verify_unsigned_profiles():
    assert verify_profile(UNSIGNED_FIXTURE.read_bytes(), [])["ok"] is True
    result = verify_profile(b"not a profile", [])
    assert result["ok"] is False and result["problems"]


def test_verify_flags_macos_incompatible_p12_and_bad_password(pki, device_args):
    aes = factory.make_pfx(pki.device.certificate, pki.device.key, b"pw12345", encryption="aes")
    profile = device_profile(**dict(device_args, p12=aes, p12_password="pw12345"))
    problems = verify_profile(render_xml(profile), [])["problems"]
    assert any("MAC is sha256" in p for p in problems), problems
    profile["PayloadContent"][0]["Password"] = "wrong"
    problems = verify_profile(render_xml(profile), [])["problems"]
    assert any("does not open" in p for p in problems)


def test_inspect_names_pkcs12_algorithms_fleetpkg_cannot_use(pki, device_args):
    """An identity made by `openssl pkcs12 -legacy` with RC4 bags: reported by name, flagged."""
    rc4 = factory.openssl_pfx(pki.device.certificate, pki.device.key, b"pw12345", (), "-legacy",
                              "-keypbe", "PBE-SHA1-RC4-128", "-certpbe", "PBE-SHA1-RC4-40")
    profile = device_profile(**device_args)
    profile["PayloadContent"][0].update(PayloadContent=rc4, Password="pw12345")
    ident = describe_mobileconfig(render_xml(profile))["payloads"][0]
    assert ident["pkcs12"] == {"mac": "sha1", "mac_iterations": 2048,
                               "certificate_encryption": ["pbeWithSHA1And40BitRC4"],
                               "key_encryption": ["pbeWithSHA1And128BitRC4"]}
    problems = verify_profile(render_xml(profile), [])["problems"]
    assert any("key encryption pbeWithSHA1And128BitRC4 is not importable by macOS" in p for p in problems)

def test_verify_structure_problems(pki):
    profile = trust_profile(fleet="F", organization="O", identifier_prefix="com.acme.x",
                            roots=[pki.root.certificate], intermediates=[pki.issuing.certificate])
    profile["PayloadContent"][1]["PayloadUUID"] = profile["PayloadContent"][0]["PayloadUUID"]
    profile["PayloadContent"][1]["PayloadContent"] = b"not DER"
    profile["PayloadType"] = "Other"
    problems = verify_profile(render_xml(profile), [])["problems"]
    assert any("duplicate payload PayloadUUID" in p for p in problems)
    assert any("not a certificate" in p for p in problems)
    assert any("not Configuration" in p for p in problems)


# -- hostile input: only FormatError from describe, never an exception from verify --------------

from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

_FIXTURE_BYTES = SIGNED_FIXTURE.read_bytes()
_CERTS_BYTES = CERTS_FIXTURE.read_bytes()  # damaged certificate payloads come from this one


def _flipped(blob: bytes):
    return st.tuples(st.integers(0, len(blob) - 1), st.integers(1, 255)).map(
        lambda m: blob[:m[0]] + bytes([blob[m[0]] ^ m[1]]) + blob[m[0] + 1:])


def _truncated(blob: bytes):
    return st.integers(0, len(blob)).map(lambda n: blob[:n])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.binary(max_size=300), _flipped(_FIXTURE_BYTES), _truncated(_FIXTURE_BYTES),
                 _flipped(_CERTS_BYTES), _truncated(_CERTS_BYTES)))
def test_damaged_input_never_crashes(data):
    try:
        describe_mobileconfig(data)
    except FormatError:
        pass
    result = verify_profile(data, [])
    assert isinstance(result["ok"], bool)
    assert result["ok"] is (not result["problems"])


_CONTENT_START = _FIXTURE_BYTES.index(b"<?xml")
_CONTENT_END = _FIXTURE_BYTES.index(b"</plist>") + len(b"</plist>")


@settings(max_examples=100, deadline=None)
@given(st.integers(_CONTENT_START, _CONTENT_END - 1), st.integers(1, 255))
def test_any_change_to_signed_content_fails_verify(pos, mask):
    data = _FIXTURE_BYTES[:pos] + bytes([_FIXTURE_BYTES[pos] ^ mask]) + _FIXTURE_BYTES[pos + 1:]
    result = verify_profile(data, [], at=SIGNED_AT)
    assert result["ok"] is False
    assert any("changed after signing" in p for p in result["problems"]), result["problems"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pos=st.integers(0, 10_000), mask=st.integers(1, 255), cut=st.booleans())
def test_damaged_embedded_p12_is_reported_not_raised(pki, device_args, pos, mask, cut):
    profile = device_profile(**device_args)
    p12 = bytearray(profile["PayloadContent"][0]["PayloadContent"])
    pos %= len(p12)
    p12 = p12[:pos] if cut else p12[:pos] + bytes([p12[pos] ^ mask]) + p12[pos + 1:]
    profile["PayloadContent"][0]["PayloadContent"] = bytes(p12)
    data = render_xml(profile)
    ident = describe_mobileconfig(data)["payloads"][0]
    assert ident["identity"] is None or ident["identity"]["subject"]
    result = verify_profile(data, [])
    assert result["ok"] is (not result["problems"])


# -- profiles signed by openssl (an independent CMS encoder), DER and streamed BER ---------------

def _openssl_sign(xml: bytes, pki, folder: Path, *options: str, chain=()) -> bytes:
    """`openssl cms -sign` of a profile by the test signer, `chain` added to the CMS certificates."""
    (folder / "p.xml").write_bytes(xml)
    (folder / "signer.pem").write_bytes(pki.signer.certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "signer.key").write_bytes(pki.signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (folder / "chain.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    subprocess.run([require_tool("openssl"), "cms", "-sign", "-binary", "-nodetach", "-md", "sha256",
                    "-outform", "DER", "-signer", str(folder / "signer.pem"),
                    "-inkey", str(folder / "signer.key"), "-certfile", str(folder / "chain.pem"),
                    "-in", str(folder / "p.xml"), "-out", str(folder / "p.signed"), *options],
                   check=True, capture_output=True)
    return (folder / "p.signed").read_bytes()


@pytest.mark.parametrize("stream", [False, True])
def test_verify_and_describe_openssl_signed_profiles(pki, device_args, tmp_path, stream):
    xml = render_xml(device_profile(**device_args))
    signed = _openssl_sign(xml, pki, tmp_path, *(["-stream"] if stream else []), chain=(pki.issuing.certificate,))
    if stream:
        assert signed[1] == 0x80  # indefinite-length BER, as Apple's tools also write
    result = verify_profile(signed, [pki.root.certificate])
    assert result["ok"] is True, result["problems"]
    assert result["trusted"] is True
    doc = describe_mobileconfig(signed)
    assert doc["signed"] is True and doc["digest_algorithm"] == "sha256"
    assert doc["signer"]["subject"] == pki.signer.certificate.subject.rfc4514_string()
    assert doc["identifier"] == "com.acme.oneE.identity.mac-01"
    tampered = bytearray(signed)
    at = bytes(signed).index(b"<key>PayloadScope</key>") + 5
    tampered[at] ^= 0x01
    bad = verify_profile(bytes(tampered), [pki.root.certificate])
    assert bad["ok"] is False and any("changed after signing" in p for p in bad["problems"])


OID_MESSAGE_DIGEST_DER = bytes.fromhex("06092a864886f70d010904")


@pytest.fixture(scope="module")
def noattr_signed(pki, tmp_path_factory) -> bytes:
    """A certificate profile signed by `openssl cms -noattr` with its whole chain, root included, in the
    CMS: the shape some third-party (e.g. Windows) signers write, where the signature is over the
    profile itself. No licensed real file of this shape was found (tests/fixtures/README.md)."""
    profile = trust_profile(fleet="F", organization="O", identifier_prefix="com.acme.x",
                            roots=[pki.root.certificate], intermediates=[pki.issuing.certificate])
    signed = _openssl_sign(render_xml(profile), pki, tmp_path_factory.mktemp("noattr"), "-noattr",
                           chain=(pki.issuing.certificate, pki.root.certificate))
    assert OID_MESSAGE_DIGEST_DER not in signed  # really without signed attributes
    return signed


def test_verify_profile_without_signed_attributes(pki, noattr_signed):
    result = verify_profile(noattr_signed, [pki.root.certificate])
    assert result["ok"] is True, result["problems"]
    assert result["signed"] is True and result["trusted"] is True
    assert result["chain"] == [c.subject.rfc4514_string() for c in
                               (pki.signer.certificate, pki.issuing.certificate, pki.root.certificate)]
    doc = describe_mobileconfig(noattr_signed)
    assert doc["signer"]["subject"] == pki.signer.certificate.subject.rfc4514_string()
    assert [p["type"] for p in doc["payloads"]] == ["com.apple.security.root", "com.apple.security.pkcs1"]
    wrong = verify_profile(noattr_signed, [pki.other_root.certificate])
    assert wrong["ok"] is False and wrong["trusted"] is False and len(wrong["chain"]) == 3
    root = pki.root.certificate.subject.rfc4514_string()
    assert f"signer chain ends at {root}, which is not a trusted root" in wrong["problems"], wrong["problems"]


def test_verify_ecdsa_signed_profile(pki, device_args):
    ec_signer = factory.make_device_cert(pki.issuing, "EC Signer", key=factory.ec_key(), eku=None,
                                         san_dns=None, key_usage={"digital_signature": True},
                                         not_before=TODAY - dt.timedelta(days=1),
                                         not_after=TODAY + dt.timedelta(days=30))
    signed = sign_profile(render_xml(device_profile(**device_args)),
                          ProfileSigner(ec_signer.certificate, ec_signer.key, (pki.issuing.certificate,)))
    assert verify_profile(signed, [pki.root.certificate])["ok"] is True
    flipped = signed[:-3] + bytes([signed[-3] ^ 1]) + signed[-2:]
    assert verify_profile(flipped, [pki.root.certificate])["ok"] is False


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.floats(0, 1, exclude_max=True), st.integers(1, 255))
def test_any_change_to_content_without_signed_attributes_fails_verify(noattr_signed, where, mask):
    start, end = noattr_signed.index(b"<?xml"), noattr_signed.index(b"</plist>") + len(b"</plist>")
    pos = start + int(where * (end - start))
    data = noattr_signed[:pos] + bytes([noattr_signed[pos] ^ mask]) + noattr_signed[pos + 1:]
    result = verify_profile(data, [])
    assert result["ok"] is False
    assert any("signature does not verify" in p for p in result["problems"]), result["problems"]
    assert not any("changed after signing" in p for p in result["problems"])
