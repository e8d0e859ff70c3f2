"""The PKCS#12 reader against pyca/cryptography's loader (on its own vector files and on files
made by cryptography and by openssl), its error cases, and hostile input."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.formats import der
from builder.certs import RULES, CertificateError, Identity, load_pfx, parse_pfx
from builder.certs.pfx import PfxError, identity_from
from builder.errors import FleetpkgError
from tests.certs import factory
from tests.certs.vectors import PKITS_P12_DIR, pkcs12_vectors, read_vector
from tests.conftest import require_tool

PASSWORD = b"Distinctive-Pfx-Secret-7"

# cryptography warns about one vector's BER encoding; that file is deliberately odd
pytestmark = pytest.mark.filterwarnings("ignore:PKCS#12 bundle could not be parsed as DER")


def _der(cert) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _pkcs8(key) -> bytes:
    return key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def assert_agrees_with_cryptography(data: bytes, password: bytes) -> None:
    """Same key, same certificates (with friendly names) as pkcs12.load_pkcs12."""
    ref = pkcs12.load_pkcs12(data, password or None)
    parsed = parse_pfx(data, password)
    ref_certs = ([ref.cert] if ref.cert else []) + list(ref.additional_certs)
    ours = sorted((bag.der, (bag.friendly_name or "").encode()) for bag in parsed.certs)
    theirs = sorted((_der(c.certificate), c.friendly_name or b"") for c in ref_certs)
    assert ours == theirs
    if ref.key is None:
        assert parsed.keys == ()
    else:
        assert len(parsed.keys) == 1
        assert parsed.keys[0].pkcs8 == _pkcs8(ref.key) or \
            _pkcs8(serialization.load_der_private_key(parsed.keys[0].pkcs8, None)) == _pkcs8(ref.key)
    if ref.key is not None and ref.cert is not None:
        ident = identity_from(parsed)
        assert ident.certificate == ref.cert.certificate
        assert _pkcs8(ident.key) == _pkcs8(ref.key)
        assert sorted(map(_der, ident.extra_certificates)) == sorted(
            _der(c.certificate) for c in ref.additional_certs)


@pytest.mark.parametrize("name,password", pkcs12_vectors())
def test_cryptography_vectors_agree(name, password):
    assert_agrees_with_cryptography(read_vector(name), password)


def test_vectors_cover_rc2_3des_and_aes():
    seen = set()
    for name, password in pkcs12_vectors():
        for pbe in parse_pfx(read_vector(name), password).encryptions:
            seen.add(pbe.name)
    assert {"pbeWithSHAAnd40BitRC2-CBC", "pbeWithSHAAnd3-KeyTripleDES-CBC",
            "PBES2/PBKDF2-hmacWithSHA1/AES-256-CBC"} <= seen


@pytest.mark.parametrize("name,kind", [("cert-rc2-key-3des.p12", "RC2-40 certs, 3DES key"),
                                       ("cert-key-aes256cbc.p12", "AES-256"),
                                       ("name-all-pwd.p12", "3DES"),
                                       ("no-password.p12", "RC2, empty password")])
def test_load_pfx_on_vectors(tmp_path, name, kind):
    path = tmp_path / name
    path.write_bytes(read_vector(name))
    password = dict(pkcs12_vectors())[name]
    ident = load_pfx(path, password)
    ref = pkcs12.load_pkcs12(path.read_bytes(), password or None)
    assert ident.certificate == ref.cert.certificate
    assert ident.key.private_numbers() == ref.key.private_numbers()
    assert ident.source == path


def test_pkits_pkcs12_files_agree():
    files = sorted(PKITS_P12_DIR.glob("*.p12"))[::20]  # a spread of the ~400 files
    assert len(files) >= 15
    for path in files:
        assert_agrees_with_cryptography(path.read_bytes(), b"password")


@pytest.fixture(scope="module")
def pki():
    root = factory.make_ca()
    issuing = factory.make_intermediate(root)
    device = factory.make_device_cert(issuing, "MAC01.local")
    return root, issuing, device


@pytest.mark.parametrize("encryption", ["aes", "3des", "rc2", "none"])
def test_factory_files_load(tmp_path, pki, encryption):
    root, issuing, device = pki
    path = factory.write_pfx(tmp_path / "d.pfx", device.certificate, device.key, PASSWORD,
                             [issuing.certificate, root.certificate], encryption=encryption,
                             friendly_name=b"MAC01.local")
    password = b"" if encryption == "none" else PASSWORD
    ident = load_pfx(path, password)
    assert ident.certificate == device.certificate
    assert ident.key.private_numbers() == device.key.private_numbers()
    assert ident.extra_certificates == (issuing.certificate, root.certificate)
    assert_agrees_with_cryptography(path.read_bytes(), password)


def test_ec_and_sha1_mac_and_unicode_password(tmp_path, pki):
    root, issuing, _ = pki
    dev = factory.make_device_cert(issuing, "mac-ec", key=factory.ec_key())
    pw = "pässwörd-ü".encode()
    for enc, mac in (("aes", "sha1"), ("3des", "sha256")):
        data = factory.make_pfx(dev.certificate, dev.key, pw, encryption=enc, mac=mac)
        assert_agrees_with_cryptography(data, pw)


# -- errors ------------------------------------------------------------------------------------

def _assert_one_error(path: Path, password: bytes, *needles: str, rule: str) -> CertificateError:
    """load_pfx fails with one line naming the file and the rule check/build report for it."""
    with pytest.raises(PfxError) as info:
        load_pfx(path, password)
    err = info.value
    assert err.rule == rule and rule in RULES
    assert err.where == str(path)
    text = str(err)
    assert str(path) in text and "\n" not in text
    for needle in needles:
        assert needle in text, text
    assert PASSWORD.decode() not in text
    return err


def _assemble(*bags: bytes) -> bytes:
    """A MAC-less PFX with plain (unencrypted) bags, for shapes no exporter writes."""
    safe_contents = der.seq(*bags)
    auth = der.seq(der.seq(der.oid("1.2.840.113549.1.7.1"), der.explicit(0, der.octets(safe_contents))))
    return der.seq(der.integer(3),
                   der.seq(der.oid("1.2.840.113549.1.7.1"), der.explicit(0, der.octets(auth))))


def _key_bag(key) -> bytes:
    return der.seq(der.oid("1.2.840.113549.1.12.10.1.1"), der.explicit(0, _pkcs8(key)))


def _cert_bag(cert) -> bytes:
    return der.seq(der.oid("1.2.840.113549.1.12.10.1.3"), der.explicit(0, der.seq(
        der.oid("1.2.840.113549.1.9.22.1"), der.explicit(0, der.octets(_der(cert))))))


def _openssl_reads(path: Path) -> None:
    """The hand-assembled file is a real PKCS#12: openssl lists its bags."""
    openssl = require_tool("openssl")
    r = subprocess.run([openssl, "pkcs12", "-info", "-nomacver", "-noout", "-passin", "pass:",
                        "-in", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "Certificate bag" in r.stderr + r.stdout or "Key bag" in r.stderr + r.stdout


def test_error_wrong_password(tmp_path, pki):
    _, _, dev = pki
    path = factory.write_pfx(tmp_path / "wrong.pfx", dev.certificate, dev.key, PASSWORD)
    _assert_one_error(path, b"not-the-password", "wrong password", rule="pfx-password")
    # the message does not echo the password that was tried either
    with pytest.raises(CertificateError) as info:
        load_pfx(path, b"Guess-Attempt-991")
    assert "Guess-Attempt-991" not in str(info.value)


def test_error_no_key(tmp_path, pki):
    _, _, dev = pki
    path = factory.write_pfx(tmp_path / "nokey.pfx", dev.certificate, None, PASSWORD, encryption="3des")
    _assert_one_error(path, PASSWORD, "no private key", rule="private-key")


def test_error_no_certificate(tmp_path, pki):
    _, _, dev = pki
    path = factory.write_pfx(tmp_path / "nocert.pfx", None, dev.key, PASSWORD, encryption="aes")
    _assert_one_error(path, PASSWORD, "no certificate", rule="pfx-no-certificate")


def test_error_two_keys(tmp_path, pki):
    _, _, dev = pki
    path = tmp_path / "twokeys.pfx"
    path.write_bytes(_assemble(_cert_bag(dev.certificate), _key_bag(dev.key), _key_bag(factory.rsa_key(1))))
    _openssl_reads(path)
    _assert_one_error(path, b"", "2 private keys", rule="private-key")


def test_error_mismatched_key(tmp_path, pki):
    _, _, dev = pki
    path = tmp_path / "mismatch.pfx"
    path.write_bytes(_assemble(_cert_bag(dev.certificate), _key_bag(factory.rsa_key(1))))
    _openssl_reads(path)
    _assert_one_error(path, b"", "does not match", rule="private-key")


def test_error_damaged_rsa_key(tmp_path, pki):
    """Right public half, wrong private exponent: the cheap invariants catch what skipping
    OpenSSL's full check would otherwise let through."""
    _, _, dev = pki
    nums = dev.key.private_numbers()
    bad = rsa.RSAPrivateNumbers(nums.p, nums.q, nums.d + 2, nums.dmp1, nums.dmq1, nums.iqmp,
                                nums.public_numbers).private_key(unsafe_skip_rsa_key_validation=True)
    path = tmp_path / "damaged.pfx"
    path.write_bytes(_assemble(_cert_bag(dev.certificate), _key_bag(bad)))
    _assert_one_error(path, b"", "damaged", rule="private-key")


@pytest.mark.parametrize("content", [b"", b"garbage that is not DER at all", b"\x30\x03\x02\x01\x03",
                                     b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"])
def test_error_not_pkcs12(tmp_path, content):
    path = tmp_path / "garbage.pfx"
    path.write_bytes(content)
    _assert_one_error(path, PASSWORD, "not a valid PKCS#12 file", rule="pfx-unreadable")


def test_error_missing_file(tmp_path):
    _assert_one_error(tmp_path / "absent.pfx", PASSWORD, "no such file", rule="pfx-missing")
    (tmp_path / "plain").write_bytes(b"")  # a file where a folder of the path should be
    _assert_one_error(tmp_path / "plain" / "absent.pfx", PASSWORD, "no such file", rule="pfx-missing")


def test_error_folder_is_unreadable_not_missing(tmp_path):
    (tmp_path / "mac01.pfx").mkdir()
    _assert_one_error(tmp_path / "mac01.pfx", PASSWORD, "is a folder", rule="pfx-unreadable")


def test_error_fifo_is_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.pfx")  # reading it would block forever
    _assert_one_error(tmp_path / "pipe.pfx", PASSWORD, "not a regular file", rule="pfx-unreadable")


def test_error_certificate_instead_of_pfx(tmp_path, pki):
    _, _, dev = pki
    path = tmp_path / "cert.pfx"
    path.write_bytes(_der(dev.certificate))
    _assert_one_error(path, PASSWORD, "PKCS#12", rule="pfx-unreadable")


# -- secrets never shown -----------------------------------------------------------------------

def test_no_key_or_password_in_reprs(tmp_path, pki):
    _, issuing, dev = pki
    path = factory.write_pfx(tmp_path / "d.pfx", dev.certificate, dev.key, PASSWORD, [issuing.certificate])
    ident = load_pfx(path, PASSWORD)
    parsed = parse_pfx(path.read_bytes(), PASSWORD)
    d_hex = format(dev.key.private_numbers().d, "x")
    pkcs8 = _pkcs8(dev.key)
    for obj in (ident, parsed, parsed.keys[0]):
        for text in (repr(obj), str(obj)):
            assert PASSWORD.decode() not in text
            assert d_hex not in text and str(dev.key.private_numbers().d) not in text
            assert pkcs8.hex() not in text and repr(pkcs8)[2:50] not in text
    assert isinstance(ident, Identity)


# -- hostile input ----------------------------------------------------------------------------

def _seeds() -> list[tuple[bytes, bytes]]:
    root = factory.make_ca()
    dev = factory.make_device_cert(root, "fuzz")
    seeds = [(read_vector("cert-rc2-key-3des.p12"), b"cryptography"),
             (read_vector("name-1-no-pwd.p12"), b""),
             (factory.make_pfx(dev.certificate, dev.key, PASSWORD, [root.certificate],
                               encryption="aes", iterations=10), PASSWORD)]
    # MAC-less, so mutations reach the bag parser instead of stopping at the MAC
    seeds.append((_assemble(_cert_bag(dev.certificate), _key_bag(dev.key), _cert_bag(root.certificate)), b""))
    return seeds


SEEDS = _seeds()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, len(SEEDS) - 1), data=st.data())
def test_mutations_raise_only_fleetpkg_errors(seed, data):
    blob, password = SEEDS[seed]
    blob = bytearray(blob)
    kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
    pos = data.draw(st.integers(0, len(blob) - 1))
    if kind == "flip":
        blob[pos] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        del blob[pos:]
    elif kind == "insert":
        blob[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
    else:
        del blob[pos:pos + data.draw(st.integers(1, 16))]
    try:
        ident = identity_from(parse_pfx(bytes(blob), password))
    except FleetpkgError:
        return
    assert ident.certificate is not None  # a harmless mutation (e.g. in a friendly name)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_fleetpkg_errors(blob):
    with pytest.raises(FleetpkgError):
        identity_from(parse_pfx(blob, b"x"))


def test_hostile_iteration_count_is_refused():
    root = factory.make_ca()
    data = factory.make_pfx(root.certificate, root.key, PASSWORD, encryption="3des", iterations=2048)
    node = der.parse(data)
    pfx = node.children()
    mac = pfx[2].children()
    hostile_mac = der.seq(mac[0].raw, mac[1].raw, der.integer(2**31 - 1))
    hostile = der.seq(pfx[0].raw, pfx[1].raw, hostile_mac)
    with pytest.raises(FleetpkgError, match="out of range"):
        parse_pfx(hostile, PASSWORD)
