"""The password-free PKCS#12 protection reader: checked against openssl's own account of the same
files (`openssl pkcs12 -info`), against fleetpkg's full reader with the password, and on
algorithms fleetpkg cannot use, which inspect must name and the build must refuse."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from builder.certs import CertificateError, parse_pfx
from builder.certs import reencode as reencode_module
from builder.certs.pbe import Pbe
from builder.certs.pfx import MacInfo
from builder.certs.protection import Unsupported, describe_protection, macos_problems, read_protection
from builder.errors import FormatError
from tests.certs import factory
from tests.certs.vectors import pkcs12_vectors, read_vector
from tests.conftest import require_tool

PASSWORD = "Pw1234567"
MACOS_FORM = ("-keypbe", "PBE-SHA1-3DES", "-certpbe", "PBE-SHA1-3DES", "-macalg", "sha1", "-iter", "2048")
OPENSSL_FORMS = {
    "openssl3-default": (),  # PBES2/AES-256 bags, SHA-256 MAC
    "legacy": ("-legacy",),  # RC2-40 certificates, 3DES key
    "macos": MACOS_FORM,
    "mixed": ("-keypbe", "PBE-SHA1-2DES", "-certpbe", "AES-128-CBC", "-macalg", "sha512", "-iter", "4096"),
    "rc4": ("-legacy", "-keypbe", "PBE-SHA1-RC4-128", "-certpbe", "PBE-SHA1-RC4-40"),
}


@pytest.fixture(scope="module")
def pki():
    root = factory.make_ca()
    issuing = factory.make_intermediate(root)
    return issuing, factory.make_device_cert(issuing, "MAC01.local")


def _p12(pki, *options: str) -> bytes:
    issuing, dev = pki
    return factory.openssl_pfx(dev.certificate, dev.key, PASSWORD.encode(), [issuing.certificate], *options)


def _openssl_info(p12: bytes, tmp_path) -> str:
    path = tmp_path / "in.p12"
    path.write_bytes(p12)
    done = subprocess.run([require_tool("openssl"), "pkcs12", "-info", "-noout", "-legacy", "-in", str(path),
                           "-passin", "env:P12_PW"], capture_output=True, check=True,
                          env=dict(os.environ, P12_PW=PASSWORD))
    return done.stdout.decode() + done.stderr.decode()  # openssl prints the MAC and bag lines to stderr


def _openssl_pbes(text: str, label: str) -> list[tuple[str, int]]:
    """(name as inspect spells it, iterations) of each `label:` line openssl printed."""
    found = []
    for scheme, iterations in re.findall(rf"^{label}: (.+), Iteration (\d+)", text, re.M):
        if scheme.startswith("PBES2, PBKDF2, "):  # "PBES2, PBKDF2, AES-256-CBC": inspect says PBES2/aes-256-cbc
            scheme = "PBES2/" + scheme.split(", ")[2].lower()
        found.append((scheme, int(iterations)))
    return found


@pytest.mark.parametrize("form", sorted(OPENSSL_FORMS))
def test_agrees_with_openssl_info(pki, tmp_path, form):
    p12 = _p12(pki, *OPENSSL_FORMS[form])
    info = _openssl_info(p12, tmp_path)
    prot = read_protection(p12)
    doc = describe_protection(prot)
    mac_hash, mac_iterations = re.search(r"^MAC: (\S+), Iteration (\d+)$", info, re.M).groups()
    mac_len, salt_len = map(int, re.search(r"^MAC length: (\d+), salt length: (\d+)$", info, re.M).groups())
    assert (doc["mac"], doc["mac_iterations"]) == (mac_hash, int(mac_iterations))
    assert (len(prot.mac.digest), len(prot.mac.salt)) == (mac_len, salt_len)
    containers = _openssl_pbes(info, "PKCS7 Encrypted data")
    keys = _openssl_pbes(info, "Shrouded Keybag")
    assert containers and keys
    assert doc["certificate_encryption"] == sorted({name for name, _ in containers})
    assert doc["key_encryption"] == sorted({name for name, _ in keys})
    for pbes, listed in ((prot.container_pbes, containers), (prot.shrouded_keys, keys)):
        assert len(pbes) == len(listed)
        assert [p.iterations for p in pbes if isinstance(p, Pbe)] == [n for name, n in listed if "RC4" not in name]


def test_names_openssl_would_print():
    """The spelling `fleetpkg inspect --json` has always used for a profile's identity."""
    doc = describe_protection(read_protection(read_vector("cert-rc2-key-3des.p12")))
    assert doc == {"mac": "sha1", "mac_iterations": 2048,
                   "certificate_encryption": ["pbeWithSHA1And40BitRC2-CBC"],
                   "key_encryption": ["pbeWithSHA1And3-KeyTripleDES-CBC"]}
    doc = describe_protection(read_protection(read_vector("cert-key-aes256cbc.p12")))
    assert doc["certificate_encryption"] == doc["key_encryption"] == ["PBES2/aes-256-cbc"]


