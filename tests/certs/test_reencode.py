"""Re-encoding for macOS, checked by openssl (`pkcs12 -legacy -info`, key/cert match) and by
pyca/cryptography's loader; the password is only ever passed through the environment."""

from __future__ import annotations

import os
import string
import subprocess

import pytest
from cryptography.hazmat.primitives import hashes, serialization
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


def test_passwords_draw_every_character_about_equally(monkeypatch):
    """new_password maps random bytes onto the 62 characters, dropping the 8 byte values that would
    favour some: over many passwords each character's share stays near 1/62."""
    alphabet = string.ascii_letters + string.digits
    counts = dict.fromkeys(alphabet, 0)
    for _ in range(2000):
        password = reencode_module.new_password()
        assert len(password) == reencode_module.PASSWORD_LENGTH
        for char in password:
            counts[char] += 1
    expected = 2000 * reencode_module.PASSWORD_LENGTH / len(alphabet)  # ~1032
    assert all(0.8 * expected < n < 1.2 * expected for n in counts.values()), counts
    # bytes that only drop out still end in a whole password
    monkeypatch.setattr(reencode_module.secrets, "token_bytes", lambda n, _calls=iter(range(9)): (
        b"\xff" * n if next(_calls) < 3 else bytes(range(n))))
    assert reencode_module.new_password() == (alphabet * 2)[:reencode_module.PASSWORD_LENGTH]


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


# -- the two checks: structure for every p12, a full read once per process ----------------------

