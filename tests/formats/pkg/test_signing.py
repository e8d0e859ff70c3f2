"""Signing packages like productsign and verifying them: openssl and bsdtar judge our output with
the very commands that accept Apple's signed fixture; tampering anywhere is named."""

from __future__ import annotations

import hashlib
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings, strategies as st

from builder.errors import SigningError
from builder.formats.pkg import cms, xar
from builder.formats.pkg.signing import PRODUCTSIGN_CMS_SIZE, PackageSigner, sign_package
from builder.formats.pkg.verify import (APPLE_ROOT_CA_SHA256, CMS_INVALID, NOT_APPLE, NOT_SIGNED, RSA_INVALID,
                                TOC_MISMATCH, verify_package_signature)
from builder.certs.signing_identity import SigningIdentity
from tests.conftest import FIXTURES, require_tool
from tests.formats.pkg.identity_factory import make_chain
from tests.formats.pkg.sigparts import signature_parts

APPLE_SIGNED = FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg"
UNSIGNED = FIXTURES / "pkg" / "relic-dummy.pkg"
APPLE_SIGNING_TIME = "1604056000"  # 2020-10-30, when the fixture's (now expired) leaf was valid


def identity(tag: str = "A", **kw) -> SigningIdentity:
    c = make_chain(tag, **kw)
    return SigningIdentity(c.leaf_key, c.leaf, (c.ca, c.root), ())


def signed_copy(tmp_path: Path, tag: str = "A", src: Path = UNSIGNED, name: str = "signed.pkg", **kw) -> Path:
    out = tmp_path / name
    sign_package(src, out, identity(tag, **kw))
    return out


def flip(src: Path, dest: Path, pos: int) -> Path:
    data = bytearray(src.read_bytes())
    data[pos] ^= 0x01
    dest.write_bytes(bytes(data))
    return dest


def openssl_checks(pkg: Path, root_der: bytes, work: Path, attime: str | None = None) -> None:
    """§2.4 of flat-package-format.md, as run on Apple's fixture."""
    openssl = require_tool("openssl")
    parts = signature_parts(pkg)
    assert parts["checksum"] == parts["computed_checksum"]
    (work / "checksum.bin").write_bytes(parts["checksum"])
    (work / "rsa.bin").write_bytes(parts["rsa"])
    (work / "cms.bin").write_bytes(parts["cms"])
    (work / "leaf.der").write_bytes(parts["toc_certs"][0])
    (work / "root.der").write_bytes(root_der)
    run = lambda *args: subprocess.run([openssl, *args], cwd=work, capture_output=True, text=True)  # noqa: E731
    assert run("x509", "-inform", "DER", "-in", "leaf.der", "-pubkey", "-noout", "-out", "pub.pem").returncode == 0
    assert run("x509", "-inform", "DER", "-in", "root.der", "-out", "root.pem").returncode == 0
    r = run("dgst", "-sha1", "-verify", "pub.pem", "-signature", "rsa.bin", "checksum.bin")
    assert r.returncode == 0 and "Verified OK" in r.stdout, r.stdout + r.stderr
    base = ["cms", "-verify", "-inform", "DER", "-in", "cms.bin", "-binary", "-content", "checksum.bin",
            "-out", "/dev/null"]
    r = run(*base, "-noverify")
    assert r.returncode == 0, r.stderr
    # -ignore_critical: openssl does not know Apple's critical 1.2.840.113635.100.6.1.14 leaf marker
    extra = ["-attime", attime] if attime else []
    r = run(*base, "-CAfile", "root.pem", "-purpose", "any", "-ignore_critical", *extra)
    assert r.returncode == 0, r.stderr
    (work / "checksum.bin").write_bytes(bytes(20))  # and the checks can fail
    assert run("dgst", "-sha1", "-verify", "pub.pem", "-signature", "rsa.bin", "checksum.bin").returncode != 0
    assert run(*base, "-noverify").returncode != 0


