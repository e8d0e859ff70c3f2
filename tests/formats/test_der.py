"""The DER reader against certificates made by `cryptography`, and under random input."""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings, strategies as st

from builder.formats import der
from builder.errors import FormatError


@pytest.fixture(scope="module")
def cert_der() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "der-test")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(0x1234567890)
        .not_valid_before(datetime.datetime(2020, 1, 1))
        .not_valid_after(datetime.datetime(2030, 1, 1))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_reads_certificate_fields(cert_der):
    cert = der.parse(cert_der)
    tbs = cert.child(0)
    assert tbs.child(1).as_int() == 0x1234567890
    assert cert.child(1).child(0).as_oid() == "1.2.840.10045.4.3.2"  # ecdsa-with-SHA256
    assert cert.raw == cert_der


def test_writer_matches_cryptography_encoding(cert_der):
    cert = der.parse(cert_der)
    assert der.oid("1.2.840.10045.4.3.2") == cert.child(1).child(0).raw
    assert der.integer(0x1234567890) == cert.child(0).child(1).raw
    rebuilt = der.seq(*(child.raw for child in cert.children()))
    assert rebuilt == cert_der


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 256, -1, -128, -129, 2**64, -(2**70)])
def test_integer_round_trip(value):
    assert der.parse(der.integer(value)).as_int() == value


def test_ber_indefinite_and_constructed_octets():
    blob = bytes.fromhex("3080" "040141" "2480" "040142" "040143" "0000" "0000")
    node = der.parse(blob)
    first, second = node.children()
    assert first.as_octets() == b"A"
    assert second.as_octets() == b"BC"


def test_trailing_zero_padding_only_when_allowed():
    blob = der.seq(der.null()) + b"\0" * 16
    assert der.parse(blob, allow_trailing=True).tag == der.SEQUENCE
    with pytest.raises(FormatError):
        der.parse(blob)
    with pytest.raises(FormatError):
        der.parse(der.seq(der.null()) + b"\0\1", allow_trailing=True)


@pytest.mark.parametrize("bad", [b"", b"\x30", b"\x30\x05\x01", b"\x30\x84\xff\xff\xff\xff",
                                 b"\x30\x80\x04\x01\x41", b"\x1f\x01\x00", b"\x04\x80\x00\x00"])
def test_malformed_is_format_error(bad):
    with pytest.raises(FormatError):
        der.parse(bad)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_mutations_only_raise_format_error(cert_der, data):
    blob = bytearray(cert_der)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        blob[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    try:
        node = der.parse(bytes(blob[:cut]))
        for child in node.children() if node.constructed else []:
            if child.tag == der.OID:
                child.as_oid()
    except FormatError:
        pass
