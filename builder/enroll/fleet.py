"""Enrolling a fleet: which devices need a certificate, the SCEP runs in parallel, the verdicts.

Three phases, so that nothing carrying a key or a challenge leaves before the CA is proven:
1. plan (local): each device's .pfx is opened and linted as `check` does; it is kept when it
   opens, has more than the renewal window left and fails no rule a new certificate would fix
   (RENEWABLE: private key, hostname, key strength, validity, self-signed). A finding only the
   CA's template can fix (TEMPLATE_FIXES) never triggers a new request, so a second run right
   away enrols nothing.
2. connect (only when something must be enrolled): GetCACaps, GetCACert, fingerprint pin.
3. enrol, `jobs` devices at a time: new key, CSR, PKCSReq (+ polling), the .pfx written
   atomically under the device's password, then read back and linted by the code `check` runs.
   One device's failure (a refused challenge, a server gone mid-run) is that device's outcome;
   the others go on.
"""

from __future__ import annotations

import difflib
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa

from ..artifacts.checking import DeviceResult, check_device, iso_utc
from ..certs import load_ca_files
from ..certs.chain import day, describe
from ..errors import ConfigError, FleetpkgError
from ..fleet.model import Device, Enroll, FleetConfig
from ..fleet.passwords import PasswordResolver, Secret
from . import scep, store, transport

ENROLLED, RENEWED, KEPT, FAILED = "enrolled", "renewed", "kept", "failed"
ACTIONS = (ENROLLED, RENEWED, KEPT, FAILED)
DEFAULT_JOBS = 4  # gentle on the CA: NDES serialises its work anyway

RENEWABLE = ("private-key", "subject-hostname", "key-strength", "validity", "self-signed")

# rule -> the CA-side setting that fixes it (AD CS / NDES wording; other CAs have the same knobs)
TEMPLATE_FIXES = {
    "key-usage": "in the certificate template NDES issues from (Extensions > Key Usage) select "
                 "Digital signature and 'Allow key exchange only with key encryption (key "
                 "encipherment)', with an RSA key (Cryptography tab)",
    "eku-client-auth": "in the certificate template (Extensions > Application Policies) add "
                       "Client Authentication",
    "crl-http": "on the issuing CA (Properties > Extensions > CRL Distribution Point) add an "
                "http:// location with 'Include in the CDP extension of issued certificates', "
                "restart the CA",
}


@dataclass(frozen=True)
class Outcome:
    hostname: str
    action: str  # one of ACTIONS
    reason: str
    not_after: datetime | None = None
    findings: tuple[Any, ...] = ()  # builder.certs.Finding, lint order

    @property
    def fails_rule(self) -> bool:
        return any(f.severity == "error" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname, "action": self.action, "reason": self.reason,
            "not_after": iso_utc(self.not_after) if self.not_after else None,
            "findings": [{"rule": f.rule, "severity": f.severity, "message": f.message}
                         for f in self.findings],
        }


@dataclass(frozen=True)
class TemplateFinding:
    rule: str
    hostnames: tuple[str, ...]
    fix: str


@dataclass(frozen=True)
class EnrollRun:
    fleet: str
    outcomes: tuple[Outcome, ...]  # inventory order
    dry_run: bool
    renew_within_days: int

    @property
    def summary(self) -> dict[str, int]:
        return {a: sum(1 for o in self.outcomes if o.action == a) for a in ACTIONS}

    @property
    def template(self) -> list[TemplateFinding]:
        """Findings the CA's template causes, once per rule for the whole run."""
        hit: dict[str, list[str]] = {}
        for o in self.outcomes:
            for f in o.findings:
                if f.rule in TEMPLATE_FIXES and o.hostname not in hit.setdefault(f.rule, []):
                    hit[f.rule].append(o.hostname)
        return [TemplateFinding(rule, tuple(hosts), TEMPLATE_FIXES[rule])
                for rule, hosts in hit.items()]

    @property
    def ok(self) -> bool:
        return not any(o.action == FAILED or o.fails_rule for o in self.outcomes)

    def to_json(self) -> dict[str, Any]:
        return {
            "fleet": self.fleet, "dry_run": self.dry_run,
            "renew_within_days": self.renew_within_days,
            "devices": [o.to_json() for o in self.outcomes],
            "summary": self.summary,
            "template": [{"rule": t.rule, "devices": list(t.hostnames), "fix": t.fix}
                         for t in self.template],
        }


