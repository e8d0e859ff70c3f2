"""Per-device certificate checking, serial or across worker processes.

`check_device` is pure (a device, its password, the CAs and a moment in, a DeviceResult out) so
`check` and `build` share it. `check_devices` fans it out over a process pool: .pfx decryption
is CPU-bound KDF work, so processes, not threads. Passwords are resolved by the caller in the
parent and handed to workers as Secret bytes; workers receive the CAs once, as DER.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..errors import CertificateError, FleetpkgError

if TYPE_CHECKING:
    from cryptography import x509

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


def check_device(device: Device, password: bytes, cas: list[x509.Certificate],
                 at: datetime) -> DeviceResult:
    """Open the device's .pfx and lint it for its hostname at `at`.

    A .pfx that cannot be opened (wrong password, corrupt, no key) is not a finding but an input
    error: CertificateError naming the device, its CSV line and the file.
    """
    from ..certs import lint_identity, load_pfx

    try:
        identity = load_pfx(device.pfx, password)
    except FleetpkgError as exc:  # CertificateError, or a FormatError from a damaged file
        raise CertificateError(" ".join(str(exc).split()), where=device.where) from None
    findings = tuple(lint_identity(identity, device.hostname, cas, at))
    ok = not any(f.severity == "error" for f in findings)
    return DeviceResult(device.hostname, ok, _not_after(identity), findings)


def _not_after(identity: Any) -> datetime | None:
    cert = getattr(identity, "certificate", None)
    if cert is None:
        return None
    return cert.not_valid_after_utc


# --- process pool plumbing -------------------------------------------------------------------

_worker_cas: list[Any] = []


def _init_worker(ca_ders: list[bytes]) -> None:
    from cryptography import x509

    _worker_cas[:] = [x509.load_der_x509_certificate(der) for der in ca_ders]


def _work(args: tuple[Device, bytes, datetime]) -> tuple[str, Any]:
    """Runs in a worker: returns ("ok", result) or ("error", one-line message) so a user error
    crosses the process boundary as text (exceptions with keyword state may not pickle)."""
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
    called as each result arrives. The first device (in inventory order) whose .pfx cannot be
    opened raises CertificateError."""
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
