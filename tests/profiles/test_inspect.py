"""describe_mobileconfig and verify_profile on real fixtures and on our own output."""

from __future__ import annotations

import base64
import datetime as dt
import json
import plistlib
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from builder.errors import FormatError
from builder.profiles import (ProfileSigner, describe_mobileconfig, device_profile, render_xml,
                              sign_profile, trust_profile, verify_profile)
from tests.certs import factory
from tests.conftest import FIXTURES, require_tool
from tests.profiles.conftest import TODAY

SIGNED_FIXTURE = FIXTURES / "mobileconfig" / "liuasktao-certs-RPRRLP.mobileconfig"
UNSIGNED_FIXTURE = FIXTURES / "mobileconfig" / "encrypted-dns-unsigned-adguard-default-https.mobileconfig"


def _openssl(*args: str) -> str:
    return subprocess.run([require_tool("openssl"), *args], capture_output=True, check=True).stdout.decode()


def _openssl_subject(der_or_pem: bytes, tmp_path: Path, inform: str = "DER") -> str:
    path = tmp_path / "c.crt"
    path.write_bytes(der_or_pem)
    out = _openssl("x509", "-inform", inform, "-in", str(path), "-noout", "-subject", "-nameopt", "RFC2253")
    return out.strip().removeprefix("subject=")


@pytest.fixture(scope="module")
def fixture_content(tmp_path_factory) -> tuple[dict, bytes]:
    """The signed fixture's plist and signer certificate, as openssl (not our code) extracts them."""
    tmp = tmp_path_factory.mktemp("fixture")
    subprocess.run([require_tool("openssl"), "cms", "-verify", "-noverify", "-inform", "DER",
                    "-in", str(SIGNED_FIXTURE), "-out", str(tmp / "content.plist"),
                    "-signer", str(tmp / "signer.pem")], check=True, capture_output=True)
    return plistlib.loads((tmp / "content.plist").read_bytes()), (tmp / "signer.pem").read_bytes()


def test_describe_signed_fixture(fixture_content, tmp_path):
    content, signer_pem = fixture_content
    doc = describe_mobileconfig(SIGNED_FIXTURE.read_bytes())
    assert doc["signed"] is True
    assert doc["signer"]["subject"] == _openssl_subject(signer_pem, tmp_path, "PEM")
    assert doc["signer"]["subject"].startswith("CN=RLP Software Code 256,")
    signer = x509.load_pem_x509_certificate(signer_pem)
    assert doc["signer"]["not_after"] == signer.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert doc["digest_algorithm"] == "sha1"
    assert doc["identifier"] == content["PayloadIdentifier"]
    assert doc["display_name"] == "Rluupon Public Root RSA"
    assert [p["type"] for p in doc["payloads"]] == [
        "com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pkcs1"]
    for described, raw in zip(doc["payloads"], content["PayloadContent"]):
        assert described["identifier"] == raw["PayloadIdentifier"]
        assert described["certificate"]["subject"] == _openssl_subject(raw["PayloadContent"], tmp_path)
    assert doc["payloads"][0]["certificate"]["subject"] == doc["payloads"][0]["certificate"]["issuer"]


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

def test_verify_signed_fixture_with_its_own_root(fixture_content):
    content, _ = fixture_content
    root = x509.load_der_x509_certificate(content["PayloadContent"][0]["PayloadContent"])
    result = verify_profile(SIGNED_FIXTURE.read_bytes(), [root])
    assert result["ok"] is True, result["problems"]
    assert result["signed"] is True and result["trusted"] is True
    assert result["chain"][0].startswith("CN=RLP Software Code 256") and len(result["chain"]) == 3


def test_verify_fixture_against_wrong_root(pki):
    result = verify_profile(SIGNED_FIXTURE.read_bytes(), [pki.root.certificate])
    assert result["ok"] is False and result["trusted"] is False
    assert any("not a trusted root" in p for p in result["problems"])


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


def test_verify_tampered_fixture_without_signed_attributes(fixture_content):
    content, _ = fixture_content
    root = x509.load_der_x509_certificate(content["PayloadContent"][0]["PayloadContent"])
    data = bytearray(SIGNED_FIXTURE.read_bytes())
    at = bytes(data).index(b"RPRR.cer")
    data[at] ^= 0x01
    result = verify_profile(bytes(data), [root])
    assert result["ok"] is False
    assert any("signature does not verify" in p for p in result["problems"])


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


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(0, len(_FIXTURE_BYTES) - 1), st.integers(1, 255)).map(
        lambda m: _FIXTURE_BYTES[:m[0]] + bytes([_FIXTURE_BYTES[m[0]] ^ m[1]]) + _FIXTURE_BYTES[m[0] + 1:]),
    st.integers(0, len(_FIXTURE_BYTES)).map(lambda n: _FIXTURE_BYTES[:n]),
))
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
    result = verify_profile(data, [])
    assert result["ok"] is False
    assert any("signature does not verify" in p for p in result["problems"]), result["problems"]


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

@pytest.mark.parametrize("stream", [False, True])
def test_verify_and_describe_openssl_signed_profiles(pki, device_args, tmp_path, stream):
    from cryptography.hazmat.primitives import serialization

    xml = render_xml(device_profile(**device_args))
    (tmp_path / "p.xml").write_bytes(xml)
    (tmp_path / "signer.pem").write_bytes(pki.signer.certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "signer.key").write_bytes(pki.signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (tmp_path / "chain.pem").write_bytes(pki.issuing.certificate.public_bytes(serialization.Encoding.PEM))
    args = [require_tool("openssl"), "cms", "-sign", "-binary", "-nodetach", "-md", "sha256",
            "-outform", "DER", "-signer", str(tmp_path / "signer.pem"),
            "-inkey", str(tmp_path / "signer.key"), "-certfile", str(tmp_path / "chain.pem"),
            "-in", str(tmp_path / "p.xml"), "-out", str(tmp_path / "p.signed")]
    subprocess.run(args + (["-stream"] if stream else []), check=True, capture_output=True)
    signed = (tmp_path / "p.signed").read_bytes()
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