@dataclass(frozen=True)
class _Step:
    """Phase 1's verdict on one device."""

    device: Device
    action: str  # KEPT, ENROLLED, RENEWED (what a successful request would make it) or FAILED
    reason: str
    current: DeviceResult | None = None


def select(devices: Sequence[Device], only: Sequence[str]) -> list[Device]:
    """The devices named by --only (case-insensitive, inventory order), or all of them."""
    if not only:
        return list(devices)
    wanted = {h.casefold(): h for h in only}
    known = {d.hostname.casefold() for d in devices}
    for folded, given in wanted.items():
        if folded not in known:
            close = difflib.get_close_matches(given, [d.hostname for d in devices], n=1)
            raise ConfigError(f"--only {given}: no such device in the inventory",
                              hint=f"did you mean {close[0]}?" if close else None)
    return [d for d in devices if d.hostname.casefold() in wanted]


def plan(device: Device, password: bytes, cas: Sequence[x509.Certificate], at: datetime,
         window: timedelta) -> _Step:
    """Keep, enrol (no .pfx) or renew (replace) one device, with the reason in words."""
    if not device.pfx.exists():
        return _Step(device, ENROLLED, "no .pfx yet")
    try:
        current = check_device(device, password, cas, at)
    except FleetpkgError as exc:
        return _Step(device, RENEWED, f"the .pfx cannot be used ({_short(exc, device)})")
    except OSError as exc:
        return _Step(device, RENEWED, f"the .pfx cannot be read ({exc.strerror or exc})")
    renewable = sorted({f.rule for f in current.errors if f.rule in RENEWABLE})
    if renewable:
        return _Step(device, RENEWED, f"the certificate fails {', '.join(renewable)}", current)
    end = current.not_after
    if end is not None and end - at <= window:
        return _Step(device, RENEWED, f"expires on {day(end)}, within the {window.days}-day "
                                      "renewal window", current)
    left = (end - at).days if end is not None else 0
    return _Step(device, KEPT, f"valid until {day(end) if end else '?'} ({left} days left)", current)


def _short(exc: FleetpkgError, device: Device) -> str:
    """The error without the device prefix the outcome row already shows."""
    text = str(exc)
    return text[len(device.where) + 2:] if text.startswith(device.where + ": ") else text


