"""CMS-signed profiles: openssl verifies them against the test root and recovers the exact XML."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7

from builder.errors import SigningError
from builder.profiles import (ProfileSigner, device_profile, login_items_profile, render_xml,
                              sign_profile, trust_profile)
from tests.certs import factory
from tests.conftest import require_tool
from tests.profiles.conftest import TODAY

PEM = serialization.Encoding.PEM


def openssl_time(when: dt.datetime) -> str:
    """How `openssl cms -print` shows a UTCTime."""
    return f"UTCTIME:{when:%b} {when.day:2d} {when:%H:%M:%S %Y} GMT"


def _signer(pki) -> ProfileSigner:
    return ProfileSigner(pki.signer.certificate, pki.signer.key, (pki.issuing.certificate,))


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def openssl_verify(signed: bytes, root, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    """openssl cms -verify against `root` only: the intermediate must come from the CMS itself."""
    return subprocess.run(
        [require_tool("openssl"), "cms", "-verify", "-inform", "DER",
         "-in", _write(tmp_path / "p.signed.mobileconfig", signed),
         "-CAfile", _write(tmp_path / "root.pem", root.public_bytes(PEM)),
         "-out", str(tmp_path / "content.xml"), *extra],
        capture_output=True)


def cms_print(signed: bytes, tmp_path: Path) -> str:
    return subprocess.run(
        [require_tool("openssl"), "cms", "-cmsout", "-print", "-inform", "DER",
         "-in", _write(tmp_path / "print.der", signed)],
        capture_output=True, check=True).stdout.decode()


def _profiles(pki, device_args) -> dict[str, bytes]:
    common = dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE")
    return {
        "device": render_xml(device_profile(**device_args)),
        "trust": render_xml(trust_profile(**common, roots=[pki.root.certificate],
                                          intermediates=[pki.issuing.certificate])),
        "login-items": render_xml(login_items_profile(**common, label="com.1e.pkg.1E.Client",
                                                      team_id=None)),
    }


@pytest.mark.parametrize("name", ["device", "trust", "login-items"])
@pytest.mark.parametrize("purpose", [(), ("-purpose", "any")])
def test_openssl_verifies_and_recovers_exact_xml(pki, device_args, tmp_path, name, purpose):
    xml = _profiles(pki, device_args)[name]
    signed = sign_profile(xml, _signer(pki))
    result = openssl_verify(signed, pki.root.certificate, tmp_path, *purpose)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Verification successful" in result.stderr
    assert (tmp_path / "content.xml").read_bytes() == xml


def test_openssl_rejects_an_untrusted_root(pki, device_args, tmp_path):
    signed = sign_profile(_profiles(pki, device_args)["trust"], _signer(pki))
    result = openssl_verify(signed, pki.other_root.certificate, tmp_path, "-purpose", "any")
    assert result.returncode != 0


def test_openssl_rejects_tampered_content(pki, device_args, tmp_path):
    xml = _profiles(pki, device_args)["trust"]
    signed = bytearray(sign_profile(xml, _signer(pki)))
    at = bytes(signed).index(b"<key>PayloadDisplayName</key>") + 5
    signed[at] ^= 0x01
    result = openssl_verify(bytes(signed), pki.root.certificate, tmp_path, "-purpose", "any")
    assert result.returncode != 0


def test_structure_sha256_attached_chain_and_signing_time(pki, device_args, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(TODAY.timestamp())))
    signed = sign_profile(_profiles(pki, device_args)["trust"], _signer(pki))
    text = cms_print(signed, tmp_path)
    assert "contentType: pkcs7-signedData" in text
    assert "eContentType: pkcs7-data" in text
    assert text.count("algorithm: sha256 (2.16.840.1.101.3.4.2.1)") == 2  # digestAlgorithms + SignerInfo
    assert "sha1" not in text
    assert "CN=Profile Signer" in text and "subject: O=Fleetpkg Test, CN=Profiles Test Issuing CA" in text
    for attr in ("contentType", "signingTime", "messageDigest"):
        assert f"object: {attr}" in text
    assert openssl_time(TODAY) in text


def test_signed_output_is_reproducible(pki, device_args, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(int(TODAY.timestamp())))
    xml = _profiles(pki, device_args)["login-items"]
    assert sign_profile(xml, _signer(pki)) == sign_profile(xml, _signer(pki))


def test_signing_time_never_predates_the_signer(pki, device_args, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "946684800")  # 2000-01-01, long before the signer
    signed = sign_profile(_profiles(pki, device_args)["trust"], _signer(pki))
    assert openssl_time(pki.signer.certificate.not_valid_before_utc) in cms_print(signed, tmp_path)


def test_ecdsa_signer_verifies_with_openssl(pki, device_args, tmp_path):
    ec_signer = factory.make_device_cert(pki.issuing, "EC Profile Signer", key=factory.ec_key(),
                                         eku=None, san_dns=None, key_usage={"digital_signature": True},
                                         not_before=TODAY - dt.timedelta(days=1),
                                         not_after=TODAY + dt.timedelta(days=30))
    xml = _profiles(pki, device_args)["trust"]
    signed = sign_profile(xml, ProfileSigner(ec_signer.certificate, ec_signer.key,
                                             (pki.issuing.certificate,)))
    result = openssl_verify(signed, pki.root.certificate, tmp_path, "-purpose", "any")
    assert result.returncode == 0, result.stderr.decode()
    assert (tmp_path / "content.xml").read_bytes() == xml


def asn1_shape(signed: bytes, tmp_path: Path) -> list[tuple[str, str, str]]:
    """(depth, type, OID name) per TLV from `openssl asn1parse`; values that legitimately differ
    between two signings (time, signature, lengths) are left out, order is ignored."""
    text = subprocess.run(
        [require_tool("openssl"), "asn1parse", "-inform", "DER", "-in", _write(tmp_path / "a.der", signed)],
        capture_output=True, check=True).stdout.decode()
    shape = []
    for line in text.splitlines():
        if not re.match(r"\s*\d+:d=", line):
            continue  # continuation of a printable OCTET STRING value (the XML)
        match = re.match(r"\s*\d+:d=(\d+)\s+hl=\d+ l=\s*\d+ (?:prim|cons):\s+(.*?)\s*(?::(.*))?$", line)
        assert match, line
        depth, kind, value = match.groups()
        shape.append((depth, kind.strip(), value.strip() if kind.strip() == "OBJECT" else ""))
    return sorted(shape)


def test_same_shape_as_cryptography_pkcs7_builder(pki, device_args, tmp_path):
    """Cross-check against cryptography's own CMS encoder (S/MIME capabilities off, meaningless
    for a profile): the same TLVs at the same depths with the same OIDs."""
    xml = _profiles(pki, device_args)["trust"]
    ours = asn1_shape(sign_profile(xml, _signer(pki)), tmp_path)
    theirs = asn1_shape(
        pkcs7.PKCS7SignatureBuilder().set_data(xml)
        .add_signer(pki.signer.certificate, pki.signer.key, hashes.SHA256())
        .add_certificate(pki.issuing.certificate)
        .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.Binary, pkcs7.PKCS7Options.NoCapabilities]),
        tmp_path)
    oids = {o[2] for o in ours}
    assert {"pkcs7-signedData", "pkcs7-data", "sha256", "contentType", "signingTime",
            "messageDigest", "rsaEncryption"} <= oids
    assert ours == theirs


def test_expired_signer_is_refused(pki, device_args):
    old = factory.make_device_cert(pki.issuing, "Old Signer", key_index=1, eku=None,
                                   not_before=TODAY - dt.timedelta(days=400),
                                   not_after=TODAY - dt.timedelta(days=1))
    with pytest.raises(SigningError, match="expired"):
        sign_profile(b"<plist/>", ProfileSigner(old.certificate, old.key, ()))


def test_mismatched_signing_key_is_refused(pki):
    with pytest.raises(SigningError, match="does not belong"):
        sign_profile(b"<plist/>", ProfileSigner(pki.signer.certificate, pki.device.key, ()))
