"""Per-device certificate checking, serial or across worker processes.

`judge_device` is the one verdict on a device (its .pfx, password, the CAs and a moment in; its
identity and a DeviceResult out) that `check` and `build` share: a .pfx that is missing, damaged,
locked by another password or without its key/certificate is an error finding on that device,
never a stop, so one bad export does not hide the rest of the fleet. `check_devices` fans it out
over a process pool: .pfx decryption is CPU-bound KDF work, so processes, not threads. Passwords are resolved by the caller in the
parent and handed to workers as Secret bytes; workers receive the CAs once, as DER.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import CertificateError, FleetpkgError

if TYPE_CHECKING:
    from pathlib import Path

    from cryptography import x509

    from ..certs import Identity
    from ..fleet.config import Device


@dataclass(frozen=True)
class DeviceResult:
    hostname: str
    ok: bool  # no error-severity finding
    not_after: datetime | None  # the device certificate's expiry (UTC)
    findings: tuple[Any, ...]  # builder.certs.Finding(rule, severity, message), lint order

    @property
    def errors(self) -> tuple[Any, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def warnings(self) -> tuple[Any, ...]:
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def status(self) -> str:
        if not self.ok:
            return "FAIL"
        return "warn" if self.warnings else "ok"

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "ok": self.ok,
            "not_after": iso_utc(self.not_after) if self.not_after else None,
            "findings": [
                {"rule": f.rule, "severity": f.severity, "message": f.message}
                for f in self.findings
            ],
        }


def iso_utc(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def judge_device(hostname: str, pfx: Path, password: bytes, cas: list[x509.Certificate],
                 at: datetime) -> tuple[Identity | None, DeviceResult]:
    """Open the device's .pfx and lint it for its hostname at `at`: (identity, result), where
    identity is None when the .pfx gave none and the result holds the one finding saying why
    (the rule load_pfx names: pfx-missing, pfx-unreadable, pfx-password, pfx-no-certificate,
    private-key)."""
    from ..certs import ERROR, Finding, lint_identity, load_pfx
    from ..certs.pfx import PfxError

    try:
        identity = load_pfx(pfx, password)
    except PfxError as exc:
        finding = Finding(exc.rule, ERROR, " ".join(str(exc).split()))
        return None, DeviceResult(hostname, False, None, (finding,))
    findings = tuple(lint_identity(identity, hostname, cas, at))
    ok = not any(f.severity == ERROR for f in findings)
    return identity, DeviceResult(hostname, ok, identity.certificate.not_valid_after_utc, findings)


def check_device(device: Device, password: bytes, cas: list[x509.Certificate],
                 at: datetime) -> DeviceResult:
    """judge_device's verdict on one inventory row (what `check` needs: no identity kept)."""
    return judge_device(device.hostname, device.pfx, password, cas, at)[1]


# --- process pool plumbing -------------------------------------------------------------------

_worker_cas: list[Any] = []


def _init_worker(ca_ders: list[bytes]) -> None:
    from cryptography import x509

    _worker_cas[:] = [x509.load_der_x509_certificate(der) for der in ca_ders]


def _work(args: tuple[Device, bytes, datetime]) -> tuple[str, Any]:
    """Runs in a worker: returns ("ok", result) or ("error", one-line message) so a user error the
    verdict did not absorb crosses the process boundary as text (exceptions with keyword state
    may not pickle)."""
    device, password, at = args
    try:
        return "ok", check_device(device, password, _worker_cas, at)
    except FleetpkgError as exc:
        return "error", str(exc)


def check_devices(devices: Sequence[Device], passwords: Sequence[bytes],
                  cas: list[x509.Certificate], at: datetime,
                  jobs: int | None = None,
                  progress: Callable[[int, int], None] | None = None) -> list[DeviceResult]:
    """check_device for each device (results in inventory order). jobs=1 runs in-process;
    otherwise up to `jobs` (default os.cpu_count()) worker processes. `progress(done, total)` is
    called as each result arrives. A bad .pfx is its device's finding; only an unexpected user
    error in a worker stops the run, as CertificateError."""
    if len(devices) != len(passwords):
        raise ValueError("one password per device")
    jobs = jobs or os.cpu_count() or 1
    workers = min(jobs, len(devices))
    total = len(devices)
    results: list[DeviceResult] = []

    def done(result: DeviceResult) -> None:
        results.append(result)
        if progress is not None:
            progress(len(results), total)

    if workers <= 1:
        for device, password in zip(devices, passwords):
            done(check_device(device, password, cas, at))
        return results

    from concurrent.futures import ProcessPoolExecutor

    from cryptography.hazmat.primitives.serialization import Encoding

    ders = [c.public_bytes(Encoding.DER) for c in cas]
    chunk = max(1, min(64, total // (workers * 8)))  # small enough for a live progress bar
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                             initargs=(ders,)) as pool:
        for kind, value in pool.map(_work, [(d, p, at) for d, p in zip(devices, passwords)],
                                    chunksize=chunk):
            if kind == "error":
                pool.shutdown(wait=True, cancel_futures=True)
                raise CertificateError(value)
            done(value)
    return results