# -- Apple's fixture ---------------------------------------------------------------------

def test_apple_fixture_is_valid():
    report = verify_package_signature(APPLE_SIGNED)
    assert report.ok, report.problems
    assert (report.toc_checksum_ok, report.files_ok, report.signed, report.rsa_ok, report.cms_ok,
            report.chain_ok) == (True,) * 6
    assert report.anchored_at == "apple-root"
    assert [c["subject"].split("CN=")[1].split(",")[0] for c in report.chain] == [
        "Developer ID Installer: Armin Briegel (JME5BW3F3R)", "Developer ID Certification Authority",
        "Apple Root CA"]
    assert report.chain[-1]["sha256"] == APPLE_ROOT_CA_SHA256
    assert report.timestamp["ok"] and report.timestamp["time"] == "2020-10-30T11:04:08Z"
    assert any("expired on 2023-12-13" in n and "timestamped" in n for n in report.notes)
    assert any("stapled notarization ticket" in n for n in report.notes)


def test_apple_root_fingerprint_is_the_published_one():
    root = x509.load_der_x509_certificate(signature_parts(APPLE_SIGNED)["toc_certs"][-1])
    assert root.subject.rfc4514_string() == "CN=Apple Root CA,OU=Apple Certification Authority,O=Apple Inc.,C=US"
    assert hashlib.sha256(root.public_bytes(serialization.Encoding.DER)).hexdigest() == APPLE_ROOT_CA_SHA256
    assert APPLE_ROOT_CA_SHA256 == "B0B1730ECBC7FF4505142C49F1295E6EDA6BCAED7E2C68C5BE91B5A11001F024".lower()


def test_apple_fixture_passes_openssl(tmp_path: Path):
    openssl_checks(APPLE_SIGNED, signature_parts(APPLE_SIGNED)["toc_certs"][-1], tmp_path, APPLE_SIGNING_TIME)


def _apple_offsets() -> dict:
    p = signature_parts(APPLE_SIGNED)
    heap = p["heap"]
    return {"toc": 28 + 100, "heap_data": heap + p["first_data_offset"] + 10,
            "rsa": heap + p["rsa_slot"][0] + 100,
            "cms": heap + p["cms_slot"][0] + 4000}  # inside the SignerInfo signature value


@pytest.mark.parametrize("where, expected", [
    ("toc", TOC_MISMATCH),
    ("heap_data", "file data checksum mismatch in Installomator.pkg/Bom"),
    ("rsa", RSA_INVALID),
    ("cms", CMS_INVALID),
])
def test_apple_fixture_tampering_is_named(tmp_path: Path, where: str, expected: str):
    pos = _apple_offsets()[where]
    report = verify_package_signature(flip(APPLE_SIGNED, tmp_path / "bad.pkg", pos))
    assert not report.ok
    assert any(p.startswith(expected) for p in report.problems), report.problems


def test_cms_flip_inside_signature_value_is_a_signature_failure(tmp_path: Path):
    p = signature_parts(APPLE_SIGNED)
    si_sig = cms.parse_signed_data(p["cms"]).signer_infos[0].signature
    at = p["cms"].index(si_sig)
    report = verify_package_signature(flip(APPLE_SIGNED, tmp_path / "bad.pkg", p["heap"] + p["cms_slot"][0] + at + 7))
    assert f"{CMS_INVALID}: signature does not verify" in report.problems
    assert report.rsa_ok


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_flipped_byte_in_apple_fixture_is_caught(tmp_path_factory, data):
    """Every byte up to the heap end is covered by some check (header fields included)."""
    src = APPLE_SIGNED.read_bytes()
    heap_end = src.index(b"t8lr")  # the stapled ticket trailer starts where the heap ends
    pos = data.draw(st.integers(0, heap_end - 1))
    bit = data.draw(st.sampled_from([0x01, 0x80, 0xFF]))
    bad = bytearray(src)
    bad[pos] ^= bit
    path = tmp_path_factory.mktemp("flip") / "bad.pkg"
    path.write_bytes(bytes(bad))
    assert not verify_package_signature(path).ok, pos


