"""SCEP message code (builder/enroll/scep.py) checked by independent readers: the PKCSReq and
CertPoll we write are verified, decrypted and printed by `openssl cms`/`openssl req`; envelopes
openssl encrypts (AES, 3DES, DES) are opened by ours; GetCACert sets are made by `openssl
crl2pkcs7` with NDES-like RA certificates. Replies from a real server are in test_transport.py."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from builder.enroll import scep
from builder.errors import EnrollError
from tests.conftest import require_tool

NOW = dt.datetime.now(dt.timezone.utc)
CHALLENGE = b"Chall3nge-distinctive-0042"
_KEYS: list[rsa.RSAPrivateKey] = []


def rsa_key(i: int = 0) -> rsa.RSAPrivateKey:
    while len(_KEYS) <= i:
        _KEYS.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _KEYS[i]


def make_cert(name: str, key, issuer_name: str | None = None, issuer_key=None, *, ca: bool = False,
              usage: dict | None = None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name or name)])
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(NOW - dt.timedelta(days=1)).not_valid_after(NOW + dt.timedelta(days=30)))
    if ca:
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    if usage is not None:
        flags = dict(digital_signature=False, content_commitment=False, key_encipherment=False,
                     data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                     encipher_only=False, decipher_only=False)
        flags.update(usage)
        b = b.add_extension(x509.KeyUsage(**flags), critical=True)
    return b.sign(issuer_key or key, hashes.SHA256())


def pem(path: Path, *objs) -> Path:
    out = b""
    for o in objs:
        if isinstance(o, x509.Certificate):
            out += o.public_bytes(serialization.Encoding.PEM)
        else:
            out += o.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption())
    path.write_bytes(out)
    return path


def openssl(*args: str, input: bytes | None = None) -> bytes:
    r = subprocess.run([require_tool("openssl"), *args], input=input, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.fixture(scope="module")
def ca():
    key = rsa_key(1)
    return key, make_cert("Test SCEP CA", key, ca=True, usage={})


@pytest.fixture
def requester():
    return scep.new_requester(rsa_key(0), scep.subject_name("Mac-01.acme.local", [("O", "ACME Corp"), ("OU", "Macs")]))


@pytest.mark.parametrize("cipher,printed_oid", [("aes128", "aes-128-cbc"), ("des3", "des-ede3-cbc")])
def test_pkcsreq_verifies_and_decrypts_with_openssl(tmp_path, ca, requester, cipher, printed_oid):
    ca_key, ca_cert = ca
    csr = scep.build_csr(requester, "Mac-01.acme.local", scep_secret())
    request = scep.pkcs_req(requester, csr, ca_cert, cipher=cipher)
    msg = tmp_path / "req.der"
    msg.write_bytes(request.message)
    # the signature over the signed attributes, with the embedded self-signed certificate
    enveloped = openssl("cms", "-verify", "-noverify", "-binary", "-inform", "DER", "-in", str(msg))
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(msg)).decode()
    assert "2.16.840.1.113733.1.9.2" in printed  # messageType ...
    assert "PRINTABLESTRING:19" in printed.replace(" ", "")  # ... PKCSReq
    assert request.transaction_id in printed
    assert request.transaction_id == scep.transaction_id(requester.key.public_key())
    dump = openssl("asn1parse", "-inform", "DER", "-in", str(msg)).decode()
    assert len(request.sender_nonce) == 16
    assert f"[HEX DUMP]:{request.sender_nonce.hex().upper()}" in dump  # senderNonce
    # the envelope opens with the CA's key and holds our CSR with the challenge
    env = tmp_path / "env.der"
    env.write_bytes(enveloped)
    assert printed_oid in openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(env)).decode()
    inner = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(env),
                    "-recip", str(pem(tmp_path / "ca.pem", ca_cert)),
                    "-inkey", str(pem(tmp_path / "ca.key", ca_key)))
    assert inner == csr
    text = openssl("req", "-inform", "DER", "-noout", "-text", "-verify", input=inner).decode()
    assert "CN=Mac-01.acme.local" in text.replace(" ", "") and "O=ACMECorp" in text.replace(" ", "")
    assert "DNS:Mac-01.acme.local" in text
    assert "Digital Signature, Key Encipherment" in text and "TLS Web Client Authentication" in text
    assert CHALLENGE.decode() in text  # openssl shows the challengePassword attribute
    parsed = x509.load_der_x509_csr(inner)
    assert parsed.is_signature_valid
    assert parsed.public_key() == requester.key.public_key()


def scep_secret():
    from builder.fleet.passwords import Secret
    return Secret(CHALLENGE)


def test_challenge_string_type(requester):
    printable = x509.load_der_x509_csr(scep.build_csr(requester, "h", b"ABCdef123-+"))
    utf8 = x509.load_der_x509_csr(scep.build_csr(requester, "h", "p\u00e4ss_w*rd".encode()))
    from cryptography.x509.oid import AttributeOID

    assert printable.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)._type == 19
    assert utf8.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD)._type == 12
    no_challenge = x509.load_der_x509_csr(scep.build_csr(requester, "h", None))
    assert len(list(no_challenge.attributes)) == 1  # only the extension request (SAN)


def test_certpoll_names_issuer_and_subject(tmp_path, ca, requester):
    ca_key, ca_cert = ca
    request = scep.cert_poll(requester, ca_cert, ca_cert)
    msg = tmp_path / "poll.der"
    msg.write_bytes(request.message)
    env = tmp_path / "env.der"
    env.write_bytes(openssl("cms", "-verify", "-noverify", "-binary", "-inform", "DER", "-in", str(msg)))
    printed = openssl("cms", "-cmsout", "-print", "-inform", "DER", "-in", str(msg)).decode()
    assert "PRINTABLESTRING:20" in printed.replace(" ", "")
    body = openssl("cms", "-decrypt", "-binary", "-inform", "DER", "-in", str(env),
                   "-recip", str(pem(tmp_path / "ca.pem", ca_cert)),
                   "-inkey", str(pem(tmp_path / "ca.key", ca_key)))
    dump = openssl("asn1parse", "-inform", "DER", input=body).decode()
    assert "Test SCEP CA" in dump and "Mac-01.acme.local" in dump
    assert request.transaction_id == requester.transaction_id


@pytest.mark.parametrize("cipher", ["aes128", "aes256", "des3", "des"])
def test_decrypt_envelope_from_openssl(tmp_path, requester, cipher):
    """AES through pkcs7_decrypt_der, 3DES and DES through our own path (scepserver replies
    in DES-CBC, which OpenSSL 3 keeps in its legacy provider)."""
    content = b"\x30\x03\x02\x01\x07 degenerate stand-in"
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    legacy = ["-provider", "legacy", "-provider", "default"] if cipher == "des" else []
    env = openssl("cms", "-encrypt", "-binary", f"-{cipher}", *legacy, "-in", str(src),
                  "-outform", "DER", str(pem(tmp_path / "r.pem", requester.certificate)))
    assert scep.decrypt_envelope(env, requester.certificate, requester.key) == content
    other = scep.new_requester(rsa_key(2), scep.subject_name("other"))
    with pytest.raises(Exception) as info:  # FormatError or ValueError-derived: never plain bytes
        scep.decrypt_envelope(env, other.certificate, other.key)
    assert "not encrypted to this" in str(info.value) or "decrypt" in str(info.value)


def test_fail_info_words():
    assert scep.fail_info_words("2").startswith("badRequest (a wrong or already used challenge password")
    assert scep.fail_info_words("0").startswith("badAlg (the CA does not accept")
    assert scep.fail_info_words("1").startswith("badMessageCheck (")
    assert scep.fail_info_words("3").startswith("badTime (")
    assert scep.fail_info_words("4").startswith("badCertId (")
    assert "not defined" in scep.fail_info_words("9")
    assert scep.fail_info_words(None) == "no failInfo given"
    assert scep.fail_info_words("2", "Password\nexpired").endswith("; the CA says: Password expired")


# -- GetCACert: NDES-shaped sets made by openssl crl2pkcs7 ----------------------------------

@pytest.fixture(scope="module")
def ndes(tmp_path_factory):
    """A CA and NDES's two RA certificates: 'CEP Encryption' (keyEncipherment) and 'Exchange
    Enrollment Agent' (digitalSignature), plus a stranger's RA signed by another CA."""
    ca_key = rsa_key(1)
    ca = make_cert("Test SCEP CA", ca_key, ca=True, usage={})
    enc = make_cert("NDES-CEP-Encryption", rsa_key(3), "Test SCEP CA", ca_key,
                    usage={"key_encipherment": True})
    sig = make_cert("NDES-Enrollment-Agent", rsa_key(4), "Test SCEP CA", ca_key,
                    usage={"digital_signature": True})
    evil_ca_key = rsa_key(5)
    evil = make_cert("Evil-Encryption", rsa_key(6), "Test SCEP CA", evil_ca_key,
                     usage={"key_encipherment": True})
    return ca, enc, sig, evil


def degenerate(tmp_path: Path, *certs: x509.Certificate) -> bytes:
    bundle = pem(tmp_path / "bundle.pem", *certs)
    return openssl("crl2pkcs7", "-nocrl", "-certfile", str(bundle), "-outform", "DER")


def test_get_ca_cert_single_der_and_pkcs7(tmp_path, ndes):
    ca, enc, sig, _ = ndes
    assert scep.parse_ca_certificates(ca.public_bytes(serialization.Encoding.DER)) == [ca]
    assert scep.parse_ca_certificates(degenerate(tmp_path, ca, enc, sig)) == [ca, enc, sig]
    with pytest.raises(EnrollError, match="did not return a certificate"):
        scep.parse_ca_certificates(b"<html>IIS welcome</html>")


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_ndes_roles_by_key_usage(tmp_path, ndes, order):
    ca, enc, sig, _ = ndes
    certs = scep.parse_ca_certificates(degenerate(tmp_path, *[(ca, enc, sig)[i] for i in order]))
    for pin in (scep.fingerprint(ca), scep.fingerprint(enc), scep.fingerprint(sig), None):
        roles = scep.select_roles(certs, pin)
        assert roles.encryption == enc and roles.signing == sig, pin
        assert roles.issuer == ca and roles.chain == (ca,) and roles.has_ra


def test_ca_alone_takes_both_roles(ndes):
    ca = ndes[0]
    roles = scep.select_roles([ca], scep.fingerprint(ca))
    assert roles.encryption == roles.signing == roles.issuer == ca and not roles.has_ra


def test_pin_mismatch_names_what_the_server_sent(ndes):
    ca, enc, sig, _ = ndes
    wrong = "00" * 32
    with pytest.raises(EnrollError) as info:
        scep.select_roles([ca, enc, sig], wrong)
    text = str(info.value)
    assert wrong in text and scep.fingerprint(ca) in text and "CN=Test SCEP CA" in text


def test_unvouched_ra_is_never_chosen(ndes):
    """An RA certificate not signed by the pinned CA (an attacker's, slipped into the set) is
    dropped: the envelope must not be encrypted to it."""
    ca, enc, sig, evil = ndes
    roles = scep.select_roles([ca, evil, enc, sig], scep.fingerprint(ca))
    assert roles.encryption == enc and evil not in roles.trusted
    roles = scep.select_roles([ca, evil, sig], scep.fingerprint(ca))
    assert roles.encryption == sig  # the only vouched RA takes both roles
    with pytest.raises(EnrollError):
        scep.select_roles([ca, enc], scep.fingerprint(evil))


def test_requester_certificate_is_self_signed_for_the_subject(requester):
    cert = requester.certificate
    assert cert.subject == cert.issuer == requester.subject
    cert.verify_directly_issued_by(cert)
    assert requester.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Mac-01.acme.local"
    assert "key=" not in repr(requester)
