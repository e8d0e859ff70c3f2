"""The SCEP exchange against the real scepserver: caps, CA certificate, PKCSReq by POST and by
GET, its CertRep (SHA-1 signed, DES-encrypted) verified and opened, FAILURE in words, replies
that must be refused, and transport failures as one line each."""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from builder.enroll import scep, transport
from builder.formats.pkg import cms
from builder.errors import EnrollError
from tests.enroll.conftest import CHALLENGE

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def requester(hostname: str) -> scep.Requester:
    return scep.new_requester(KEY, scep.subject_name(hostname, [("O", "ACME Corp")]))


def test_connect_reads_caps_and_pins_the_ca(scep_server):
    client = transport.Client(scep_server.url, timeout=5)
    server = client.connect(scep_server.fingerprint)
    assert {"postpkioperation", "aes", "sha-256"} <= server.caps
    assert server.post and server.cipher == "aes128" and server.digest == "sha256"
    assert server.roles.encryption == server.roles.signing == server.roles.issuer == scep_server.ca
    assert scep_server.operations() == ["GetCACaps", "GetCACert"]
    with pytest.raises(EnrollError, match="no certificate from GetCACert matches"):
        client.connect("ab" * 32)


@pytest.mark.parametrize("post,aes", [(True, True), (False, True), (True, False)])
def test_enrol_by_post_and_by_get_with_aes_or_3des(scep_server, post, aes):
    """Caps decide: without POSTPKIOperation the message goes base64 in the URL; without AES
    (NDES lists only DES3) the envelope is 3DES."""
    client = transport.Client(scep_server.url, timeout=5)
    server = client.connect(scep_server.fingerprint)
    drop = set()  # SCEPStandard implies both POSTPKIOperation and AES
    if not post:
        drop |= {"postpkioperation", "scepstandard"}
    if not aes:
        drop |= {"aes", "scepstandard"}
    server = dataclasses.replace(server, caps=server.caps - drop)
    assert server.post is post and server.cipher == ("aes128" if aes else "des3")
    hostname = f"mac-{'post' if post else 'get'}-{'aes' if aes else 'des3'}"
    req = requester(hostname)
    reply = transport.enroll(client, server, req, scep.build_csr(req, hostname, CHALLENGE.encode()))
    assert reply.status == scep.SUCCESS
    cert = reply.issued_for(KEY)
    cert.verify_directly_issued_by(scep_server.ca)
    assert scep_server.pki_requests() == ["PKCSReq (19)"]
    assert scep_server.issued() == [f"/O=ACME Corp/CN={hostname}"]


def test_wrong_challenge_is_failure_badrequest(scep_server):
    client = transport.Client(scep_server.url, timeout=5)
    server = client.connect(scep_server.fingerprint)
    req = requester("mac-wrong")
    reply = transport.enroll(client, server, req, scep.build_csr(req, "mac-wrong", b"not-it"))
    assert reply.status == scep.FAILURE and reply.fail_info == "2"
    assert reply.reason.startswith("badRequest (a wrong or already used challenge password")
    assert scep_server.issued() == []


def test_replies_that_do_not_answer_this_request_are_refused(scep_server):
    client = transport.Client(scep_server.url, timeout=5)
    server = client.connect(scep_server.fingerprint)
    req = requester("mac-replay")
    request = scep.pkcs_req(req, scep.build_csr(req, "mac-replay", CHALLENGE.encode()),
                            server.roles.encryption)
    data = client.pki_operation(request.message, post=True)
    assert scep.read_reply(data, request, req, server.roles.trusted).status == scep.SUCCESS
    other_nonce = dataclasses.replace(request, sender_nonce=b"\x00" * 16)
    with pytest.raises(EnrollError, match="does not echo this request's nonce"):
        scep.read_reply(data, other_nonce, req, server.roles.trusted)
    other_tx = dataclasses.replace(request, transaction_id="0" * 64)
    with pytest.raises(EnrollError, match="another transaction"):
        scep.read_reply(data, other_tx, req, server.roles.trusted)
    stranger = requester("stranger").certificate  # not what GetCACert returned
    with pytest.raises(EnrollError, match="GetCACert did not vouch for"):
        scep.read_reply(data, request, req, [stranger])
    # one bit of the signed envelope (the certificates beside it are unsigned, and unused)
    envelope = cms.parse_signed_data(data).content
    tampered = bytearray(data)
    tampered[data.index(envelope) + len(envelope) // 2] ^= 0x01
    with pytest.raises(EnrollError):
        scep.read_reply(bytes(tampered), request, req, server.roles.trusted)


def test_unreachable_server_is_one_line():
    with socket.socket() as s:  # a port nobody listens on: bind one and close it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = transport.Client(f"http://127.0.0.1:{port}/scep", timeout=2)
    with pytest.raises(EnrollError) as info:
        client.get_ca_caps()
    text = str(info.value)
    assert text.startswith(f"GetCACaps http://127.0.0.1:{port}/scep: cannot reach the server (")
    assert "\n" not in text


def test_silent_server_times_out():
    with socket.socket() as listener:  # accepts connections, never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        client = transport.Client(f"http://127.0.0.1:{port}/scep", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(EnrollError, match=r"no answer within 0.5 s|timed out"):
            client.get_ca_caps()
        assert time.monotonic() - started < 5


def test_wrong_path_is_http_error(scep_server):
    client = transport.Client(scep_server.url.replace("/scep", "/nope"), timeout=5)
    with pytest.raises(EnrollError, match="answered HTTP 404"):
        client.get_ca_cert()


def test_poll_schedule_is_bounded():
    delays = list(transport.poll_delays())
    assert delays[:4] == [5.0, 10.0, 20.0, 40.0] and max(delays) == 60.0
    assert sum(delays) == 300.0
    assert list(transport.poll_delays(first=1, factor=3, cap=5, max_wait=12)) == [1, 3, 5, 3]


@pytest.fixture
def tls_server(tmp_path):
    """`openssl s_server -WWW` on 127.0.0.1 with a certificate from its own test CA, serving a
    GetCACaps answer as a file (s_server maps the whole request path, query included, to a file)."""
    from cryptography import x509

    from tests.conftest import require_tool
    from tests.enroll.conftest import free_port

    openssl = require_tool("openssl")
    run = lambda *a: subprocess.run([openssl, *a], cwd=tmp_path, check=True, capture_output=True, timeout=60)  # noqa: E731
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=TLS Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign")
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
        "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial", "7",
        "-days", "2", "-extfile", "ext", "-out", "srv.pem")
    www = tmp_path / "www"
    www.mkdir()
    (www / "scep?operation=GetCACaps").write_text("POSTPKIOperation\nAES\nSHA-256\n")
    port = free_port()
    proc = subprocess.Popen([openssl, "s_server", "-quiet", "-accept", f"127.0.0.1:{port}", "-cert",
                             str(tmp_path / "srv.pem"), "-key", str(tmp_path / "srv.key"), "-WWW"],
                            cwd=www, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "openssl s_server did not start"
            time.sleep(0.05)
    yield f"https://127.0.0.1:{port}/scep", x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes())
    proc.terminate()
    proc.wait(timeout=10)


def test_https_is_verified_against_system_and_trust_roots(tls_server):
    url, ca = tls_server
    with pytest.raises(EnrollError, match="CERTIFICATE_VERIFY_FAILED"):
        transport.Client(url, timeout=5).get_ca_caps()  # the test CA is in no system store
    caps = transport.Client(url, timeout=5, tls_cas=[ca]).get_ca_caps()  # [trust] certificates
    assert caps == {"postpkioperation", "aes", "sha-256"}
