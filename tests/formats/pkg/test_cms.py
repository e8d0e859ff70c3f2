"""CMS SignedData: Apple's productsign blob parsed field by field, ours built to the same shape and
checked by openssl; verification of both signer shapes (no signed attributes / signed attributes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs7
from hypothesis import given, settings, strategies as st

from builder.formats import der
from builder.errors import FormatError
from builder.formats.pkg import cms
from tests.conftest import FIXTURES, require_tool
from tests.formats.pkg.identity_factory import make_chain
from tests.formats.pkg.sigparts import signature_parts

SIGNED = FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg"


def fixture_parts() -> dict:
    return signature_parts(SIGNED)


@pytest.fixture(scope="module")
def apple():
    return fixture_parts()


def build_ours(chain, checksum: bytes) -> bytes:
    sig = chain.leaf_key.sign(checksum, padding.PKCS1v15(), hashes.SHA1())
    certs = [c.public_bytes(serialization.Encoding.DER) for c in (chain.leaf, chain.ca, chain.root)]
    return cms.build_signed_data(certificates=certs, issuer=chain.leaf.issuer.public_bytes(),
                                 serial=chain.leaf.serial_number, signature=sig)


def test_apple_blob_shape(apple):
    sd = cms.parse_signed_data(apple["cms"])
    assert sd.version == 1
    assert sd.digest_algorithms == (cms.OID_SHA1,)
    assert sd.content_type == cms.OID_DATA and sd.content is None
    assert sd.indefinite_length
    assert len(sd.signer_infos) == 1
    si = sd.signer_infos[0]
    assert si.version == 1 and si.issuer is not None
    assert (si.digest_algorithm, si.digest_params) == (cms.OID_SHA1, b"\x05\x00")
    assert (si.signature_algorithm, si.signature_params) == (cms.OID_SHA1_RSA, b"\x05\x00")
    assert si.signed_attributes is None
    assert si.signature == apple["rsa"]  # CMS reuses the xar RSA signature bytes
    assert [o for o, _ in si.unsigned_attributes] == [cms.OID_TIMESTAMP_TOKEN]
    # certificates: the TOC chain (leaf first) re-ordered as SecCmsUtilDERCompare sorts a SET OF
    assert len(apple["toc_certs"]) == 3
    assert list(sd.certificates) == cms.apple_certificate_order(apple["toc_certs"])
    assert list(sd.certificates) != apple["toc_certs"]
    leaf = x509.load_der_x509_certificate(apple["toc_certs"][0])
    assert cms.signer_certificate(sd, si) == leaf
    assert cms.verify_signer(sd, si, apple["checksum"], leaf.public_key()) is None
    assert cms.verify_signer(sd, si, bytes(20), leaf.public_key()) == "signature does not verify"


def test_ours_matches_apple_field_by_field(apple):
    chain = make_chain("A")
    blob = build_ours(chain, apple["checksum"])
    ours, theirs = cms.parse_signed_data(blob), cms.parse_signed_data(apple["cms"])
    for field in ("version", "digest_algorithms", "content_type", "content", "indefinite_length"):
        assert getattr(ours, field) == getattr(theirs, field), field
    a, b = ours.signer_infos[0], theirs.signer_infos[0]
    for field in ("version", "digest_algorithm", "digest_params", "signed_attributes",
                  "signature_algorithm", "signature_params"):
        assert getattr(a, field) == getattr(b, field), field
    assert a.issuer == chain.leaf.issuer.public_bytes() and a.serial == chain.leaf.serial_number
    toc = [c.public_bytes(serialization.Encoding.DER) for c in (chain.leaf, chain.ca, chain.root)]
    assert list(ours.certificates) == cms.apple_certificate_order(toc)
    # byte-identical framing up to the certificates: BER indefinite outer layers, DER inside
    prefix = apple["cms"][:apple["cms"].index(b"\xa0\x82")]
    assert blob.startswith(prefix)
    assert len(prefix) == 48


def test_ours_verifies_with_openssl(tmp_path: Path):
    openssl = require_tool("openssl")
    chain = make_chain("A")
    checksum = bytes(range(20))
    blob = build_ours(chain, checksum)
    (tmp_path / "cms.bin").write_bytes(blob + bytes(9216 - len(blob)))  # zero-padded like the slot
    (tmp_path / "checksum.bin").write_bytes(checksum)
    (tmp_path / "root.pem").write_bytes(chain.pem(chain.root))
    base = [openssl, "cms", "-verify", "-inform", "DER", "-in", "cms.bin", "-binary",
            "-content", "checksum.bin", "-out", "/dev/null"]
    # -ignore_critical: openssl does not know Apple's critical 1.2.840.113635.100.6.1.14 marker and
    # needs it for Apple's own leaf too (test_apple_blob_verifies_with_openssl)
    for extra in (["-noverify"], ["-CAfile", "root.pem", "-purpose", "any", "-ignore_critical"]):
        r = subprocess.run(base + extra, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    (tmp_path / "checksum.bin").write_bytes(bytes(20))
    r = subprocess.run(base + ["-noverify"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode != 0
    printed = subprocess.run([openssl, "cms", "-cmsout", "-print", "-inform", "DER", "-in", "cms.bin"],
                             cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    assert "signedAttrs:\n          <ABSENT>" in printed
    assert "eContent: <ABSENT>" in printed
    assert "sha1WithRSAEncryption" in printed


def test_apple_blob_verifies_with_openssl(apple, tmp_path: Path):
    openssl = require_tool("openssl")
    (tmp_path / "cms.bin").write_bytes(apple["cms"])
    (tmp_path / "checksum.bin").write_bytes(apple["checksum"])
    root = x509.load_der_x509_certificate(apple["toc_certs"][-1])
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    base = [openssl, "cms", "-verify", "-inform", "DER", "-in", "cms.bin", "-binary",
            "-content", "checksum.bin", "-out", "/dev/null"]
    at_signing = ["-attime", "1604056000"]  # 2020-10-30, the leaf expired in 2023
    for extra in (["-noverify"], ["-CAfile", "root.pem", "-purpose", "any", "-ignore_critical", *at_signing]):
        r = subprocess.run(base + extra, cwd=tmp_path, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr


def test_signed_attributes_shape_from_cryptography():
    """Other signers (rcodesign, cryptography) add signed attributes: verify those too."""
    chain = make_chain("A")
    content = b"\x01" * 20
    blob = (pkcs7.PKCS7SignatureBuilder().set_data(content)
            .add_signer(chain.leaf, chain.leaf_key, hashes.SHA256())
            .add_certificate(chain.ca)
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary]))
    sd = cms.parse_signed_data(blob)
    si = sd.signer_infos[0]
    assert si.signed_attributes is not None and si.digest_algorithm == cms.OID_SHA256
    cert = cms.signer_certificate(sd, si)
    assert cert == chain.leaf
    assert cms.verify_signer(sd, si, content, cert.public_key()) is None
    assert cms.verify_signer(sd, si, b"\x02" * 20, cert.public_key()) == "messageDigest does not match the signed content"
    other = make_chain("B").leaf.public_key()
    assert cms.verify_signer(sd, si, content, other) == "signature does not verify"


def test_ecdsa_signer_verifies():
    chain = make_chain("EC", leaf_kind="ec")
    blob = (pkcs7.PKCS7SignatureBuilder().set_data(b"abc")
            .add_signer(chain.leaf, chain.leaf_key, hashes.SHA256())
            .sign(serialization.Encoding.DER, [pkcs7.PKCS7Options.DetachedSignature]))
    sd = cms.parse_signed_data(blob)
    si = sd.signer_infos[0]
    assert cms.verify_signer(sd, si, b"abc", chain.leaf.public_key()) is None
    assert cms.verify_signer(sd, si, b"abd", chain.leaf.public_key()) is not None


def test_certificate_order_rule():
    short, long_a, long_b = b"\x30\x03abc", b"\x30\x04abcd", b"\x30\x04abcc"
    assert cms.apple_certificate_order([long_a, short, long_b]) == [short, long_b, long_a]


@pytest.mark.parametrize("blob", [b"", b"\x30\x00", b"\x30\x03\x06\x01\x00", der.seq(der.oid(cms.OID_DATA)),
                                  der.seq(der.oid(cms.OID_SIGNED_DATA), der.explicit(0, der.seq(der.integer(1))))])
def test_malformed_is_format_error(blob):
    with pytest.raises(FormatError):
        cms.parse_signed_data(blob)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_damaged_apple_blob_never_crashes(data):
    blob = bytearray(fixture_parts()["cms"][:8428])
    pos = data.draw(st.integers(0, len(blob) - 1))
    blob[pos] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(1, len(blob)))
    try:
        sd = cms.parse_signed_data(bytes(blob[:cut]))
    except FormatError:
        return
    for si in sd.signer_infos:
        cert = cms.signer_certificate(sd, si)
        if cert is not None:
            result = cms.verify_signer(sd, si, b"x" * 20, cert.public_key())
            assert result is None or isinstance(result, str)
