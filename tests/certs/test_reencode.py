"""Re-encoding for macOS, checked by openssl (`pkcs12 -legacy -info`, key/cert match) and by
pyca/cryptography's loader; the password is only ever passed through the environment."""

from __future__ import annotations

import os
import string
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from builder.certs import CertificateError, ReencodedIdentity, load_pfx, reencode_for_macos
from builder.certs import reencode as reencode_module
from tests.certs import factory
from tests.certs.vectors import read_vector
from tests.conftest import require_tool

PASSWORD = b"Original-Export-Secret-3"


@pytest.fixture(scope="module")
def pki():
    root = factory.make_ca()
    issuing = factory.make_intermediate(root)
    return root, issuing, factory.make_device_cert(issuing, "MAC01.local")


def _openssl(*args: str, password: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    openssl = require_tool("openssl")
    return subprocess.run([openssl, *args], input=stdin, capture_output=True,
                          env=dict(os.environ, P12_PW=password))


@pytest.mark.parametrize("source", ["aes", "rc2", "3des"])
def test_openssl_sees_3des_and_sha1_mac(tmp_path, pki, source):
    root, issuing, dev = pki
    src = factory.write_pfx(tmp_path / "in.pfx", dev.certificate, dev.key, PASSWORD, [issuing.certificate],
                            encryption=source)
    out = reencode_for_macos(load_pfx(src, PASSWORD), chain=[issuing.certificate, root.certificate],
                             friendly_name=b"MAC01.local")
    p12 = tmp_path / "out.p12"
    p12.write_bytes(out.p12)
    info = _openssl("pkcs12", "-legacy", "-info", "-in", str(p12), "-passin", "env:P12_PW", "-noout",
                    password=out.password)
    text = (info.stdout + info.stderr).decode()
    assert info.returncode == 0, text
    assert "MAC: sha1, Iteration 2048" in text
    assert "Shrouded Keybag: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048" in text
    assert "PKCS7 Encrypted data: pbeWithSHA1And3-KeyTripleDES-CBC, Iteration 2048" in text
    assert "AES" not in text and "RC2" not in text and "sha256" not in text
    # the key in the output belongs to the certificate in the output (openssl's view)
    pem = _openssl("pkcs12", "-in", str(p12), "-passin", "env:P12_PW", "-nodes", password=out.password).stdout
    key_pub = _openssl("pkey", "-pubout", password="", stdin=pem).stdout
    cert_pub = _openssl("x509", "-noout", "-pubkey", password="", stdin=pem).stdout
    assert key_pub and key_pub == cert_pub
    # and pyca/cryptography reads the same identity, chain and friendly name back
    ref = pkcs12.load_pkcs12(out.p12, out.password.encode())
    assert ref.cert.certificate == dev.certificate and ref.cert.friendly_name == b"MAC01.local"
    assert ref.key.private_numbers() == dev.key.private_numbers()
    assert [c.certificate for c in ref.additional_certs] == [issuing.certificate, root.certificate]


def test_rc2_vector_reencodes(tmp_path):
    src = tmp_path / "v.p12"
    src.write_bytes(read_vector("cert-rc2-key-3des.p12"))
    ident = load_pfx(src, b"cryptography")
    out = reencode_for_macos(ident)
    ref = pkcs12.load_pkcs12(out.p12, out.password.encode())
    assert ref.cert.certificate == ident.certificate


def test_chain_defaults_to_pfx_extras(pki):
    root, issuing, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD, [issuing.certificate]))
    out = reencode_for_macos(ident)
    assert [c.certificate for c in pkcs12.load_pkcs12(out.p12, out.password.encode()).additional_certs] == \
        [issuing.certificate]


def load_pfx_bytes(data: bytes):
    from builder.certs.pfx import identity_from, parse_pfx
    return identity_from(parse_pfx(data, PASSWORD))


def test_fresh_alphanumeric_password_and_no_secret_in_repr(pki):
    _, _, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD))
    a, b = reencode_for_macos(ident), reencode_for_macos(ident)
    assert a.password != b.password and a.p12 != b.p12
    for out in (a, b):
        assert len(out.password) >= 24 and set(out.password) <= set(string.ascii_letters + string.digits)
        for text in (repr(out), str(out)):
            assert out.password not in text and "p12=" not in text
    assert isinstance(a, ReencodedIdentity)


def test_self_check_rejects_wrong_algorithms(monkeypatch, pki):
    """If cryptography ever ignored the requested algorithms, the output must not be used."""
    _, _, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD))
    real = pkcs12.serialize_key_and_certificates

    def aes_instead(name, key, cert, cas, encryption):
        password = encryption.password if hasattr(encryption, "password") else None
        return real(name, key, cert, cas, serialization.BestAvailableEncryption(password))

    monkeypatch.setattr(reencode_module.pkcs12, "serialize_key_and_certificates", aes_instead)
    with pytest.raises(CertificateError, match="self-check"):
        reencode_for_macos(ident)