def _openssl_p12(tmp_path, dev, chain, *options: str) -> bytes:
    """A PKCS#12 written by `openssl pkcs12 -export` with the given algorithm options."""
    openssl = require_tool("openssl")
    key = tmp_path / "key.pem"
    key.write_bytes(dev.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    factory.write_pem(tmp_path / "cert.pem", dev.certificate)
    factory.write_pem(tmp_path / "chain.pem", *chain)
    out = tmp_path / "out.p12"
    subprocess.run([openssl, "pkcs12", "-export", "-inkey", str(key), "-in", str(tmp_path / "cert.pem"),
                    "-certfile", str(tmp_path / "chain.pem"), "-passout", "env:P12_PW", "-out", str(out),
                    *options], check=True, capture_output=True, env=dict(os.environ, P12_PW="Pw1234567"))
    return out.read_bytes()


MACOS_FORM = ("-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-iter", "2048")


def test_structure_check_accepts_what_openssl_writes_in_the_macos_form(tmp_path, pki):
    root, issuing, dev = pki
    p12 = _openssl_p12(tmp_path, dev, [issuing.certificate], *MACOS_FORM)
    reencode_module.check_structure(p12, "Pw1234567")  # no password needed: the KDF never runs


@pytest.mark.parametrize("options, why", [
    ((), "MAC is HMAC-SHA256"),  # OpenSSL 3 default: PBES2/AES-256 bags, SHA-256 MAC
    (("-macalg", "sha1"), "AES-256-CBC"),  # AES bags with the right MAC
    (("-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha256"), "HMAC-SHA256"),
    (("-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-iter", "4096"),
     "4096 iterations"),
    (("-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-nomaciter"),
     "1 iterations"),
    (("-legacy",), "RC2"),  # 3DES key, RC2-40 certificates
    (("-keypbe", "PBE-SHA1-3DES", "-certpbe", "NONE", "-macalg", "sha1"), "not encrypted"),
    (("-keypbe", "NONE", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"), "unencrypted"),
    (("-keypbe", "PBE-SHA1-2DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1"), "2-KeyTripleDES"),
])
def test_structure_check_rejects_other_algorithms(tmp_path, pki, options, why):
    _, issuing, dev = pki
    p12 = _openssl_p12(tmp_path, dev, [issuing.certificate], *options)
    with pytest.raises(CertificateError, match="self-check") as info:
        reencode_module.check_structure(p12, "Pw1234567", where="dev.pfx")
    assert why in str(info.value) and "dev.pfx" in str(info.value)


def _with_mac_salt(p12: bytes, size: int) -> bytes:
    """`p12` with its MAC salt (the last OCTET STRING of MacData, at the file's end) replaced by
    `size` bytes; the two enclosing lengths (MacData, PFX) are rewritten to match."""
    tail = b"\x02\x02\x08\x00"  # INTEGER 2048, the MAC iteration count, ends the file
    assert p12.endswith(tail)
    salt_at = len(p12) - len(tail) - 10
    assert p12[salt_at:salt_at + 2] == b"\x04\x08"
    grow = size - 8
    mac_at = p12.rindex(b"\x30\x31\x30\x21", 0, salt_at)  # MacData: SEQ { DigestInfo(SHA-1), salt, iter }
    body = p12[4:mac_at] + bytes([0x30, 0x31 + grow]) + p12[mac_at + 2:salt_at] \
        + bytes([0x04, size]) + b"\x5a" * size + tail
    assert p12[:2] == b"\x30\x82"
    return b"\x30\x82" + len(body).to_bytes(2, "big") + body


def test_structure_check_rejects_other_salt_sizes(tmp_path, pki):
    _, issuing, dev = pki
    good = _openssl_p12(tmp_path, dev, [issuing.certificate], *MACOS_FORM)
    reencode_module.check_structure(_with_mac_salt(good, 8), "Pw1234567")  # the rewrite itself is sound
    with pytest.raises(CertificateError, match="salt of 16 bytes"):
        reencode_module.check_structure(_with_mac_salt(good, 16), "Pw1234567")


@pytest.mark.parametrize("password", ["", "pässwort"])
def test_structure_check_rejects_empty_or_non_ascii_passwords(tmp_path, pki, password):
    _, issuing, dev = pki
    p12 = _openssl_p12(tmp_path, dev, [issuing.certificate], *MACOS_FORM)
    with pytest.raises(CertificateError, match="non-empty ASCII"):
        reencode_module.check_structure(p12, password)


def _count_full_checks(monkeypatch) -> list:
    calls = []
    real = reencode_module.self_check
    monkeypatch.setattr(reencode_module, "self_check", lambda *a: (calls.append(1), real(*a))[1])
    return calls


def test_full_check_runs_once_per_process(monkeypatch, pki):
    _, issuing, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD, [issuing.certificate]))
    monkeypatch.setattr(reencode_module, "_fully_checked_in", None)
    calls = _count_full_checks(monkeypatch)
    for _ in range(3):
        reencode_for_macos(ident)
    assert len(calls) == 1
    reencode_for_macos(ident, full_check=True)
    assert len(calls) == 2


def _reencode_in_child(pfx: bytes) -> int:
    """In a forked process: how many full checks two re-encodings run."""
    calls = []
    real = reencode_module.self_check
    reencode_module.self_check = lambda *a: (calls.append(1), real(*a))[1]
    ident = load_pfx_bytes(pfx)
    reencode_for_macos(ident)
    reencode_for_macos(ident)
    return len(calls)


def test_a_forked_worker_does_its_own_full_check(pki):
    """A worker forked after the parent's full check inherits the parent's memory; it must still
    read back its own first p12 (the flag is the pid that did the check)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _, issuing, dev = pki
    pfx = factory.make_pfx(dev.certificate, dev.key, PASSWORD, [issuing.certificate])
    reencode_for_macos(load_pfx_bytes(pfx))  # the parent's own
    assert reencode_module._fully_checked_in == os.getpid()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork")) as pool:
        assert pool.submit(_reencode_in_child, pfx).result() == 1


def test_full_check_catches_what_the_structure_cannot(monkeypatch, pki):
    """A writer that labels the right algorithms around the wrong secret (here: a p12 sealed with
    another password) passes the structural check; the process's first full read stops it."""
    _, _, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD))
    real = pkcs12.serialize_key_and_certificates

    def other_password(name, key, cert, cas, encryption):
        wrong = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
                 .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                 .hmac_hash(hashes.SHA1()).build(b"not-the-password"))
        return real(name, key, cert, cas, wrong)

    monkeypatch.setattr(reencode_module.pkcs12, "serialize_key_and_certificates", other_password)
    monkeypatch.setattr(reencode_module, "_fully_checked_in", None)
    with pytest.raises(CertificateError, match="self-check: wrong password"):
        reencode_for_macos(ident)
    reencode_for_macos(ident, full_check=False)  # the documented limit of the cheap check


def test_structure_check_alone_rejects_wrong_algorithms(monkeypatch, pki):
    """After the process's full check, later p12s get only the structural check: it alone must
    refuse a writer that ignored the requested algorithms."""
    _, _, dev = pki
    ident = load_pfx_bytes(factory.make_pfx(dev.certificate, dev.key, PASSWORD))
    reencode_for_macos(ident)  # this process's full check is now done
    calls = _count_full_checks(monkeypatch)
    real = pkcs12.serialize_key_and_certificates

    def aes_instead(name, key, cert, cas, encryption):
        return real(name, key, cert, cas, serialization.BestAvailableEncryption(encryption.password))

    monkeypatch.setattr(reencode_module.pkcs12, "serialize_key_and_certificates", aes_instead)
    with pytest.raises(CertificateError, match="self-check: MAC is HMAC-SHA256"):
        reencode_for_macos(ident)
    assert calls == []