def test_unsigned_package_is_reported():
    report = verify_package_signature(UNSIGNED)
    assert report.toc_checksum_ok and report.files_ok and not report.signed
    assert report.problems == [NOT_SIGNED]


# -- our signatures ------------------------------------------------------------------------

def test_signed_package_passes_openssl_and_bsdtar(tmp_path: Path):
    chain = make_chain("A")
    pkg = signed_copy(tmp_path)
    openssl_checks(pkg, chain.root.public_bytes(serialization.Encoding.DER), tmp_path)
    bsdtar = require_tool("bsdtar")
    out = tmp_path / "x"
    out.mkdir()
    r = subprocess.run([bsdtar, "-xf", str(pkg), "-C", str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    orig = tmp_path / "orig"
    orig.mkdir()
    subprocess.run([bsdtar, "-xf", str(UNSIGNED), "-C", str(orig)], check=True)
    for f in orig.rglob("*"):
        if f.is_file():
            assert (out / f.relative_to(orig)).read_bytes() == f.read_bytes()


def test_signed_package_verifies_with_trust_root(tmp_path: Path):
    chain = make_chain("A")
    pkg = signed_copy(tmp_path)
    report = verify_package_signature(pkg, [chain.root])
    assert report.ok, report.problems
    assert report.anchored_at == "trusted-root" and report.timestamp is None
    untrusted = verify_package_signature(pkg)
    assert untrusted.rsa_ok and untrusted.cms_ok and untrusted.anchored_at == "untrusted"
    assert untrusted.problems == [NOT_APPLE]
    wrong = verify_package_signature(pkg, [make_chain("B").root])
    assert wrong.problems == [NOT_APPLE]


def test_layout_and_cms_match_apple_field_by_field(tmp_path: Path):
    ours = signature_parts(signed_copy(tmp_path))
    apple = signature_parts(APPLE_SIGNED)
    assert ours["rsa_slot"] == apple["rsa_slot"] == (20, 256)
    assert ours["cms_slot"] == apple["cms_slot"] == (276, PRODUCTSIGN_CMS_SIZE)
    assert ours["first_data_offset"] == apple["first_data_offset"] == 9492
    assert ours["toc_certs"] == ours["cms_toc_certs"]  # same chain in both KeyInfo elements
    assert '<checksum style="sha1">' in ours["toc"]
    sd_o, sd_a = cms.parse_signed_data(ours["cms"]), cms.parse_signed_data(apple["cms"])
    assert (sd_o.version, sd_o.digest_algorithms, sd_o.content_type, sd_o.content, sd_o.indefinite_length) == \
        (sd_a.version, sd_a.digest_algorithms, sd_a.content_type, sd_a.content, sd_a.indefinite_length) == \
        (1, (cms.OID_SHA1,), cms.OID_DATA, None, True)
    si_o, si_a = sd_o.signer_infos[0], sd_a.signer_infos[0]
    for field in ("version", "digest_algorithm", "digest_params", "signed_attributes",
                  "signature_algorithm", "signature_params"):
        assert getattr(si_o, field) == getattr(si_a, field), field
    # certificate order relative to the TOC chain is the same rule for both
    for parts, sd in ((ours, sd_o), (apple, sd_a)):
        assert list(sd.certificates) == cms.apple_certificate_order(parts["toc_certs"])
        assert sd.signer_infos[0].signature == parts["rsa"]
        assert sd.signer_infos[0].serial == x509.load_der_x509_certificate(parts["toc_certs"][0]).serial_number


def test_resign_with_another_identity_keeps_file_data(tmp_path: Path):
    first = signed_copy(tmp_path, "A", name="a.pkg")
    second = signed_copy(tmp_path, "B", src=first, name="b.pkg")
    apple_resigned = signed_copy(tmp_path, "B", src=APPLE_SIGNED, name="apple-b.pkg")
    for src, dest in ((UNSIGNED, first), (first, second), (APPLE_SIGNED, apple_resigned)):
        with xar.XarReader(src) as r1, xar.XarReader(dest) as r2:
            files1 = {e.path: b"".join(r1.iter_stored(e)) for e in r1.entries if e.data}
            files2 = {e.path: b"".join(r2.iter_stored(e)) for e in r2.entries if e.data}
            assert files1 == files2 and files1
    for pkg in (second, apple_resigned):
        report = verify_package_signature(pkg, [make_chain("B").root])
        assert report.ok, report.problems
        assert "TEAMB12345" in report.chain[0]["subject"]
        assert verify_package_signature(pkg, [make_chain("A").root]).problems == [NOT_APPLE]


def test_signing_is_deterministic(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    a = signed_copy(tmp_path, name="1.pkg")
    b = signed_copy(tmp_path, name="2.pkg")
    assert a.read_bytes() == b.read_bytes()

    def build(name: str) -> bytes:
        out = tmp_path / name
        with xar.XarWriter(out, signer=PackageSigner(identity("A"))) as w:
            w.add_bytes("hello.txt", b"hello\n" * 1000, compress=True)
            w.add_bytes("Payload", bytes(range(256)) * 64, compress=False)
        return out.read_bytes()

    first, again = build("w1.pkg"), build("w2.pkg")
    assert first == again
    assert verify_package_signature(tmp_path / "w1.pkg", [make_chain("A").root]).ok


def test_sign_while_writing_verifies(tmp_path: Path):
    out = tmp_path / "w.pkg"
    with xar.XarWriter(out, signer=PackageSigner(identity("A"))) as w:
        w.add_bytes("Distribution", b"<installer-gui-script/>", compress=True)
    openssl_checks(out, make_chain("A").root.public_bytes(serialization.Encoding.DER), tmp_path)
    assert verify_package_signature(out, [make_chain("A").root]).ok


def test_rsa_4096(tmp_path: Path):
    chain = make_chain("R4", leaf_bits=4096)
    signer = PackageSigner(identity("R4", leaf_bits=4096))
    assert signer.rsa_size == 512
    pkg = signed_copy(tmp_path, "R4", leaf_bits=4096)
    parts = signature_parts(pkg)
    assert parts["rsa_slot"] == (20, 512) and parts["cms_slot"][0] == 532
    openssl_checks(pkg, chain.root.public_bytes(serialization.Encoding.DER), tmp_path)
    assert verify_package_signature(pkg, [chain.root]).ok


def test_cms_size_grows_for_big_chains_and_timestamps():
    base = PackageSigner(identity("A"))
    assert base.cms_size == PRODUCTSIGN_CMS_SIZE
    assert PackageSigner(identity("A"), timestamp_url="http://127.0.0.1:9/").cms_size > base.cms_size
    c = make_chain("A")
    big = SigningIdentity(c.leaf_key, c.leaf, (c.ca, c.root) * 4, ())
    signer = PackageSigner(big)
    assert signer.cms_size > PRODUCTSIGN_CMS_SIZE
    rsa_sig, blob = signer.sign(bytes(20))
    assert len(rsa_sig) == 256 and len(blob) <= signer.cms_size


@pytest.mark.parametrize("where, expected", [
    ("toc", TOC_MISMATCH), ("heap_data", "file data checksum mismatch in "), ("rsa", RSA_INVALID),
    ("cms", CMS_INVALID), ("cms_cert", CMS_INVALID),
])
def test_our_package_tampering_is_named(tmp_path: Path, where: str, expected: str):
    pkg = signed_copy(tmp_path)
    p = signature_parts(pkg)
    heap = p["heap"]
    sig_at = p["cms"].index(cms.parse_signed_data(p["cms"]).signer_infos[0].signature)
    pos = {"toc": 40, "heap_data": heap + p["first_data_offset"] + 5, "rsa": heap + 20 + 3,
           "cms": heap + 276 + sig_at + 3, "cms_cert": heap + 276 + 300}[where]
    report = verify_package_signature(flip(pkg, tmp_path / "bad.pkg", pos), [make_chain("A").root])
    assert any(x.startswith(expected) for x in report.problems), report.problems


def test_expired_without_timestamp_is_a_problem(tmp_path: Path):
    chain = make_chain("A")
    pkg = signed_copy(tmp_path)
    later = chain.leaf.not_valid_after_utc + timedelta(days=2)
    report = verify_package_signature(pkg, [chain.root], now=later)
    assert report.rsa_ok and report.cms_ok and not report.chain_ok
    assert any("was not valid at" in p and "no trusted timestamp" in p for p in report.problems)


def test_codesign_leaf_is_a_note_not_a_failure(tmp_path: Path):
    chain = make_chain("CS", eku="codesign")
    pkg = signed_copy(tmp_path, "CS", eku="codesign")
    report = verify_package_signature(pkg, [chain.root])
    assert report.ok
    assert any("not a Developer ID Installer" in n for n in report.notes)


def test_sign_refuses_damaged_input_and_same_output(tmp_path: Path):
    pkg = signed_copy(tmp_path)
    p = signature_parts(pkg)
    bad = flip(pkg, tmp_path / "bad.pkg", p["heap"] + p["first_data_offset"] + 5)
    with pytest.raises(Exception) as exc:
        sign_package(bad, tmp_path / "out.pkg", identity("A"), check_data=True)
    assert "checksum" in str(exc.value)
    assert not (tmp_path / "out.pkg").exists()
    with pytest.raises(SigningError):
        sign_package(pkg, pkg, identity("A"))


def test_verify_never_raises_on_garbage(tmp_path: Path):
    for blob in (b"", b"xar!", b"not a package at all", APPLE_SIGNED.read_bytes()[:5000]):
        path = tmp_path / "g.pkg"
        path.write_bytes(blob)
        report = verify_package_signature(path)
        assert not report.ok and report.problems


def test_report_json_is_serialisable():
    import json

    doc = verify_package_signature(APPLE_SIGNED).to_json()
    assert json.loads(json.dumps(doc))["ok"] is True
    assert datetime.fromisoformat(doc["chain"][0]["not_after"].replace("Z", "+00:00")).tzinfo == timezone.utc


def test_signing_damaged_data_cannot_launder_it(tmp_path):
    """Re-signing copies data through without a second pass; the damage stays detectable, and
    check_data refuses it outright."""
    from builder.errors import ChecksumError
    from builder.formats.pkg.xar import XarReader

    data = bytearray(UNSIGNED.read_bytes())
    with XarReader(UNSIGNED) as reader:
        entry = reader.get("com.sas.dummy.pkg/Payload")
        data[reader.heap_offset + entry.data.offset + 10] ^= 0xFF
    damaged = tmp_path / "damaged.pkg"
    damaged.write_bytes(bytes(data))
    chain = make_chain("A")
    ident = SigningIdentity(chain.leaf_key, chain.leaf, (chain.ca, chain.root), ())
    with pytest.raises(ChecksumError):
        sign_package(damaged, tmp_path / "refused.pkg", ident, check_data=True)
    assert not (tmp_path / "refused.pkg").exists()
    sign_package(damaged, tmp_path / "signed.pkg", ident)
    report = verify_package_signature(tmp_path / "signed.pkg", [chain.root])
    assert report.rsa_ok and report.cms_ok
    assert "file data checksum mismatch in com.sas.dummy.pkg/Payload" in report.problems