def enroll_fleet(config: FleetConfig, *, only: Sequence[str] = (), renew_within_days: int | None = None,
                 jobs: int = DEFAULT_JOBS, dry_run: bool = False, at: datetime | None = None,
                 progress: Callable[[int, int], None] | None = None,
                 timeout: float = transport.TIMEOUT) -> EnrollRun:
    """Run the three phases for the selected devices. Raises (exit 2) only when the run cannot
    start: no [enroll], an unset fleet-wide password or challenge, the CA unreachable or not
    the pinned one. Everything else is a device's outcome."""
    settings = config.enroll
    if settings is None:
        raise ConfigError("has no [enroll] table", where=str(config.path),
                          hint="add one (see `fleetpkg init`): scep_url, ca_fingerprint, "
                               "challenge_env")
    at = at or datetime.now(timezone.utc)
    window = timedelta(days=settings.renew_within_days if renew_within_days is None
                       else renew_within_days)
    devices = select(config.devices, only)
    cas = load_ca_files(list(config.trust.certificates))
    resolver = PasswordResolver()
    default = config.inventory.default_password
    if default is not None and any(d.password == default for d in devices):
        resolver.resolve(default, f"{config.path.name} [devices]")  # unset: the run stops here
    total, done = len(devices), 0
    outcomes: dict[str, Outcome] = {}
    passwords: dict[str, Secret] = {}

    def finished(outcome: Outcome) -> None:
        nonlocal done
        outcomes[outcome.hostname] = outcome
        done += 1
        if progress is not None:
            progress(done, total)

    steps: list[_Step] = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {}
        for device in devices:
            try:
                passwords[device.hostname] = resolver.resolve(device.password, device.where)
            except ConfigError as exc:
                finished(Outcome(device.hostname, FAILED, _short(exc, device)))
                continue
            futures[pool.submit(plan, device, passwords[device.hostname], cas, at, window)] = device
        for future in as_completed(futures):
            step = future.result()
            if step.action == KEPT:
                finished(_kept(step))
            else:
                steps.append(step)
    order = {d.hostname: i for i, d in enumerate(devices)}
    steps.sort(key=lambda s: order[s.device.hostname])

    if steps:
        client = transport.Client(settings.scep_url, timeout=timeout, tls_cas=cas)
        server = client.connect(settings.ca_fingerprint)  # EnrollError: the run cannot start
        challenge = _challenge(settings)
        if dry_run:
            for step in steps:
                finished(Outcome(step.device.hostname, step.action,
                                 f"dry run: would {'enrol' if step.action == ENROLLED else 'renew'}: "
                                 f"{step.reason}"))
        else:
            with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
                futures = [pool.submit(_enrol, step, passwords[step.device.hostname], client, server,
                                       challenge, settings, cas, at) for step in steps]
                try:
                    for future in as_completed(futures):
                        finished(future.result())
                except BaseException:  # Ctrl-C: start no new request; each .pfx is old or new
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return EnrollRun(config.fleet.name, tuple(outcomes[d.hostname] for d in devices), dry_run,
                     window.days)


def _kept(step: _Step) -> Outcome:
    current = step.current
    return Outcome(step.device.hostname, KEPT, step.reason, current.not_after if current else None,
                   current.findings if current else ())


def _challenge(settings: Enroll) -> Callable[[str], Secret | None]:
    """A function giving the challenge for one request. env/file sources are read once now (an
    unset one stops the run before any request); a command runs per request, never in a dry run
    (it would use up a one-time password)."""
    source = settings.challenge
    if source is None:
        return lambda owner: None
    if source.per_request:
        return source.resolve
    value = source.resolve("[enroll]")
    return lambda owner: value


def _enrol(step: _Step, password: Secret, client: transport.Client, server: transport.Server,
           challenge: Callable[[str], Secret | None], settings: Enroll,
           cas: Sequence[x509.Certificate], at: datetime) -> Outcome:
    device = step.device
    try:
        secret = challenge(device.where)
        key = rsa.generate_private_key(public_exponent=65537, key_size=settings.key_size)
        requester = scep.new_requester(key, scep.subject_name(device.hostname, settings.subject))
        csr = scep.build_csr(requester, device.hostname, secret, server.digest)
        reply = transport.enroll(client, server, requester, csr)
        if reply.status == scep.FAILURE:
            return Outcome(device.hostname, FAILED, f"the CA refused the request: {reply.reason}")
        cert = reply.issued_for(key)
        data = store.pfx_bytes(device.hostname, key, cert, server.roles.chain, password)
        previous = store.write_pfx(device.pfx, data)
        # the written file, read as `check` does, now: the certificate may start after the run did
        # (micromdm's scepserver sets notBefore to the second it signs)
        result = check_device(device, password, cas, max(at, datetime.now(timezone.utc)))
    except FleetpkgError as exc:
        return Outcome(device.hostname, FAILED, _short(exc, device))
    except OSError as exc:  # writing the .pfx: a read-only folder, a full disk
        return Outcome(device.hostname, FAILED, f"cannot write {exc.filename or device.pfx}: "
                                                f"{exc.strerror or exc}")
    reason = f"issued by {describe(server.roles.issuer)}, serial {cert.serial_number:x}"
    if previous is not None:
        reason += f"; the old file is kept as {previous.name}"
    return Outcome(device.hostname, step.action, f"{step.reason}: {reason}", result.not_after,
                   result.findings)

