"""Loading the signing identity: .p12 and PEM forms, and every refusal named with its file."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from builder.errors import SigningError
from builder.certs.signing_identity import load_signing_identity
from tests.formats.pkg.identity_factory import make_chain


def test_p12_with_chain_in_any_order(tmp_path: Path):
    chain = make_chain("A")
    p12 = chain.write_p12(tmp_path / "id.p12", b"s3cret")
    ident = load_signing_identity(p12, b"s3cret")
    assert ident.certificate == chain.leaf
    assert ident.chain == (chain.ca, chain.root)  # ordered leaf-upwards, root last
    assert ident.warnings == ()
    assert ident.key.key_size == 2048


def test_p12_wrong_or_missing_password(tmp_path: Path):
    p12 = make_chain("A").write_p12(tmp_path / "id.p12", b"s3cret")
    with pytest.raises(SigningError, match="wrong password") as exc:
        load_signing_identity(p12, b"nope")
    assert str(p12) in str(exc.value)
    with pytest.raises(SigningError, match="--password-env"):
        load_signing_identity(p12, None)


def test_p12_without_chain_warns(tmp_path: Path):
    p12 = make_chain("A").write_p12(tmp_path / "id.p12", b"pw", with_chain=False)
    ident = load_signing_identity(p12, b"pw")
    assert ident.chain == ()
    assert any("no issuer certificates" in w for w in ident.warnings)


def test_pem_files_with_encrypted_key(tmp_path: Path):
    chain = make_chain("A")
    files = chain.write_pem(tmp_path, key_password=b"kp")
    ident = load_signing_identity(None, b"kp", certificate=files["cert"], key=files["key"],
                                  chain=[files["root"], files["ca"]])
    assert ident.chain == (chain.ca, chain.root)
    with pytest.raises(SigningError, match="encrypted"):
        load_signing_identity(None, None, certificate=files["cert"], key=files["key"])
    with pytest.raises(SigningError, match="wrong password"):
        load_signing_identity(None, b"bad", certificate=files["cert"], key=files["key"])


def test_key_must_match_certificate(tmp_path: Path):
    (tmp_path / "b").mkdir()
    a, b = make_chain("A").write_pem(tmp_path), make_chain("B").write_pem(tmp_path / "b")
    with pytest.raises(SigningError, match="does not belong") as exc:
        load_signing_identity(None, None, certificate=a["cert"], key=b["key"])
    assert str(a["cert"]) in str(exc.value)


def test_codesign_eku_warns_and_server_eku_refused(tmp_path: Path):
    cs = make_chain("CS", eku="codesign").write_p12(tmp_path / "cs.p12", b"pw")
    ident = load_signing_identity(cs, b"pw")
    assert any("Gatekeeper will not trust it" in w for w in ident.warnings)
    server = make_chain("SV", eku="server").write_p12(tmp_path / "sv.p12", b"pw")
    with pytest.raises(SigningError, match="cannot sign installer packages"):
        load_signing_identity(server, b"pw")


def test_expired_certificate_names_file_and_date(tmp_path: Path):
    chain = make_chain("EX", expired=True)
    p12 = chain.write_p12(tmp_path / "old.p12", b"pw")
    with pytest.raises(SigningError) as exc:
        load_signing_identity(p12, b"pw")
    text = str(exc.value)
    assert str(p12) in text and f"expired on {chain.leaf.not_valid_after_utc:%Y-%m-%d}" in text
    # and "now" is injectable: the same identity was fine before it expired
    ok = load_signing_identity(p12, b"pw", now=chain.leaf.not_valid_after_utc - timedelta(days=1))
    assert ok.certificate == chain.leaf


def test_rsa_4096_ok_and_ec_refused(tmp_path: Path):
    big = make_chain("R4", leaf_bits=4096).write_p12(tmp_path / "big.p12", b"pw")
    assert load_signing_identity(big, b"pw").key.key_size == 4096
    ec_chain = make_chain("EC", leaf_kind="ec").write_p12(tmp_path / "ec.p12", b"pw")
    with pytest.raises(SigningError, match="not RSA"):
        load_signing_identity(ec_chain, b"pw")


def test_other_rsa_sizes_refused(tmp_path: Path):
    chain = make_chain("A")
    files = chain.write_pem(tmp_path)
    odd = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    files["key"].write_bytes(odd.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    with pytest.raises(SigningError, match="3072 bits"):
        load_signing_identity(None, None, certificate=files["cert"], key=files["key"])


def test_unreadable_and_garbage_files(tmp_path: Path):
    with pytest.raises(SigningError, match="cannot read"):
        load_signing_identity(tmp_path / "missing.p12", b"x")
    junk = tmp_path / "junk.pem"
    junk.write_bytes(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(SigningError, match="not a PEM or DER"):
        load_signing_identity(None, None, certificate=junk, key=junk)
    with pytest.raises(SigningError):
        load_signing_identity(None, None)
