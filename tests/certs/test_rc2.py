"""RC2 against RFC 2268's test vectors and against `cryptography`'s (128-bit only) RC2."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import RC2
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from builder.certs import rc2
from tests.certs.vectors import VECTORS

# RFC 2268 section 5: (key, effective key bits, plaintext, ciphertext)
RFC2268 = [
    ("0000000000000000", 63, "0000000000000000", "ebb773f993278eff"),
    ("ffffffffffffffff", 64, "ffffffffffffffff", "278b27e42e2f0d49"),
    ("3000000000000000", 64, "1000000000000001", "30649edf9be7d2c2"),
    ("88", 64, "0000000000000000", "61a8a244adacccf0"),
    ("88bca90e90875a", 64, "0000000000000000", "6ccf4308974c267f"),
    ("88bca90e90875a7f0f79c384627bafb2", 64, "0000000000000000", "1a807d272bbe5db1"),
    ("88bca90e90875a7f0f79c384627bafb2", 128, "0000000000000000", "2269552ab0f85ca6"),
    ("88bca90e90875a7f0f79c384627bafb216f80a6f85920584c42fceb0be255daf1e", 129,
     "0000000000000000", "5b78d3a43dfff1f1"),
]


def test_pitable_is_a_permutation():
    assert sorted(rc2.PITABLE) == list(range(256))


@pytest.mark.parametrize("key,bits,plain,cipher", RFC2268)
def test_rfc2268_vectors(key, bits, plain, cipher):
    k = rc2.expand_key(bytes.fromhex(key), bits)
    assert rc2.encrypt_block(k, bytes.fromhex(plain)).hex() == cipher
    assert rc2.decrypt_block(k, bytes.fromhex(cipher)).hex() == plain
    # the inlined CBC loop with a zero IV is ECB for one block
    assert rc2.cbc_decrypt(bytes.fromhex(key), bits, bytes(8), bytes.fromhex(cipher)).hex() == plain


def test_cryptography_vectors_rc2_cbc_file():
    text = (VECTORS / "ciphers" / "RC2" / "rc2-cbc.txt").read_text()
    fields = dict(line.split(" = ") for line in text.splitlines() if " = " in line)
    plain = rc2.cbc_decrypt(bytes.fromhex(fields["Key"]), 128, bytes.fromhex(fields["IV"]),
                            bytes.fromhex(fields["Ciphertext"]))
    assert plain.hex() == fields["Plaintext"]


def test_matches_cryptography_rc2_128_on_random_data():
    for _ in range(5):
        key, iv, data = os.urandom(16), os.urandom(8), os.urandom(8 * 37)
        enc = Cipher(RC2(key), modes.CBC(iv)).encryptor()
        ciphertext = enc.update(data) + enc.finalize()
        assert rc2.cbc_decrypt(key, 128, iv, ciphertext) == data
        assert rc2.cbc_encrypt(key, 128, iv, data) == ciphertext


def test_rc2_40_round_trip_and_errors():
    key, iv, data = os.urandom(5), os.urandom(8), os.urandom(64)
    assert rc2.cbc_decrypt(key, 40, iv, rc2.cbc_encrypt(key, 40, iv, data)) == data
    with pytest.raises(ValueError):
        rc2.cbc_decrypt(key, 40, iv, data[:7])
    with pytest.raises(ValueError):
        rc2.expand_key(b"", 40)
