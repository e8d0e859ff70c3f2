"""RFC 3161 timestamps for package signatures (optional: needs a reachable TSA).

productsign asks Apple's TSA to timestamp the SignerInfo signature value and stores the token as
the unsigned attribute id-aa-timeStampToken, so the package stays valid after the signing
certificate expires. fleetpkg does the same when given `--timestamp-url`; CI machines here are
offline, so it is off by default and tested against a local TSA built on `openssl ts`.
"""

from __future__ import annotations

import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone


from .. import der
from ...errors import FormatError, SigningError
from . import cms

TIMEOUT_SECONDS = 30
MAX_RESPONSE = 1 << 20


def build_request(data: bytes, *, digest_oid: str = cms.OID_SHA256, nonce: int | None = None) -> bytes:
    """TimeStampReq v1 over `data` (the signature value), asking for the TSA certificate."""
    fields = [
        der.integer(1),
        der.seq(cms.algorithm(digest_oid), der.octets(cms.digest(digest_oid, data))),
    ]
    if nonce is not None:
        fields.append(der.integer(nonce))
    fields.append(der.tlv(der.BOOLEAN, b"\xff"))  # certReq: the token must carry the TSA cert
    return der.seq(*fields)


def parse_response(body: bytes, *, where: str = "timestamp response") -> bytes:
    """The TimeStampToken (a ContentInfo) from a TimeStampResp, or SigningError with the status."""
    try:
        resp = der.parse(body).expect(der.SEQUENCE, "TimeStampResp").children()
        status_info = resp[0].expect(der.SEQUENCE, "PKIStatusInfo").children()
        status = status_info[0].as_int()
    except (FormatError, IndexError):
        raise SigningError("not an RFC 3161 TimeStampResp", where=where) from None
    if status not in (0, 1):
        text = ""
        if len(status_info) > 1 and status_info[1].tag == der.SEQUENCE:
            text = "; ".join(s.as_string() for s in status_info[1].children())
        raise SigningError(f"timestamp authority refused the request (status {status}{': ' + text if text else ''})",
                           where=where)
    if len(resp) < 2:
        raise SigningError("timestamp response holds no token", where=where)
    return resp[1].raw


@dataclass(frozen=True)
class TimestampCheck:
    gen_time: datetime | None
    tsa_subject: str | None
    problem: str | None  # None when the token is valid for this signature


def _generalized_time(node: der.Node) -> datetime:
    node.expect(der.GENERALIZED_TIME, "genTime")
    text = node.value.decode("ascii", errors="replace").rstrip("Z")
    base = text.split(".")[0]
    try:
        return datetime.strptime(base, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        raise FormatError(f"timestamp genTime {text!r} is malformed") from None


def check_token(token: bytes, signature_value: bytes) -> TimestampCheck:
    """Verify a token: its own CMS signature (signed attributes), and that its message imprint is
    the digest of `signature_value`. Trust in the TSA's chain is reported, not decided, here."""
    try:
        sd = cms.parse_signed_data(token)
        if sd.content_type != cms.OID_TST_INFO or sd.content is None:
            return TimestampCheck(None, None, "timestamp token does not hold a TSTInfo")
        info = der.parse(sd.content).expect(der.SEQUENCE, "TSTInfo").children()
        imprint = info[2].expect(der.SEQUENCE, "messageImprint").children()
        imprint_alg = imprint[0].child(0).as_oid()
        imprint_value = imprint[1].as_octets()
        gen_time = _generalized_time(info[4])
    except (FormatError, IndexError):
        return TimestampCheck(None, None, "timestamp token is malformed")
    if not sd.signer_infos:
        return TimestampCheck(gen_time, None, "timestamp token has no signer")
    si = sd.signer_infos[0]
    cert = cms.signer_certificate(sd, si)
    if cert is None:
        return TimestampCheck(gen_time, None, "timestamp token does not carry the TSA certificate")
    subject = cert.subject.rfc4514_string()
    try:
        expected = cms.digest(imprint_alg, signature_value)
    except FormatError as exc:
        return TimestampCheck(gen_time, subject, f"timestamp {exc.message}")
    if imprint_value != expected:
        return TimestampCheck(gen_time, subject, "timestamp is for a different signature")
    why = cms.verify_signer(sd, si, sd.content, cert.public_key())
    if why is not None:
        return TimestampCheck(gen_time, subject, f"timestamp token {why}")
    if not (cert.not_valid_before_utc <= gen_time <= cert.not_valid_after_utc):
        return TimestampCheck(gen_time, subject, "timestamp time is outside the TSA certificate's validity")
    return TimestampCheck(gen_time, subject, None)


def token_attribute(token: bytes) -> bytes:
    """The unsigned attribute productsign stores the token in."""
    return cms.attribute(cms.OID_TIMESTAMP_TOKEN, token)


def request_timestamp(url: str, signature_value: bytes, *, digest_oid: str = cms.OID_SHA256,
                      timeout: float = TIMEOUT_SECONDS) -> bytes:
    """POST a TimeStampReq to `url` and return the checked token."""
    if not url.startswith(("http://", "https://")):
        raise SigningError("timestamp URL must be http:// or https://", where=url)
    nonce = secrets.randbits(63)
    req = urllib.request.Request(
        url, data=build_request(signature_value, digest_oid=digest_oid, nonce=nonce),
        headers={"Content-Type": "application/timestamp-query", "Accept": "application/timestamp-reply"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
            body = resp.read(MAX_RESPONSE + 1)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SigningError(f"timestamp authority unreachable: {reason}", where=url,
                           hint="check the network or drop --timestamp-url") from None
    if len(body) > MAX_RESPONSE:
        raise SigningError("timestamp response is too large", where=url)
    token = parse_response(body, where=url)
    check = check_token(token, signature_value)
    if check.problem is not None:
        raise SigningError(check.problem, where=url)
    if _token_nonce(token) not in (None, nonce):
        raise SigningError("timestamp response nonce does not match the request", where=url)
    return token


def _token_nonce(token: bytes) -> int | None:
    sd = cms.parse_signed_data(token)
    for node in der.parse(sd.content or b"0\x00").children()[5:]:
        if node.tag == der.INTEGER:
            return node.as_int()
    return None
