"""RFC 3161 timestamps: our request as openssl reads it, a full signing round trip against a
local TSA run by `openssl ts -reply` on 127.0.0.1 (never the network), and refusals."""

from __future__ import annotations

import http.server
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from builder.formats import der
from builder.errors import SigningError
from builder.formats.pkg import cms, timestamp
from builder.formats.pkg.signing import sign_package
from builder.formats.pkg.verify import verify_package_signature
from builder.certs.signing_identity import SigningIdentity
from tests.conftest import FIXTURES, require_tool
from tests.formats.pkg.identity_factory import NOW, make_chain
from tests.formats.pkg.sigparts import signature_parts

TSA_CONFIG = """
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = $dir/serial
crypto_device = builtin
signer_cert = $dir/tsa.pem
certs = $dir/root.pem
signer_key = $dir/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
digests = sha1, sha256, sha384, sha512
accuracy = secs:1
ordering = yes
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def test_request_encoding_read_by_openssl(tmp_path: Path):
    openssl = require_tool("openssl")
    data = b"signature value" * 10
    req = timestamp.build_request(data, nonce=0x1234567890ABCDEF)
    (tmp_path / "req.tsq").write_bytes(req)
    text = subprocess.run([openssl, "ts", "-query", "-in", "req.tsq", "-text"], cwd=tmp_path,
                          capture_output=True, text=True, check=True).stdout
    assert "Hash Algorithm: sha256" in text
    assert "Nonce: 0x1234567890ABCDEF" in text
    assert "Certificate required: yes" in text
    import hashlib
    digest = hashlib.sha256(data).hexdigest()
    flat = "".join(line.split(" - ", 1)[1][:48].replace(" ", "").replace("-", "")
                   for line in text.splitlines() if " - " in line)
    assert digest in flat.lower()
    sha1 = timestamp.build_request(data, digest_oid=cms.OID_SHA1)
    (tmp_path / "req1.tsq").write_bytes(sha1)
    text1 = subprocess.run([openssl, "ts", "-query", "-in", "req1.tsq", "-text"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert "Hash Algorithm: sha1" in text1 and "Nonce: unspecified" in text1


def test_apple_token_checks_out():
    parts = signature_parts(FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg")
    si = cms.parse_signed_data(parts["cms"]).signer_infos[0]
    token = si.attribute_values(cms.OID_TIMESTAMP_TOKEN, signed=False)[0]
    check = timestamp.check_token(token, si.signature)
    assert check.problem is None and check.gen_time.isoformat() == "2020-10-30T11:04:08+00:00"
    assert "Timestamp Signer MA2" in check.tsa_subject
    assert timestamp.check_token(token, si.signature[:-1] + b"\x00").problem == \
        "timestamp is for a different signature"


class _TSA:
    """A TSA on 127.0.0.1: each POSTed request is answered by `openssl ts -reply`."""

    def __init__(self, work: Path, mode: str = "ok"):
        self.work, self.mode, self.requests = work, mode, []
        chain = make_chain("A")
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Timestamp Signer")]))
                .issuer_name(chain.root.subject).public_key(key.public_key()).serial_number(77)
                .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=3650))
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
                .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                               critical=True)
                .sign(chain.root_key, hashes.SHA256()))
        (work / "tsa.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (work / "tsa.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
        (work / "root.pem").write_bytes(chain.pem(chain.root))
        (work / "serial").write_text("01\n")
        (work / "tsa.cnf").write_text(TSA_CONFIG.format(dir=work))
        self.openssl = require_tool("openssl")
        tsa = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                tsa.requests.append((self.headers["Content-Type"], body))
                reply = tsa.answer(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/timestamp-reply")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/ts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, body: bytes) -> bytes:
        if self.mode == "garbage":
            return b"<html>proxy says no</html>"
        if self.mode == "refuse":
            return der.seq(der.seq(der.integer(2), der.seq(der.tlv(der.UTF8_STRING, b"bad request"))))
        (self.work / "req.tsq").write_bytes(body)
        subprocess.run([self.openssl, "ts", "-reply", "-config", "tsa.cnf", "-queryfile", "req.tsq",
                        "-out", "resp.tsr"], cwd=self.work, check=True, capture_output=True)
        return (self.work / "resp.tsr").read_bytes()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def tsa(tmp_path: Path):
    work = tmp_path / "tsa"
    work.mkdir()
    server = _TSA(work)
    yield server
    server.close()


def identity() -> SigningIdentity:
    c = make_chain("A")
    return SigningIdentity(c.leaf_key, c.leaf, (c.ca, c.root), ())


def test_signing_with_a_timestamp(tmp_path: Path, tsa: _TSA):
    out = tmp_path / "ts.pkg"
    sign_package(FIXTURES / "pkg" / "relic-dummy.pkg", out, identity(), timestamp_url=tsa.url)
    assert len(tsa.requests) == 1 and tsa.requests[0][0] == "application/timestamp-query"
    parts = signature_parts(out)
    si = cms.parse_signed_data(parts["cms"]).signer_infos[0]
    assert [o for o, _ in si.unsigned_attributes] == [cms.OID_TIMESTAMP_TOKEN]
    assert si.signed_attributes is None and si.signature == parts["rsa"]
    # openssl's own TS verifier accepts the stored token for our signature value
    token = si.attribute_values(cms.OID_TIMESTAMP_TOKEN, signed=False)[0]
    (tmp_path / "token.der").write_bytes(token)
    (tmp_path / "sig.bin").write_bytes(si.signature)
    r = subprocess.run([tsa.openssl, "ts", "-verify", "-token_in", "-in", "token.der", "-data", "sig.bin",
                        "-CAfile", str(tsa.work / "root.pem")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0 and "Verification: OK" in r.stdout, r.stdout + r.stderr
    root = make_chain("A").root
    report = verify_package_signature(out, [root])
    assert report.ok, report.problems
    assert report.timestamp["ok"] and "Test Timestamp Signer" in report.timestamp["tsa"]
    # after the leaf expires the timestamp keeps the package valid; expiry becomes a note
    later = make_chain("A").leaf.not_valid_after_utc + timedelta(days=30)
    aged = verify_package_signature(out, [root], now=later)
    assert aged.ok, aged.problems
    assert any("timestamped" in n for n in aged.notes)


@pytest.mark.parametrize("mode, message", [("garbage", "not an RFC 3161"), ("refuse", "status 2: bad request")])
def test_tsa_failures_are_named(tmp_path: Path, mode: str, message: str):
    work = tmp_path / "tsa"
    work.mkdir()
    server = _TSA(work, mode)
    try:
        with pytest.raises(SigningError, match=message) as exc:
            sign_package(FIXTURES / "pkg" / "relic-dummy.pkg", tmp_path / "o.pkg", identity(),
                         timestamp_url=server.url)
        assert server.url in str(exc.value)
    finally:
        server.close()
    assert not (tmp_path / "o.pkg").exists()


def test_unreachable_tsa_and_bad_scheme(tmp_path: Path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(SigningError, match="unreachable"):
        timestamp.request_timestamp(f"http://127.0.0.1:{port}/", b"x" * 256, timeout=5)
    with pytest.raises(SigningError, match="http"):
        timestamp.request_timestamp("file:///etc/passwd", b"x")