@pytest.mark.parametrize("name, password", pkcs12_vectors())
def test_agrees_with_the_full_reader(name, password):
    """Without the password it sees what the full reader (MAC verified, bags decrypted) used."""
    data = read_vector(name)
    parsed = parse_pfx(data, password)
    prot = read_protection(data)
    assert prot.mac == parsed.mac
    seen = [*prot.container_pbes, *prot.shrouded_keys]
    assert all(isinstance(p, Pbe) for p in seen)
    assert set(seen) <= set(parsed.encryptions)
    # key bags inside encrypted containers are invisible without the password, the others are not
    assert set(prot.shrouded_keys) <= {bag.pbe for bag in parsed.keys}
    assert {bag.pbe for bag in parsed.certs if bag.pbe} <= set(prot.container_pbes)
    assert prot.plain_keys <= sum(bag.pbe is None for bag in parsed.keys)
    assert prot.plain_certs == sum(bag.pbe is None for bag in parsed.certs)


@pytest.mark.parametrize("form, problems", [
    ("macos", []),
    ("legacy", []),  # RC2-40 certificates, as Keychain Access exports them: macOS imports that too
    ("openssl3-default", [
        "PKCS#12 MAC is sha256, macOS needs HMAC-SHA1",
        "PKCS#12 certificate encryption PBES2/aes-256-cbc is not importable by macOS "
        "(needs pbeWithSHA1And3-KeyTripleDES-CBC)",
        "PKCS#12 key encryption PBES2/aes-256-cbc is not importable by macOS "
        "(needs pbeWithSHA1And3-KeyTripleDES-CBC)"]),
])
def test_what_macos_would_refuse(pki, form, problems):
    assert macos_problems(read_protection(_p12(pki, *OPENSSL_FORMS[form]))) == problems


def test_rc4_is_named_reported_and_refused(pki):
    p12 = _p12(pki, *OPENSSL_FORMS["rc4"])
    prot = read_protection(p12)  # no exception: inspect must be able to say what it is
    assert all(isinstance(p, Unsupported) and "RC4" in p.reason for p in (*prot.container_pbes,
                                                                           *prot.shrouded_keys))
    doc = describe_protection(prot)
    assert doc["certificate_encryption"] == ["pbeWithSHA1And40BitRC4"]
    assert doc["key_encryption"] == ["pbeWithSHA1And128BitRC4"]
    assert macos_problems(prot) == [
        "PKCS#12 certificate encryption pbeWithSHA1And40BitRC4 is not importable by macOS "
        "(needs pbeWithSHA1And3-KeyTripleDES-CBC)",
        "PKCS#12 key encryption pbeWithSHA1And128BitRC4 is not importable by macOS "
        "(needs pbeWithSHA1And3-KeyTripleDES-CBC)"]
    with pytest.raises(CertificateError, match="RC4"):
        reencode_module.check_structure(p12, PASSWORD, where="dev.pfx")
    with pytest.raises(CertificateError, match="RC4"):
        parse_pfx(p12, PASSWORD.encode())


TRIPLE_DES_OID = bytes.fromhex("060a2a864886f70d010c0103")  # 1.2.840.113549.1.12.1.3
SHA1_OID = bytes.fromhex("06052b0e03021a")  # 1.3.14.3.2.26


def test_unknown_bag_algorithm_is_reported_by_oid(pki):
    good = _p12(pki, *MACOS_FORM)
    assert good.count(TRIPLE_DES_OID) == 2  # the certificates' container and the key bag
    p12 = good.replace(TRIPLE_DES_OID, TRIPLE_DES_OID[:-1] + b"\x09")
    prot = read_protection(p12)
    doc = describe_protection(prot)
    assert doc["certificate_encryption"] == doc["key_encryption"] == ["1.2.840.113549.1.12.1.9"]
    assert [p.oid for p in prot.shrouded_keys] == ["1.2.840.113549.1.12.1.9"]
    assert len(macos_problems(prot)) == 2
    with pytest.raises(CertificateError, match=r"1\.2\.840\.113549\.1\.12\.1\.9"):
        reencode_module.check_structure(p12, PASSWORD)


def test_unknown_mac_algorithm_is_reported_by_oid(pki):
    good = _p12(pki, *MACOS_FORM)
    assert good.count(SHA1_OID) == 1  # only the MAC's DigestInfo names SHA-1
    prot = read_protection(good.replace(SHA1_OID, SHA1_OID[:-1] + b"\x1b"))
    assert isinstance(prot.mac, Unsupported) and not isinstance(prot.mac, MacInfo)
    doc = describe_protection(prot)
    assert (doc["mac"], doc["mac_iterations"]) == ("1.3.14.3.2.27", 2048)
    assert macos_problems(prot) == ["PKCS#12 MAC is 1.3.14.3.2.27, macOS needs HMAC-SHA1"]


@pytest.mark.parametrize("data", [b"", b"\x30\x03\x02\x01\x03", read_vector("cert-key-aes256cbc.p12")[:200]])
def test_malformed_input_is_a_format_error(data):
    with pytest.raises(FormatError, match="malformed PKCS#12"):
        read_protection(data)
