"""describe_pfx: what `fleetpkg inspect x.pfx` reports, and that it never reveals secrets."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization

from builder.certs.inspect import describe_pfx
from builder.errors import FleetpkgError
from tests.certs import factory
from tests.certs.vectors import read_vector

PASSWORD = b"Inspect-Secret-Passw0rd"


@pytest.fixture(scope="module")
def pki():
    root = factory.make_ca()
    issuing = factory.make_intermediate(root)
    return root, issuing, factory.make_device_cert(issuing, "MAC01.local", ocsp_url="http://ocsp.test")


def test_describes_certificate_key_and_protection(pki):
    root, issuing, dev = pki
    data = factory.make_pfx(dev.certificate, dev.key, PASSWORD, [issuing.certificate], encryption="aes",
                            friendly_name=b"MAC01.local", iterations=2000)
    doc = describe_pfx(data, PASSWORD)
    cert = doc["certificate"]
    assert cert["subject"] == "CN=MAC01.local,O=Fleetpkg Test Devices"
    assert cert["issuer"] == issuing.certificate.subject.rfc4514_string()
    assert cert["serial"] == format(dev.certificate.serial_number, "x")
    assert cert["san_dns"] == ["MAC01.local"] and cert["eku"] == ["clientAuth"]
    assert cert["key_usage"] == ["digital_signature", "key_encipherment"]
    assert cert["key"] == {"type": "RSA", "size": 2048}
    assert cert["not_after"] == "2026-06-01T12:00:00Z"
    assert doc["private_key"]["matches_certificate"] is True
    assert [c["subject"] for c in doc["extra_certificates"]] == [issuing.certificate.subject.rfc4514_string()]
    assert doc["friendly_names"] == ["MAC01.local"]
    enc = doc["encryption"]
    # cryptography applies kdf_rounds to the bags only; its MAC always uses 2048 (openssl agrees)
    assert enc["mac"] == {"algorithm": "HMAC-SHA256", "iterations": 2048, "salt_bytes": 8}
    assert enc["key_bags"] == ["PBES2/PBKDF2-hmacWithSHA256/AES-256-CBC"]
    assert enc["cert_bags"] == ["PBES2/PBKDF2-hmacWithSHA256/AES-256-CBC"]
    assert enc["iterations"] == [2000]
    _assert_no_secrets(doc, dev.key, PASSWORD)


def test_legacy_vector(pki):
    doc = describe_pfx(read_vector("cert-rc2-key-3des.p12"), b"cryptography")
    assert doc["encryption"]["cert_bags"] == ["pbeWithSHAAnd40BitRC2-CBC"]
    assert doc["encryption"]["key_bags"] == ["pbeWithSHAAnd3-KeyTripleDES-CBC"]
    assert doc["encryption"]["mac"]["algorithm"] == "HMAC-SHA1"


def test_incomplete_file_is_still_described(pki):
    _, _, dev = pki
    doc = describe_pfx(factory.make_pfx(dev.certificate, None, PASSWORD, encryption="3des"), PASSWORD)
    assert doc["private_key"] == {"count": 0}
    assert doc["certificate"]["subject"].endswith("MAC01.local,O=Fleetpkg Test Devices")


def test_wrong_password_is_an_error(pki):
    _, _, dev = pki
    with pytest.raises(FleetpkgError, match="wrong password"):
        describe_pfx(factory.make_pfx(dev.certificate, dev.key, PASSWORD), b"nope")


def _assert_no_secrets(doc, key, password: bytes) -> None:
    text = json.dumps(doc)
    assert password.decode() not in text
    nums = key.private_numbers()
    for secret in (nums.d, nums.p, nums.q):
        assert str(secret) not in text and format(secret, "x") not in text
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    assert base64.b64encode(der)[:40].decode() not in text and der.hex()[:80] not in text
