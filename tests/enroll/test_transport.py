"""The SCEP exchange against the real scepserver: caps, CA certificate, PKCSReq by POST and by
GET, its CertRep (SHA-1 signed, DES-encrypted) verified and opened, FAILURE in words, replies
that must be refused, and transport failures as one line each."""

from __future__ import annotations

import dataclasses
import socket
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
