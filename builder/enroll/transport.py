"""SCEP over HTTP (RFC 8894 section 4) with urllib: GetCACaps, GetCACert, PKIOperation, polling.

Every request has a timeout and a size limit; a refused connection, an HTTP error or a timeout
becomes one EnrollError line naming the operation and the URL (never the message: it carries the
encrypted challenge). PKIOperation goes by POST when the server offers POSTPKIOperation (or
SCEPStandard), else by GET with the base64 message in the query string. A PENDING answer is
polled with CertPoll on a bounded, growing schedule (`poll_delays`), so a CA that never decides
costs at most `max_wait` seconds per device.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import EnrollError
from . import scep

TIMEOUT = 30.0  # seconds, per HTTP request
MAX_BODY = 1 << 20  # replies are a few KiB; anything near this is not a SCEP server
CERTREP = "application/x-pki-message"


def poll_delays(first: float = 5.0, factor: float = 2.0, cap: float = 60.0,
                max_wait: float = 300.0) -> Iterator[float]:
    """Seconds to wait before each CertPoll: first, first*factor, ... capped at `cap`, until
    their sum would pass `max_wait` (5, 10, 20, 40, 60, 60, 60, 45 by default)."""
    waited, delay = 0.0, first
    while waited < max_wait:
        step = min(delay, cap, max_wait - waited)
        yield step
        waited += step
        delay *= factor


@dataclass(frozen=True)
class Server:
    """What a SCEP server offers, established once per run before any request is sent."""

    url: str
    caps: frozenset[str]  # casefolded GetCACaps keywords
    roles: scep.CaCertificates

    @property
    def post(self) -> bool:
        return bool({"postpkioperation", "scepstandard"} & self.caps)

    @property
    def digest(self) -> str:
        if "sha-512" in self.caps:
            return "sha512"
        if {"sha-256", "scepstandard"} & self.caps:
            return "sha256"
        return "sha1"  # RFC 8894 3.5.2: a server listing neither is a legacy one

    @property
    def cipher(self) -> str:
        """AES-128-CBC when offered; else 3DES, which RFC 8894 keeps for servers that predate
        AES (NDES lists POSTPKIOperation, Renewal, SHA-512, SHA-256, SHA-1 and DES3). Single
        DES is never used: RFC 8894 forbids it."""
        return "aes128" if {"aes", "scepstandard"} & self.caps else "des3"


class Client:
    """HTTP for one SCEP URL. `tls_cas` are extra roots for an https server (the fleet's [trust]
    certificates: NDES usually has a certificate from the enterprise CA)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT,
                 tls_cas: Sequence[x509.Certificate] = ()):
        self.url = url
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = []
        if url.lower().startswith("https:"):
            context = ssl.create_default_context()
            if tls_cas:
                context.load_verify_locations(cadata="".join(
                    c.public_bytes(serialization.Encoding.PEM).decode() for c in tls_cas))
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def _call(self, operation: str, *, query: dict[str, str] | None = None,
              body: bytes | None = None) -> tuple[bytes, str]:
        params = {"operation": operation, **(query or {})}
        sep = "&" if urllib.parse.urlsplit(self.url).query else "?"
        url = self.url + sep + urllib.parse.urlencode(params, quote_via=urllib.parse.quote)
        request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
        if body is not None:
            request.add_header("Content-Type", "application/octet-stream")
        where = f"{operation} {self.url}"
        try:
            with self._opener.open(request, timeout=self.timeout) as reply:
                data = reply.read(MAX_BODY + 1)
                kind = reply.headers.get_content_type()
        except urllib.error.HTTPError as exc:
            detail = exc.read(300).decode("utf-8", "replace").strip().splitlines()
            hint = f": {detail[0][:200]}" if detail else ""
            raise EnrollError(f"the server answered HTTP {exc.code} {exc.reason}{hint}",
                              where=where) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            text = getattr(reason, "strerror", None) or str(reason)
            raise EnrollError(f"cannot reach the server ({text})", where=where) from None
        except TimeoutError:
            raise EnrollError(f"no answer within {self.timeout:g} s", where=where) from None
        except OSError as exc:  # reset connections, TLS errors after connecting...
            raise EnrollError(f"connection failed ({exc.strerror or exc})", where=where) from None
        except http.client.HTTPException as exc:  # a truncated or garbled HTTP answer
            raise EnrollError(f"broken HTTP answer ({type(exc).__name__})", where=where) from None
        if len(data) > MAX_BODY:
            raise EnrollError(f"the answer is larger than {MAX_BODY} bytes", where=where)
        return data, kind

    def get_ca_caps(self) -> frozenset[str]:
        data, _ = self._call("GetCACaps")
        return frozenset(line.strip().casefold()
                         for line in data.decode("utf-8", "replace").splitlines() if line.strip())

    def get_ca_cert(self) -> list[x509.Certificate]:
        data, _ = self._call("GetCACert", query={"message": "fleetpkg"})
        try:
            return scep.parse_ca_certificates(data)
        except EnrollError as exc:
            raise EnrollError(exc.message, where=f"GetCACert {self.url}") from None

    def pki_operation(self, message: bytes, *, post: bool) -> bytes:
        if post:
            data, kind = self._call("PKIOperation", body=message)
        else:
            data, kind = self._call("PKIOperation",
                                    query={"message": base64.b64encode(message).decode("ascii")})
        if kind != CERTREP and not data.startswith(b"\x30"):
            raise EnrollError(f"the server answered {kind}, not a SCEP CertRep",
                              where=f"PKIOperation {self.url}")
        return data

    def connect(self, pin: str | None) -> Server:
        """GetCACaps + GetCACert, then the pin and role checks: the only requests sent before
        the CA is known to be the right one, and neither carries a key or a challenge."""
        caps = self.get_ca_caps()
        certs = self.get_ca_cert()
        try:
            roles = scep.select_roles(certs, pin)
        except EnrollError as exc:
            raise EnrollError(exc.message, where=f"GetCACert {self.url}", hint=exc.hint) from None
        server = Server(self.url, caps, roles)
        return server


def enroll(client: Client, server: Server, requester: scep.Requester, csr: bytes, *,
           delays: Callable[[], Iterator[float]] = poll_delays,
           sleep: Callable[[float], None] = time.sleep) -> scep.Reply:
    """PKCSReq, then CertPoll while the CA says PENDING, on the `delays` schedule. Returns the
    final SUCCESS or FAILURE reply; a CA still pending when the schedule ends is an EnrollError."""
    roles = server.roles
    request = scep.pkcs_req(requester, csr, roles.encryption, server.digest, server.cipher)
    reply = scep.read_reply(client.pki_operation(request.message, post=server.post), request,
                            requester, roles.trusted)
    polls = 0
    schedule = delays()
    while reply.status == scep.PENDING:
        delay = next(schedule, None)
        if delay is None:
            raise EnrollError(f"the CA still has the request pending after {polls} polls "
                              f"(transaction {requester.transaction_id})",
                              hint="approve it at the CA; the next run sends a new request")
        sleep(delay)
        polls += 1
        request = scep.cert_poll(requester, roles.issuer, roles.encryption, server.digest,
                                  server.cipher)
        reply = scep.read_reply(client.pki_operation(request.message, post=server.post), request,
                                requester, roles.trusted)
    return reply
