"""The build, as a short list of named steps over plain data.

    config -> vendor facts -> per-device identities (parallel) -> wrapper -> fleet profiles
           -> deployment targets -> manifest, published with one rename

Every other module is a format or a pure transformation; this one only orders them. Per-device
work (open the .pfx, lint, re-encode, profile, identity package) runs in worker processes and
writes straight into the private staging folder; results are merged in inventory order, so the
output does not depend on scheduling. In a sealed build (--seal-to) workers write nothing: they
hand the secret bytes back, and the parent seals them (builder/artifacts/seal.py).
"""

from __future__ import annotations

import functools
import gc
import hashlib
import os
import signal
import threading
import time
import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .buildinfo import BuildInfo, DeviceArtifacts, Receipt
from .changes import classify, device_inputs
from .checking import DeviceResult
from .dist import Artifact, create_file, sha256_of
from ..certs.model import ERROR, Finding
from ..errors import BuildError, CertificateError, FleetpkgError
from ..repro import build_datetime

DEFAULT_MINIMUM_OS = "11.0"  # Big Sur: first release with Rosetta 2, which the Intel-only client needs


@dataclass(frozen=True)
class BuildOptions:
    out_dir: Path
    at: datetime
    jobs: int | None = None
    skip_failed_devices: bool = False
    allow_foreign_vendor: bool = False
    ask_password: bool = False
    seal_to: tuple[str, ...] = ()  # age recipients, besides fleet.toml's [secrets] recipients
    previous: Path | None = None  # --previous DIR (default: the newest earlier build in out_dir)
    fresh: bool = False  # --fresh: mint every identity anew, carry nothing secret forward
    previous_identities: tuple[Path, ...] = ()  # age/SSH identity files that open a sealed previous build


@dataclass
class BuildResult:
    output: Path
    info: BuildInfo
    device_results: list  # builder.artifacts.checking.DeviceResult, inventory order
    artifacts: list  # builder.artifacts.dist.Artifact
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # risks the admin chose (said as "warning:")
    changes: dict | None = None  # changes.json's document


# -- per-device work (runs in worker processes) --------------------------------------------------

@dataclass(frozen=True)
class DeviceJob:
    hostname: str
    serial: str | None
    pfx: Path
    where: str
    password: bytes
    previous: dict | None = None  # the previous build's record of this Mac (None: new, or no previous build)
    previous_files: tuple[tuple[str, str, int], ...] = ()  # (path, sha256, size) of its files there
    names: tuple[str, ...] = ()  # host names its Munki installable_condition matches


@dataclass(frozen=True)
class DeviceTargetInfo:
    """What the per-device target files need of the build (named as in BuildInfo), known before
    the devices are built."""

    fleet: str
    version: str
    minimum_os: str
    targets: object  # builder.fleet.config.Targets


@dataclass(frozen=True)
class DeviceSettings:
    """Everything a worker needs besides the device: picklable, no secrets but the signer key and
    the key of a sealed previous build's spool (which reach workers through the pool's pipe, never
    a file)."""

    staging: Path | None  # None: a sealed build, workers hand their files back as bytes
    fleet: str
    organization: str
    identifier: str
    version: str
    at: datetime
    ca_ders: tuple[bytes, ...]
    allow_all_apps_access: bool
    key_is_extractable: bool
    binary_path: str
    daemon_label: str
    identity_packages: bool
    profile_signer_pem: tuple[bytes, bytes, tuple[bytes, ...]] | None  # key PEM, cert DER, chain DER
    target_info: DeviceTargetInfo | None = None
    fleet_inputs: dict = field(default_factory=dict)  # changes.fleet_inputs
    fleet_digest: str = ""  # fingerprint(fleet_inputs)
    has_previous: bool = False  # a previous build to report changes against
    old_fleet: dict | None = None  # its fleet inputs
    carry_from: Path | None = None  # the previous build to carry identities from (trusted, not --fresh)
    carry_identity_pkgs: bool = False  # its identity packages were made from today's identity-package inputs
    fresh: bool = False
    untrusted: str | None = None  # why the previous build is not trusted
    previous_sealed: bool = False  # the previous build is sealed and was not opened: its identities cannot be carried
    previous_secrets: object | None = None  # seal.SpoolView of the opened sealed previous build's files


@dataclass(frozen=True)
class WrittenFile:
    """A file a worker wrote into the staging folder, with the digest of the bytes it wrote (so
    the parent records it without reading it again); in a sealed build, the bytes themselves."""

    rel: str
    kind: str
    secret: bool
    signer: str | None
    sha256: str
    size: int
    data: bytes | None = None  # sealed builds: not written, for the parent to seal


@dataclass(frozen=True)
class DeviceOutcome:
    result: object  # DeviceResult
    files: tuple[WrittenFile, ...]  # a sealed build's secret files (bytes for the parent's seal)
    artifacts: tuple  # builder.artifacts.dist.Artifact of the files the worker staged and recorded
    device: DeviceArtifacts | None
    record: dict | None  # manifest.json's record of the device (inputs, validity, files)


_settings: DeviceSettings | None = None
_cas: list[x509.Certificate] = []
_signer = None
_stage = None  # the worker's own Staging on the build's staging folder
_jobs: Sequence[tuple] = ()  # every job of the build on the wire (a worker is handed spans of them)


def _init_worker(settings: DeviceSettings, in_worker: bool = False, jobs: Sequence[tuple] = ()) -> None:
    global _settings, _signer, _stage, _jobs
    from .dist import Staging

    _settings, _jobs = settings, jobs
    _stage = Staging(settings.staging) if settings.staging is not None else None
    if in_worker:
        _become_worker()
    _cas[:] = [x509.load_der_x509_certificate(d) for d in settings.ca_ders]
    _signer = None
    if settings.profile_signer_pem:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from ..profiles import ProfileSigner

        key_pem, cert_der, chain = settings.profile_signer_pem
        # the parent loaded (and so checked) this very key: its RSA consistency checks, 33 ms per
        # worker, are not run again
        key = load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
        _signer = ProfileSigner(x509.load_der_x509_certificate(cert_der), key,
                                tuple(x509.load_der_x509_certificate(c) for c in chain))


def _become_worker() -> None:
    """A forked worker inherits the build's SIGTERM handler (staged_output's cleanup), but the pool
    stops its workers with SIGTERM; and it ends when its build is gone."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.enable()  # off in the build's own process while it runs (_forking)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A worker whose build was SIGKILLed would wait for work forever (its siblings keep the task
    pipe open), holding the signer's key in memory: it ends when its parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(70)


def _write_file(staging: Path | None, rel: str, data: bytes, kind: str, signer: str | None = None) -> WrittenFile:
    """A secret per-device file, 0600 from its creation (a new file: never written through a hard
    link into the previous build); with staging None (a sealed build) not written at all but
    handed back to the parent. The one place workers put secrets anywhere."""
    digest = hashlib.sha256(data).hexdigest()
    if staging is None:
        return WrittenFile(rel, kind, True, signer, digest, len(data), data)
    path = staging / rel
    _make_folders(staging, path.parent)
    with os.fdopen(create_file(path, 0o600), "wb") as fh:
        fh.write(data)
        os.fchmod(fh.fileno(), 0o600)  # O_CREAT's mode is filtered by the umask (never widened)
    return WrittenFile(rel, kind, True, signer, digest, len(data))


def _make_folders(staging: Path, folder: Path) -> None:
    """The folders below the staging folder, never the staging folder itself: a worker still
    running after its build failed (and removed the folder) must not bring it back."""
    missing = []
    while folder != staging and not folder.is_dir():
        missing.append(folder)
        folder = folder.parent
    for path in reversed(missing):
        try:
            os.mkdir(path)
        except FileExistsError:
            pass


def _keep(f: WrittenFile, files: list) -> None:
    """A file _write_file made: recorded in the worker's Staging, or (sealed builds, bytes in
    hand) handed to the parent."""
    if f.data is not None:
        files.append(f)
    else:
        _stage.register(f.rel, kind=f.kind, secret=f.secret, signed=f.signer, sha256=f.sha256, size=f.size)


def _carry_file(previous: Path, src: str, rel: str, kind: str, sha256: str, size: int, files: list,
                signer: str | None = None) -> None:
    """A secret per-device file carried forward from the previous build, the same bytes: a hard
    link, or (a sealed build) its bytes, checked against the digest the trust check verified."""
    if _settings.previous_secrets is not None:
        return _carry_sealed_file(_settings, src, rel, kind, sha256, files, signer)
    path = f"{previous}/{src}"
    if _stage is not None:
        try:
            _stage.link(path, rel, kind=kind, secret=True, signed=signer, sha256=sha256, size=size)
        except OSError as exc:
            raise _PreviousUnusable(_unusable(src, exc)) from None
        return
    with open(path, "rb") as fh:
        data = fh.read()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BuildError(f"{src} of the previous build changed during this build", where=str(previous),
                         hint="build again, or with --fresh")
    files.append(WrittenFile(rel, kind, True, signer, sha256, len(data), data))


def _carry_sealed_file(s: DeviceSettings, src: str, rel: str, kind: str, sha256: str, files: list,
                       signer: str | None) -> None:
    """_carry_file from a sealed previous build: the bytes from its opened seal (checked there
    against its manifest), written as a new file (or handed to the parent's seal) like a new one."""
    try:
        data = s.previous_secrets.read(src)
    except KeyError:
        raise BuildError(f"internal error: {src} of the sealed previous build was not kept") from None
    if hashlib.sha256(data).hexdigest() != sha256:
        raise BuildError(f"internal error: {src} of the sealed previous build changed in its spool")
    _keep(_write_file(s.staging, rel, data, kind, signer), files)


def _device_work(wire: tuple) -> tuple[str, object]:
    """("ok", outcome on the wire) or ("error", message): user errors cross the process boundary
    as text. Jobs and outcomes travel as tuples of builtins (_job_wire, _outcome_wire): pickling
    the dataclasses cost several times more, in the parent as much as in the workers."""
    try:
        return "ok", _outcome_wire(build_device(DeviceJob(*wire), _settings, _cas, _signer))
    except (FleetpkgError, _PreviousUnusable) as exc:
        if _stage is not None:
            _stage.drain()
        return "untrusted" if isinstance(exc, _PreviousUnusable) else "error", str(exc)


class _PreviousUnusable(Exception):
    """A file of the previous build could not be carried forward (missing, unreadable): the trust
    check will reject that build, so the build starts again without it (_LateDistrust)."""


class _LateDistrust(Exception):
    """The previous build at `root` failed the trust check that ran beside this build (or a file
    of it could not be carried): nothing was published, and the build runs again distrusting it."""

    def __init__(self, root: Path | None, reason: str):
        super().__init__(reason)
        self.root, self.reason = root, reason


def _unusable(rel: str, exc: OSError) -> str:
    """What the trust check would say about a file that could not be carried forward."""
    if isinstance(exc, FileNotFoundError):
        return f"{rel} is missing"
    return f"{rel} cannot be read ({exc.strerror or exc})"


def _names(cls) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


_JOB_FIELDS, _FILE_FIELDS, _DEVICE_FIELDS = _names(DeviceJob), _names(WrittenFile), _names(DeviceArtifacts)


def _device_span(span: tuple[int, int]) -> list[tuple[str, object]]:
    """_device_work for the jobs start..stop: workers hold every job from their start (inherited
    where processes fork), so no job crosses the pipe, only its outcome."""
    return [_device_work(_jobs[i]) for i in range(*span)]


def _job_wire(job: DeviceJob) -> tuple:
    return tuple(os.fspath(v) if isinstance(v, Path) else v for v in (getattr(job, n) for n in _JOB_FIELDS))


def _outcome_wire(o: DeviceOutcome) -> tuple:
    r, d = o.result, o.device
    return ((r.hostname, r.ok, r.not_after, tuple((f.rule, f.severity, f.message) for f in r.findings)),
            tuple(tuple(getattr(f, n) for n in _FILE_FIELDS) for f in o.files),
            tuple((a.path, a.kind, a.sha256, a.size, a.secret, a.signed, a.sealed) for a in o.artifacts),
            tuple(getattr(d, n) for n in _DEVICE_FIELDS) if d else None, o.record)


def _outcome_from_wire(wire: tuple) -> DeviceOutcome:
    (host, ok, not_after, findings), files, arts, device, record = wire
    return DeviceOutcome(DeviceResult(host, ok, not_after, tuple(Finding(*f) for f in findings)),
                         tuple(WrittenFile(*f) for f in files), tuple(map(Artifact._make, arts)),
                         DeviceArtifacts(*device) if device else None, record)


def _pfx_sha256(path: Path) -> str | None:
    """The .pfx file's digest (an input of the device), or None when it cannot be read (load_pfx
    then says why)."""
    try:
        return sha256_of(path)
    except OSError:
        return None


def build_device(job: DeviceJob, s: DeviceSettings, cas: list[x509.Certificate], signer) -> DeviceOutcome:
    """One Mac: carried forward from the previous build when its inputs are unchanged, else its
    .pfx opened, linted and sealed into ONE macOS PKCS#12 + password that its profile and its
    identity package both carry."""
    pfx_sha256 = _pfx_sha256(job.pfx)
    record = {"hostname": job.hostname, "serial": job.serial, "pfx": pfx_sha256,
              "inputs": device_inputs(s.fleet_digest, job.hostname, job.serial, pfx_sha256) if pfx_sha256 else None}
    if (s.carry_from is not None and job.previous is not None and record["inputs"]
            and job.previous.get("inputs") == record["inputs"]):
        carried = _carry_device(job, s, signer, record)
        if carried is not None:
            return carried

    from ..certs import build_chain, is_self_signed, reencode_for_macos
    from .checking import judge_device

    identity, result = judge_device(job.hostname, job.pfx, job.password, cas, s.at)
    if not result.ok:  # failing rules, or a .pfx that gave no identity: a failed device
        return DeviceOutcome(result, (), (), None, None)
    findings = result.findings

    chain = build_chain(identity.certificate, cas, identity.extra_certificates, s.at)
    roots = [c for c in chain if is_self_signed(c)]
    intermediates = [c for c in chain if not is_self_signed(c)]
    record.update(_validity_record(identity.certificate, chain, findings))

    from ..profiles import device_profile, render_xml, sign_profile

    # one sealed identity per device per build: its profile and its identity package carry it
    sealed = reencode_for_macos(identity, chain=chain, friendly_name=job.hostname.encode())
    profile = device_profile(fleet=s.fleet, organization=s.organization, identifier_prefix=s.identifier,
                             hostname=job.hostname, p12=sealed.p12, p12_password=sealed.password,
                             roots=roots, intermediates=intermediates,
                             allow_all_apps_access=s.allow_all_apps_access,
                             key_is_extractable=s.key_is_extractable,
                             certificate=identity.certificate)  # reencode_for_macos checked the p12
    xml = render_xml(profile)
    rel = f"profiles/devices/{job.hostname}.mobileconfig"
    files: list[WrittenFile] = []
    _keep(_write_file(s.staging, rel, xml, "device-profile"), files)
    signed_rel = None
    if signer is not None:
        signed_rel = f"profiles/devices/{job.hostname}.signed.mobileconfig"
        _keep(_write_file(s.staging, signed_rel, sign_profile(xml, signer), "device-profile-signed",
                          signer.subject), files)
    pkg_rel = None
    if s.identity_packages:
        ca_ders = tuple(c.public_bytes(Encoding.DER) for c in roots + intermediates)
        pkg_rel = _identity_package(s, job.hostname, sealed.p12, sealed.password, ca_ders, files)
    return _finish_device(job, s, result, record, files, rel, signed_rel, pkg_rel, carried=False)


def _carry_device(job: DeviceJob, s: DeviceSettings, signer, record: dict) -> DeviceOutcome | None:
    """The Mac's files from the previous build, reused byte for byte (hard links), its findings
    re-judged at today's check time from the recorded validity dates; None when that is not
    possible (validity no longer clean, a file missing from the record, the sealed identity
    unreadable), and the caller then mints anew. Nothing is staged before that is decided."""
    prev = job.previous
    findings = _carried_findings(prev, s.at)
    known = {rel: (sha256, size) for rel, sha256, size in job.previous_files}
    profile, signed = prev.get("profile"), prev.get("signed_profile")
    if findings is None or profile not in known or (signer is not None) != (signed in known):
        return None
    pkg_src = sealed = None
    if s.identity_packages:
        if s.carry_identity_pkgs and prev.get("identity_pkg") in known:
            pkg_src = prev["identity_pkg"]
        else:  # the package embeds the version: rebuild it around the same sealed identity
            from .previous import sealed_identity

            sealed = sealed_identity(s.carry_from, profile, known[profile][0], s.previous_secrets)
            if sealed is None:
                return None

    files: list[WrittenFile] = []
    base = os.fspath(s.carry_from)
    rel = f"profiles/devices/{job.hostname}.mobileconfig"
    _carry_file(base, profile, rel, "device-profile", *known[profile], files)
    signed_rel = None
    if signer is not None:
        signed_rel = f"profiles/devices/{job.hostname}.signed.mobileconfig"
        _carry_file(base, signed, signed_rel, "device-profile-signed", *known[signed], files,
                    signer=signer.subject)
    pkg_rel = None
    if pkg_src is not None:
        pkg_rel = f"identity/{job.hostname}.pkg"
        _carry_file(base, pkg_src, pkg_rel, "identity-pkg", *known[pkg_src], files)
    elif sealed is not None:
        pkg_rel = _identity_package(s, job.hostname, sealed.p12, sealed.password, sealed.ca_ders, files)
    record.update({k: prev[k] for k in VALIDITY_KEYS})
    result = DeviceResult(job.hostname, True, _parse_time(prev["not_after"]), findings)
    return _finish_device(job, s, result, record, files, rel, signed_rel, pkg_rel, carried=True)


def _finish_device(job: DeviceJob, s: DeviceSettings, result, record: dict, files: list, profile: str,
                   signed: str | None, pkg: str | None, *, carried: bool) -> DeviceOutcome:
    """Classify the device against the previous build, write its target files, hand over its records."""
    from .targets import write_device_targets

    record.update(profile=profile, signed_profile=signed, identity_pkg=pkg)
    change, reasons = None, []
    if s.has_previous:
        change, reasons = classify(s.old_fleet, s.fleet_inputs, job.previous, record, carried,
                                   fresh=s.fresh, untrusted=s.untrusted, sealed=s.previous_sealed)
    device = DeviceArtifacts(job.hostname, job.serial, result.not_after, profile, signed, pkg,
                             identity_package_id(s.identifier, job.hostname) if pkg else None,
                             s.version if pkg else None, change, tuple(reasons))
    if s.target_info is not None:
        if s.carry_from is not None:  # a target file whose bytes are the previous build's is linked
            base = os.fspath(s.carry_from)
            _stage.reuse = {rel: (f"{base}/{rel}", sha256, size) for rel, sha256, size in job.previous_files}
            if job.previous and job.previous.get("munki_pkginfo") and job.previous.get("munki_doc"):
                _stage.reuse_docs = {job.previous["munki_pkginfo"]: job.previous["munki_doc"]}
        try:
            pkginfo = write_device_targets(s.target_info, device, list(job.names), _stage)
            record["munki_pkginfo"], record["munki_doc"] = pkginfo, _stage.docs.get(pkginfo)
        finally:
            _stage.reuse, _stage.reuse_docs, _stage.docs = {}, {}, {}
    return DeviceOutcome(result, tuple(files), tuple(_stage.drain()) if _stage is not None else (), device, record)


# a device record's files that a rebuild may reuse (hard links of the previous build's)
CARRIED = ("profile", "signed_profile", "identity_pkg", "munki_pkginfo")


VALIDITY_KEYS = ("not_before", "not_after", "chain_not_before", "chain_not_after", "findings")


def _validity_record(cert: x509.Certificate, chain, findings) -> dict:
    """What a rebuild needs to re-judge the certificate rules without the .pfx: the leaf's
    validity, the window in which every certificate of its chain is valid, and the findings that
    do not depend on time."""
    from .checking import iso_utc

    certs = [cert, *chain]
    return {"not_before": iso_utc(cert.not_valid_before_utc), "not_after": iso_utc(cert.not_valid_after_utc),
            "chain_not_before": iso_utc(max(c.not_valid_before_utc for c in certs)),
            "chain_not_after": iso_utc(min(c.not_valid_after_utc for c in certs)),
            "findings": [[f.rule, f.severity, f.message] for f in findings if f.rule != "validity"]}


def _parse_time(text: str) -> datetime:
    """A time iso_utc wrote ("2026-05-31T12:00:00Z")."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None or text[-1:] != "Z":
        raise ValueError(f"not a UTC time: {text!r}")
    return when


def _carried_findings(prev: dict, at: datetime) -> tuple | None:
    """The rules' findings for a carried-forward certificate at `at`, or None when the time-bound
    rules (validity, the chain's validity window) would not pass cleanly: the device is then
    checked from its .pfx like a new one."""
    from ..certs.chain import utc
    from ..certs.rules import validity_findings

    try:
        start, end, chain_start, chain_end = (_parse_time(prev[k]) for k in VALIDITY_KEYS[:4])
        kept = [Finding(rule, severity, message) for rule, severity, message in prev["findings"]]
    except (KeyError, TypeError, ValueError):
        return None
    at = utc(at)
    if not chain_start <= at <= chain_end:
        return None
    validity = validity_findings(start, end, at)
    found = kept + validity
    if any(f.severity == ERROR for f in found):
        return None
    if len(found) > 1:
        order = _rule_order()
        found.sort(key=lambda f: order.get(f.rule, len(order)))
    return tuple(found)


@functools.cache
def _rule_order() -> dict[str, int]:
    from ..certs.rules import RULES

    return {rule: i for i, rule in enumerate(RULES)}


def identity_package_id(prefix: str, hostname: str) -> str:
    return f"{prefix}.identity.{hostname.lower()}"


def _identity_package(s: DeviceSettings, hostname: str, p12: bytes, password: str, ca_ders: Sequence[bytes],
                      files: list) -> str:
    """identity/<host>.pkg around the device's sealed identity, handed to _write_file."""
    rel, pkg_id = f"identity/{hostname}.pkg", identity_package_id(s.identifier, hostname)
    pkg = _build_identity_package(s, hostname, pkg_id, p12, password, ca_ders)
    _keep(_write_file(s.staging, rel, pkg, "identity-pkg"), files)
    return rel


def _build_identity_package(s: DeviceSettings, hostname: str, pkg_id: str, p12: bytes, password: str,
                            ca_ders: Sequence[bytes]) -> bytes:
    """The package, built in memory (no file, no temporary file)."""
    from ..formats.pkg.package import build_component
    from .scripts import IDENTITY_PASSWORD_FILE, IdentityContext, render_identity_scripts

    ca_names = tuple(f"ca-{i + 1}.cer" for i in range(len(ca_ders)))
    p12_name = f"{hostname}.p12"
    scripts = render_identity_scripts(IdentityContext(
        fleet=s.fleet, hostname=hostname, binary_path=s.binary_path, p12_name=p12_name,
        ca_names=ca_names, label=s.daemon_label))
    files: dict[str, tuple[bytes, int]] = {
        "preinstall": (scripts["preinstall"].encode(), 0o755),
        "postinstall": (scripts["postinstall"].encode(), 0o755),
        p12_name: (p12, 0o600),
        IDENTITY_PASSWORD_FILE: (password.encode(), 0o600),
    }
    for name, der in zip(ca_names, ca_ders):
        files[name] = (der, 0o644)
    return build_component(None, identifier=pkg_id, version=s.version, root=None, scripts=files, mode=0o600).data


def run_devices(jobs: Sequence[DeviceJob], settings: DeviceSettings, workers: int,
                progress: Callable[[int, int], None] | None = None,
                take: Callable[[DeviceOutcome], DeviceOutcome] | None = None) -> list[DeviceOutcome]:
    """build_device for every job, in inventory order. A bad .pfx is a failed device (its outcome
    says why); only an unexpected user error in a device's work stops the build. `take` sees each
    outcome as it arrives (a sealed build moves the bytes out of it)."""
    from concurrent.futures.process import BrokenProcessPool

    total = len(jobs)
    outcomes: list[DeviceOutcome] = []

    def done(item):
        kind, value = item
        if kind == "error":
            raise CertificateError(value)
        if kind == "untrusted":
            raise _LateDistrust(settings.carry_from, value)
        outcome = _outcome_from_wire(value)
        outcomes.append(take(outcome) if take else outcome)
        if progress:
            progress(len(outcomes), total)

    wires = [_job_wire(job) for job in jobs]
    if workers <= 1 or total <= 1:
        _init_worker(settings)
        for wire in wires:
            done(_device_work(wire))
        return outcomes
    chunk = max(1, min(64, total // (workers * 8)))
    spans = [(start, min(start + chunk, total)) for start in range(0, total, chunk)]
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings, True, wires)) as pool:
        watch = _watch(pool)
        try:
            for items in pool.map(_device_span, spans):
                for item in items:
                    done(item)
        except BrokenProcessPool:
            raise _worker_died() from None
        except BaseException as exc:
            # a build that starts again (_LateDistrust) lets its workers finish first: no file of
            # theirs may land in the staging folder after it is removed
            pool.shutdown(wait=isinstance(exc, _LateDistrust), cancel_futures=True)
            raise
        finally:
            watch.set()
    return outcomes


def _worker_died() -> BuildError:
    return BuildError("a worker process died (killed, or out of memory); the build stopped and removed what it "
                      "had written", hint="run the build again; try --jobs 1 if memory is short")


def _watch(pool: ProcessPoolExecutor) -> threading.Event:
    """_break_on_dead_worker beside `pool` until the returned event is set."""
    done = threading.Event()
    threading.Thread(target=_break_on_dead_worker, args=(pool, done), daemon=True).start()
    return done


def _break_on_dead_worker(pool: ProcessPoolExecutor, done: threading.Event) -> None:
    """A worker killed while writing its result leaves half a message in the result pipe, and
    CPython 3.11's pool then waits for the rest forever (its manager thread blocks in recv, so it
    never sees the dead worker). When a worker dies, stop the others and close the parent's own end
    of that pipe: the manager reads end-of-file, marks the pool broken, and the build stops with
    its one-line error instead of hanging."""
    while not done.wait(0.2):
        procs = list((getattr(pool, "_processes", None) or {}).values())
        if not any(p.exitcode not in (None, 0) for p in procs):
            continue
        for p in procs:
            if p.exitcode is None:
                p.kill()
        for p in procs:
            p.join(5)
        writer = getattr(getattr(pool, "_result_queue", None), "_writer", None)
        if writer is not None and not done.is_set():
            writer.close()
        return


def _sealer(stage) -> Callable[[DeviceOutcome], DeviceOutcome]:
    """Move each outcome's secret bytes into the stage's seal as it arrives, so the parent never
    holds more than one device's files."""
    from dataclasses import replace

    def take(outcome: DeviceOutcome) -> DeviceOutcome:
        files = []
        for f in outcome.files:
            if f.data is not None:
                stage.hold(f.rel, f.data)
                f = replace(f, data=None)
            files.append(f)
        return replace(outcome, files=tuple(files))

    return take


def _sealed_wanted(jobs: Sequence[DeviceJob], carry_pkgs: bool) -> list[str]:
    """The files of a sealed previous build its Macs may carry: their profiles, and their identity
    packages when those were made from today's identity-package inputs (else rebuilt)."""
    return [rel for job in jobs for rel, _sha256, _size in job.previous_files
            if carry_pkgs or rel != job.previous.get("identity_pkg")]


def _previous_keys(options: BuildOptions) -> list:
    """The identities (--previous-identity files) that open a sealed previous build, loaded as
    `fleetpkg unseal` loads them."""
    from ..formats.age import load_identity_files
    from .previous import IDENTITY_OPTION

    try:
        return load_identity_files(options.previous_identities)
    except FleetpkgError as exc:
        exc.hint = exc.hint or (f"{IDENTITY_OPTION} names a file holding the private key of a recipient the "
                                "previous build is sealed to")
        raise


def _unchained(seal, keys: Sequence) -> list[str]:
    """A warning when a sealed build is sealed to none of the age keys that opened its previous
    build (--previous-identity): the next build given the same key could not open this one and
    would re-mint every Mac. (An SSH identity cannot name its public key: not checked.)"""
    own = sorted({str(k.to_public()) for k in keys if hasattr(k, "to_public")})
    if seal is None or not own or set(own) & set(seal.texts):
        return []
    return [f"this build is sealed to none of the --previous-identity keys ({', '.join(own)}): the next build "
            "given the same key cannot open it and will give every Mac a new identity; add that key's recipient "
            "to --seal-to or [secrets] recipients"]


def seal_for(config, options: BuildOptions):
    """The build's Seal (recipients from --seal-to and [secrets] recipients), or None."""
    from ..errors import ConfigError, FleetpkgError
    from ..formats.age import parse_recipient
    from .dist import Seal

    texts = list(dict.fromkeys([*config.secrets.recipients, *(t.strip() for t in options.seal_to)]))
    if not texts:
        return None
    recipients = []
    for text in texts:
        try:
            recipients.append(parse_recipient(text))
        except FleetpkgError as exc:
            raise ConfigError(exc.message, where="--seal-to", hint=exc.hint) from None
    return Seal(tuple(recipients), tuple(texts))


POOLED_CHECK_FILES = 1000  # a previous build of this many files is checked in worker processes (_LateCheck)
_check_items: tuple = (None, (), None)  # the trust check's (root, items, known), set in its workers by _init_check


def _init_check(root: Path, items: list, known=None, background: bool = False) -> None:
    global _check_items
    _check_items = (root, items, known)
    _become_worker()
    if background and hasattr(os, "nice"):
        os.nice(10)  # the build's own workers first: the check takes the time they leave idle


def _check_part(positions: list[int]) -> list[tuple[int, str]]:
    from .previous import check_part

    root, items, known = _check_items
    return check_part(root, items, positions, known)


def check_previous_files(root: Path, items: list, workers: int, known=None) -> list[str]:
    """previous.check_files over `items`, across `workers` processes: each gets the items once
    (inherited, where processes are forked) and checks one part of them (previous.parts). `known`:
    the build's record of its files (builder/artifacts/verified.py), or None."""
    from .previous import check_files, parts

    if workers <= 1 or len(items) < POOLED_CHECK_FILES:
        return check_files(root, items, known)
    from concurrent.futures.process import BrokenProcessPool

    problems: list[tuple[int, str]] = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_check, initargs=(root, items, known)) as pool:
        watch = _watch(pool)
        try:
            for found in pool.map(_check_part, parts(items, workers)):
                problems += found
        except BrokenProcessPool:
            raise _worker_died() from None
        finally:
            watch.set()
    return [problem for _position, problem in sorted(problems)]


class _LateCheck:
    """check_previous_files in background processes (one fewer than the build's workers, at a
    lower priority) while the build carries the files forward and goes on: the hashing runs in the
    time the build's serial steps (the targets, DEPLOY.md, the manifest) leave a core idle, and its
    verdict is awaited before the new build is published; a failed one discards the new build
    (_LateDistrust). Only for builds whose workers link the previous files without reading them."""

    def __init__(self, root: Path, items: list, workers: int, known=None):
        from .previous import parts

        count = max(1, workers - 1)
        self._pool = ProcessPoolExecutor(max_workers=count, initializer=_init_check,
                                         initargs=(root, items, known, True))
        self._futures = [self._pool.submit(_check_part, part) for part in parts(items, count)]
        self._watch = _watch(self._pool)
        weakref.finalize(self, _stop_check, self._pool, self._watch)  # a failed build stops it

    def result(self) -> list[str]:
        from concurrent.futures.process import BrokenProcessPool

        try:
            problems = sorted(p for future in self._futures for p in future.result())
        except BrokenProcessPool:
            raise _worker_died() from None
        finally:
            self._watch.set()
            self._pool.shutdown()
        return [problem for _position, problem in problems]


def _stop_check(pool: ProcessPoolExecutor, watch: threading.Event) -> None:
    watch.set()
    pool.shutdown(wait=False, cancel_futures=True)


def _trust_problem(problems: list[str]) -> str:
    more = f" and {len(problems) - 1} more problem(s)" if len(problems) > 1 else ""
    return problems[0] + more


def _carry_previous(stage, root: Path, rel: str, **record) -> None:
    """A file of the previous build linked into this one by the parent (the wrapper, a signed
    fleet profile); one that cannot be is the trust check's failure, found early."""
    try:
        stage.link(root / rel, rel, **record)
    except OSError as exc:
        raise _LateDistrust(root, _unusable(rel, exc)) from None


# -- the wrapper ---------------------------------------------------------------------------------

def wrapper_version(vendor_version: str, build: int) -> str:
    return f"{vendor_version}-{build}"


def minimum_os(config_min: str | None, vendor) -> str:
    if config_min:
        return config_min
    dist = vendor.distribution
    if dist is not None:
        mins = [v.min for v in dist.os_requirements() if v.min]
        if mins:
            return max(mins, key=lambda v: tuple(int(p) if p.isdigit() else 0 for p in v.split(".")))
    return DEFAULT_MINIMUM_OS


def build_distribution(*, title: str, identifier: str, version: str, min_os: str, vendor,
                       prepare, configure, vendor_names: Sequence[str]):
    """productbuild's shape: prepare, the vendor's choices in the vendor's own install order, configure;
    the vendor's constraints, checks, scripts and restart needs kept (builder/fleet/vendorchoices.py)."""
    from ..formats.pkg.conclusion import NONE
    from ..formats.pkg.product import Choice, Distribution, Line, OsVersion, PkgRef

    vendor_dist = vendor.distribution
    ours = {prepare.identifier, configure.identifier}
    for choice in vendor.choices:
        if choice.id in ours or any(r.id in ours for r in choice.pkg_refs):
            raise BuildError(f'the vendor\'s choice "{choice.id}" uses one of the wrapper\'s own ids '
                             f"({', '.join(sorted(ours))})", where=str(vendor.source.package),
                             hint="set another [fleet] identifier")

    def own(info, name: str) -> tuple[PkgRef, Choice]:
        return (PkgRef(id=info.identifier, version=info.version, install_kbytes=info.install_kbytes, auth="Root",
                       on_conclusion="none", path=f"#{name}"),
                Choice(id=info.identifier, attributes=(("visible", "false"),), pkg_refs=(PkgRef(info.identifier),)))

    prepare_ref, prepare_choice = own(prepare, "prepare.pkg")
    configure_ref, configure_choice = own(configure, "configure.pkg")
    refs = [prepare_ref]
    for comp, name in zip(vendor.components, vendor_names):
        if comp.ref_children:  # productbuild's shape: children on a pkg-ref of their own
            refs.append(PkgRef(id=comp.ref_id, children=comp.ref_children))
        refs.append(PkgRef(id=comp.ref_id, version=comp.version, install_kbytes=comp.install_kbytes, auth="Root",
                           on_conclusion="none" if comp.on_conclusion == NONE else comp.on_conclusion,
                           path=f"#{name}", extra_attributes=comp.ref_attributes))
    refs.append(configure_ref)
    outline = (Line("default", (Line(prepare.identifier),) + tuple(vendor.outline) + (Line(configure.identifier),)),)
    return Distribution(
        title=title,
        product=(("id", identifier), ("version", version)),
        options=(("customize", "never"), ("require-scripts", "false"), ("hostArchitectures", "arm64,x86_64")),
        domains=(("enable_anywhere", "false"), ("enable_currentUserHome", "false"),
                 ("enable_localSystem", "true")),
        allowed_os_versions=(OsVersion(min=min_os),),
        volume_check=vendor_dist.volume_check if vendor_dist else None,
        installation_check=vendor_dist.installation_check if vendor_dist else None,
        scripts=vendor_dist.scripts if vendor_dist else (),
        choices_outline=outline,
        choices=(Choice(id="default"), prepare_choice, *vendor.choices, configure_choice),
        pkg_refs=tuple(refs),
    )


def build_wrapper(dest: Path, *, config, vendor, version: str, min_os: str, script_ctx, scripts: dict,
                  tmp: Path) -> list:
    """The product archive; returns the components it installs as Receipts, in install order."""
    from ..formats.pkg.package import EmbedComponent, build_component, build_product
    from ..formats.pkg.tree import entries_from_mapping
    from ..formats.pkg.xar import XarReader
    from .scripts import wrapper_payload_files

    ident = config.fleet.identifier
    prepare = build_component(tmp / "prepare.pkg", identifier=f"{ident}.prepare", version=version, root=None,
                              scripts={"preinstall": (scripts["preinstall"].encode(), 0o755)}).info
    payload = {f.path.lstrip("/"): (f.data, f.mode) for f in wrapper_payload_files(script_ctx, scripts)}
    configure = build_component(tmp / "configure.pkg", identifier=f"{ident}.configure", version=version,
                                root=entries_from_mapping(payload),
                                scripts={"postinstall": (scripts["postinstall"].encode(), 0o755)}).info
    vendor_names = [c.prefix.rstrip("/") if c.prefix else f"{c.identifier}.pkg" for c in vendor.components]
    dist = build_distribution(title=f"{config.fleet.organization} 1E Client {version}",
                              identifier=ident, version=version, min_os=min_os, vendor=vendor,
                              prepare=prepare, configure=configure, vendor_names=vendor_names)
    with XarReader(tmp / "prepare.pkg") as prep_r, XarReader(tmp / "configure.pkg") as conf_r, \
            XarReader(vendor.source.package) as vendor_r:
        components = [EmbedComponent(prep_r, "", "prepare.pkg")]
        components += [EmbedComponent(vendor_r, c.prefix, name) for c, name in zip(vendor.components, vendor_names)]
        components.append(EmbedComponent(conf_r, "", "configure.pkg"))
        build_product(dest, distribution=dist, components=components)
    receipts = [Receipt(prepare.identifier, prepare.version, prepare.install_kbytes or 0)]
    receipts += [Receipt(c.identifier, c.version, c.install_kbytes, c.on_conclusion) for c in vendor.components]
    receipts.append(Receipt(configure.identifier, configure.version, configure.install_kbytes or 0))
    return receipts


# -- signing identities ----------------------------------------------------------------------------

def _load_installer_signer(config, resolver):
    ident = config.signing.installer
    if ident is None:
        return None
    from ..certs.signing_identity import load_signing_identity

    password = resolver.resolve(ident.password, "[signing] installer") if ident.password else None
    return load_signing_identity(ident.p12, password, certificate=ident.certificate, key=ident.key,
                                 chain=ident.chain)


def _load_profile_signer(config, resolver):
    ident = config.signing.profile
    if ident is None:
        return None
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from ..profiles import ProfileSigner

    password = resolver.resolve(ident.password, "[signing] profile") if ident.password else None
    where = str(ident.p12 or ident.certificate)
    try:
        if ident.p12 is not None:
            key, cert, extra = pkcs12.load_key_and_certificates(ident.p12.read_bytes(), password)
            chain = tuple(extra or ())
        else:
            key = serialization.load_pem_private_key(ident.key.read_bytes(), password)
            cert = x509.load_pem_x509_certificate(ident.certificate.read_bytes())
            chain = tuple(c for p in ident.chain for c in x509.load_pem_x509_certificates(p.read_bytes()))
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"cannot open the profile-signing identity ({' '.join(str(exc).split())})",
                               where=where, hint="check the file and its password") from None
    if key is None or cert is None:
        raise CertificateError("the profile-signing identity needs a certificate and its private key", where=where)
    if cert.not_valid_after_utc < datetime.now(timezone.utc):
        raise CertificateError(f"the profile-signing certificate expired on {cert.not_valid_after_utc:%Y-%m-%d}",
                               where=where, hint="renew it; Macs show expired-signer profiles as unverified")
    return ProfileSigner(cert, key, chain)


# -- the whole build -----------------------------------------------------------------------------

def _forking(build: Callable[..., BuildResult]) -> Callable[..., BuildResult]:
    """The build freezes the cyclic collector's view of its objects before it forks its worker
    pools (gc.freeze, as the gc module's documentation advises for fork without exec): the workers'
    collections then leave the parent's objects (and their memory pages) alone, and the parent's
    own later collections stop rescanning the previous manifest and the device records, hundreds
    of thousands of objects that a large rebuild keeps to its end. Thawed when the build ends.

    In the build's own process the cyclic collector is off until the build ends: what it holds
    are long-lived records (the previous manifest, the artifacts, the device outcomes) in no
    reference cycle, which the collector only walked again and again (0.2 s of an unchanged
    10,000-Mac rebuild, half of it while reading the previous manifest); a device's work makes no
    cycles (tests/artifacts/test_lifecycle.py), and the worker processes collect as usual."""
    @functools.wraps(build)
    def run(*args, **kwargs) -> BuildResult:
        collecting = gc.isenabled()
        gc.disable()
        try:
            return build(*args, **kwargs)
        finally:
            gc.unfreeze()
            if collecting:
                gc.enable()
    return run


@_forking
def run_build(config, options: BuildOptions, *, progress: Callable[[int, int], None] | None = None,
              log: Callable[[str], None] = lambda _m: None) -> BuildResult:
    distrusted: dict[Path, str] = {}  # previous builds rejected by a check that ran beside the build
    while True:
        try:
            return _build(config, options, progress=progress, log=log, distrusted=distrusted)
        except _LateDistrust as late:  # nothing was published: again, with that previous build distrusted
            if late.root is None or late.root in distrusted:
                raise BuildError(f"internal error: previous build {late.root} rejected twice ({late.reason})") \
                    from None
            distrusted[late.root] = late.reason


def _build(config, options: BuildOptions, *, progress: Callable[[int, int], None] | None,
           log: Callable[[str], None], distrusted: dict[Path, str]) -> BuildResult:
    from ..certs import load_ca_files
    from .changes import (IDENTITY_PKG_FORMAT, MANIFEST_FORMAT, artifact_digests, assemble, compare_artifacts,
                          compare_devices, fingerprint, fleet_inputs, to_json, wrapper_status)
    from .dist import describe_removed, remove_stale, staged_output
    from ..scratch import describe_scratch, remove_stale_scratch, scratch
    from ..fleet.intake import resolve_vendor_package
    from ..fleet.passwords import PasswordResolver
    from ..profiles import render_xml, sign_profile
    from .buildinfo import Changes
    from .previous import OpenedSeal, listed_files, locate, open_sealed, sealed_listing, unopened_note, untrusted_note
    from .verified import load_record
    from .scripts import ScriptContext
    from .targets import sections_of, write_deploy, write_targets
    from .targets.munki import host_names
    from ..fleet.vendor import inspect_vendor

    notes: list[str] = []
    warnings: list[str] = []
    seal = seal_for(config, options)  # a bad recipient stops the build before any work
    previous_keys = _previous_keys(options)  # so does a bad --previous-identity file
    warnings += _unchained(seal, previous_keys)
    resolver = PasswordResolver(ask=options.ask_password)
    passwords = [resolver.resolve(d.password, d.where) for d in config.devices]
    cas = load_ca_files(list(config.trust.certificates))
    installer_signer = _load_installer_signer(config, resolver)
    profile_signer = _load_profile_signer(config, resolver)
    if installer_signer is not None:
        notes += list(installer_signer.warnings)

    for line in describe_scratch(remove_stale_scratch()):
        log(line)
    with scratch("build") as tmp:
        source = resolve_vendor_package(config.vendor.package, tmp / "vendor")
        vendor = inspect_vendor(source, allow_foreign=options.allow_foreign_vendor or config.vendor.allow_foreign_vendor)
        notes += list(vendor.notes)
        log(f"vendor: {source.origin}: {vendor.summary()}")
        version = wrapper_version(vendor.version, config.fleet.build)
        fleet = config.fleet.name
        final = options.out_dir / f"{fleet}-{version}"
        min_os = minimum_os(config.fleet.minimum_os, vendor)
        support_dir = f"/Library/Application Support/fleetpkg/{fleet}"
        ident = config.fleet.identifier
        receipt_ids = (f"{ident}.prepare", *[c.identifier for c in vendor.components], f"{ident}.configure")
        script_ctx = ScriptContext(
            fleet=fleet, identifier=ident, version=version, conf_path=vendor.conf_path,
            daemon_label=vendor.daemon_label, daemon_plist=vendor.daemon_plist, binary_path=vendor.binary_path,
            needs_rosetta=vendor.needs_rosetta, client_settings=tuple(config.client.items), receipts=receipt_ids,
            support_dir=support_dir, log_path=f"/var/log/fleetpkg-{fleet}.log")
        scripts = _rendered_scripts(script_ctx)

        # what every device's identity and the wrapper depend on, and what the previous build had
        signer_material = None
        if profile_signer is not None:
            from cryptography.hazmat.primitives import serialization

            signer_material = (
                profile_signer.key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()),
                profile_signer.certificate.public_bytes(Encoding.DER),
                tuple(c.public_bytes(Encoding.DER) for c in profile_signer.chain))
        ca_ders = tuple(c.public_bytes(Encoding.DER) for c in cas)
        fleet_in = fleet_inputs(fleet=fleet, identifier=ident, organization=config.fleet.organization,
                                ca_ders=ca_ders, allow_all_apps_access=config.profiles.allow_all_apps_access,
                                key_is_extractable=config.profiles.key_is_extractable,
                                signer_ders=(signer_material[1], *signer_material[2]) if signer_material else None)
        identity_in = fingerprint(IDENTITY_PKG_FORMAT, version, fleet, vendor.binary_path, vendor.daemon_label)
        wrapper_rel = f"{fleet}-1E-Client-{version}.pkg"
        wrapper_in = _wrapper_inputs(source.package, scripts, version, min_os, config, installer_signer)
        fleet_xml = {name: render_xml(doc) for name, doc in _fleet_profiles(config, cas, vendor).items()}

        for line in describe_removed(remove_stale(options.out_dir)):  # and puts back a build moved aside
            log(line)
        prev, passed_over = locate(options.out_dir, fleet, options.previous)
        notes += passed_over
        if prev is not None and prev.untrusted is None and prev.root in distrusted:
            prev = prev.distrust(distrusted[prev.root])
            notes.append(untrusted_note(prev))
        old = prev.manifest if prev is not None else None
        carry = prev is not None and prev.untrusted is None
        carry_devices = carry and not options.fresh
        listing = prev.files if prev is not None else {}  # what a device's carried files may be
        if carry_devices and prev.sealed:  # its secret files: inside secrets.tar.age
            listing = {**prev.files, **sealed_listing(prev)}
        prev_wrapper = (old or {}).get("wrapper") if isinstance((old or {}).get("wrapper"), dict) else {}
        wrapper_src = prev_wrapper if (carry and prev_wrapper.get("inputs") == wrapper_in
                                      and prev_wrapper.get("path") == wrapper_rel) else None
        signed_fleet = {}  # fleet profile -> its previous signed rendering, when the XML and signer are the same
        if carry and profile_signer is not None and (old.get("inputs") or {}).get("profile_signer") == fleet_in["profile_signer"]:
            for name, xml in fleet_xml.items():
                unsigned, signed = f"profiles/{name}.mobileconfig", f"profiles/{name}.signed.mobileconfig"
                if prev.files.get(unsigned, (None,))[0] == hashlib.sha256(xml).hexdigest() and signed in prev.files:
                    signed_fleet[name] = signed
        munki = config.targets.munki  # the names only matter to identity items' installable_condition
        munki_names = host_names(config.devices) if munki is not None and munki.identities else {}
        jobs = []
        for d, password in zip(config.devices, passwords):
            rec = prev.devices.get(d.hostname.casefold()) if prev is not None else None
            files = ()
            if rec is not None and carry_devices:
                files = tuple((r, *listing[r]) for r in (rec.get(k) for k in CARRIED) if r in listing)
            jobs.append(DeviceJob(d.hostname, d.serial, d.pfx, d.where, bytes(password), rec, files,
                                  tuple(munki_names.get(d.hostname, ()))))
        workers = min(options.jobs or os.cpu_count() or 1, max(1, len(jobs)))

        gc.freeze()  # before the worker pools fork (_forking)
        with staged_output(final, seal=seal, log=log) as stage:
            # 0. trust: the previous build's files are what its manifest says (every one hashed),
            # checked beside the build when its workers only link them (verdict before publishing);
            # a sealed one's secret files too, when an identity opens its secrets.tar.age
            opened = OpenedSeal()
            late = None
            if carry:
                items = listed_files(prev)
                known = load_record(prev.root, [rel for rel, _digest, _size in items])
                reads = carry_devices and _identity_packages(config.targets) and (  # packages rebuilt from its profiles
                    (old or {}).get("identity_inputs") != identity_in
                    or any(j.previous is not None and j.previous.get("identity_pkg") not in prev.files for j in jobs))
                if (workers > 1 and len(items) >= POOLED_CHECK_FILES and not stage.sealed and not reads
                        and not (carry_devices and prev.sealed)):
                    late = _LateCheck(prev.root, items, workers, known)
                    problems = []
                else:
                    problems = check_previous_files(prev.root, items, workers, known)
                    if not problems and carry_devices and prev.sealed:
                        carry_pkgs = old.get("identity_inputs") == identity_in
                        opened = open_sealed(prev, previous_keys, stage.root, _sealed_wanted(jobs, carry_pkgs))
                        problems = [opened.problem] if opened.problem else []
                if problems:
                    prev = prev.distrust(_trust_problem(problems))
                    notes.append(untrusted_note(prev))
                    carry = carry_devices = False
                    wrapper_src, signed_fleet = None, {}
            untrusted = prev.untrusted if prev is not None else None
            if opened.unopened:
                notes.append(unopened_note(prev, opened.unopened))
                carry_devices = False
            secrets = opened.spool.view() if opened.spool is not None else None

            # 1. devices: check + identities + their target files, in parallel, into the staging folder
            settings = DeviceSettings(
                staging=None if stage.sealed else stage.root, fleet=fleet, organization=config.fleet.organization, identifier=ident,
                version=version, at=options.at, ca_ders=ca_ders,
                allow_all_apps_access=config.profiles.allow_all_apps_access,
                key_is_extractable=config.profiles.key_is_extractable, binary_path=vendor.binary_path,
                daemon_label=vendor.daemon_label, identity_packages=_identity_packages(config.targets),
                profile_signer_pem=signer_material,
                target_info=None if stage.sealed else DeviceTargetInfo(fleet, version, min_os, config.targets),
                fleet_inputs=fleet_in, fleet_digest=fingerprint(fleet_in), has_previous=prev is not None,
                old_fleet=(old or {}).get("inputs"), carry_from=prev.root if carry_devices else None,
                carry_identity_pkgs=carry_devices and (old or {}).get("identity_inputs") == identity_in,
                fresh=options.fresh, untrusted=untrusted,
                previous_sealed=prev is not None and prev.sealed and secrets is None, previous_secrets=secrets)
            try:
                outcomes = run_devices(jobs, settings, workers, progress, _sealer(stage) if stage.sealed else None)
            finally:
                if opened.spool is not None:
                    secrets.close()
                    opened.spool.close()
            results = [o.result for o in outcomes]
            failed = [r for r in results if not r.ok]
            if failed and not options.skip_failed_devices:
                names = ", ".join(r.hostname for r in failed[:10]) + (" ..." if len(failed) > 10 else "")
                raise DevicesFailed(results, f"{len(failed)} device(s) fail the certificate rules: {names}")
            for outcome in outcomes:
                for f in outcome.files:  # a sealed build's: their bytes are in the seal already
                    stage.register(f.rel, kind=f.kind, secret=f.secret, signed=f.signer, sha256=f.sha256,
                                   size=f.size)
                stage.adopt(outcome.artifacts)
            built = [o for o in outcomes if o.device is not None]
            devices = tuple(o.device for o in built)
            records = [o.record for o in built]
            skipped = tuple(r.hostname for r in failed)

            # 2. the wrapper: carried forward when its inputs are the same, else built
            if wrapper_src is not None:
                sha256, size = prev.files[wrapper_rel]
                signed_by = wrapper_src.get("signed_by")
                _carry_previous(stage, prev.root, wrapper_rel, kind="wrapper-pkg", secret=False, signed=signed_by,
                                sha256=sha256, size=size)
                receipts = [Receipt(*r) for r in wrapper_src["receipts"]]  # identifier, version, kbytes, onConclusion
            else:
                unsigned = tmp / "wrapper-unsigned.pkg"
                receipts = build_wrapper(unsigned, config=config, vendor=vendor, version=version, min_os=min_os,
                                         script_ctx=script_ctx, scripts=scripts, tmp=tmp)
                signed_by = None
                if installer_signer is not None:
                    from ..formats.pkg.signing import sign_package

                    sign_package(unsigned, stage.path(wrapper_rel), installer_signer,
                                 timestamp_url=config.signing.timestamp_url)
                    signed_by = installer_signer.certificate.subject.rfc4514_string()
                else:
                    os.replace(unsigned, stage.path(wrapper_rel))
                stage.register(wrapper_rel, kind="wrapper-pkg", signed=signed_by)
            if signed_by is None:
                notes.append("the wrapper package is unsigned: Jamf MDM/PreStage installs, Intune LOB and "
                             "double-click installs need a Developer ID Installer signature ([signing])")

            # 3. fleet-wide profiles (a signed rendering carried forward when its XML and signer are the same)
            profile_paths: dict[str, tuple[str, str | None]] = {}
            for name, xml in fleet_xml.items():
                rel = f"profiles/{name}.mobileconfig"
                stage.write(rel, xml, kind=f"{name}-profile")
                signed_rel = None
                if profile_signer is not None:
                    signed_rel = f"profiles/{name}.signed.mobileconfig"
                    subject = profile_signer.subject
                    if name in signed_fleet:
                        sha256, size = prev.files[signed_rel]
                        _carry_previous(stage, prev.root, signed_rel, kind=f"{name}-profile-signed", secret=False,
                                        signed=subject, sha256=sha256, size=size)
                    else:
                        stage.write(signed_rel, sign_profile(xml, profile_signer), kind=f"{name}-profile-signed",
                                    signed=subject)
                profile_paths[name] = (rel, signed_rel)
            if profile_signer is None:
                notes.append("profiles are unsigned: fine for MDM upload; double-click installs show them as "
                             "unverified ([signing] profile_identity)")
            if config.targets.manual:
                notes.append("identity packages import each Mac's identity and CA certificates, but cannot "
                             "mark the root CA trusted (macOS 11+ asks an administrator): deliver "
                             "profiles/trust.mobileconfig by MDM or have the user approve it")

            # 4. what changed for the devices since the previous build
            wrapper_sha256 = stage.artifact(wrapper_rel).sha256
            old_sums = artifact_digests(old) if old is not None else {}  # sealed ones too (plaintext digests)
            device_changes = compare_devices(old, fleet_in, records, stage.digests(), skipped,
                                             fresh=options.fresh, untrusted=untrusted, old_sums=old_sums,
                                             old_records=prev.devices if prev is not None else {},
                                             sealed=settings.previous_sealed)
            removed = tuple((prev.devices[h.casefold()]["hostname"], prev.devices[h.casefold()].get("serial"))
                            for h in device_changes["devices"]["removed"])
            fleet_changed = tuple(name for name, (rel, _s) in profile_paths.items()
                                  if old_sums.get(rel) != stage.artifact(rel).sha256)
            changes = Changes(prev.name if prev is not None else None, options.fresh, untrusted,
                              wrapper_status(old, wrapper_sha256), removed, fleet_changed)

            info = BuildInfo(
                fleet=fleet, organization=config.fleet.organization, identifier=ident, version=version,
                vendor_identifier=vendor.identifier, vendor_version=vendor.version, wrapper=wrapper_rel,
                wrapper_signed_by=signed_by, receipts=tuple(receipts), minimum_os=min_os,
                binary_path=vendor.binary_path, daemon_label=vendor.daemon_label, conf_path=vendor.conf_path,
                needs_rosetta=vendor.needs_rosetta, support_dir=support_dir,
                client_settings=tuple(config.client.items),
                scripts=scripts,
                trust_profile=profile_paths["trust"][0], login_items_profile=profile_paths["login-items"][0],
                signed_trust_profile=profile_paths["trust"][1],
                signed_login_items_profile=profile_paths["login-items"][1],
                devices=devices, skipped_devices=skipped, targets=config.targets, built_at=build_datetime(),
                changes=changes)
            stage.write("uninstall.sh", info.scripts["uninstall.sh"].encode(), kind="uninstall-script",
                        executable=True)

            # 5. deployment targets (a sealed build's per-device ones here: its workers write no file),
            # the change set, DEPLOY.md
            from .targets.munki import IDENTITIES_WARNING

            write_targets(info, stage, per_device=stage.sealed, deploy=False)
            if config.targets.munki is not None and config.targets.munki.identities and devices:
                warnings.append(IDENTITIES_WARNING)
            file_changes = compare_artifacts(old, stage.digests(), wrapper_sha256, old_sums=old_sums)
            change_doc = assemble(old, device_changes, file_changes, fresh=options.fresh, untrusted=untrusted,
                                  sealed_note=opened.unopened)
            stage.write("changes.json", to_json(change_doc), kind="changes")
            write_deploy(info, stage, sections_of(config.targets), change_doc)

            stage.finish({"fleet": fleet, "version": version, "format": MANIFEST_FORMAT, "vendor": {
                "identifier": vendor.identifier, "version": vendor.version,
                "architectures": list(vendor.architectures), "team_id": vendor.team_id},
                "skipped_devices": list(skipped), "inputs": fleet_in, "identity_inputs": identity_in,
                "wrapper": {"path": wrapper_rel, "inputs": wrapper_in, "signed_by": signed_by,
                            "receipts": [[r.identifier, r.version, r.install_kbytes, r.on_conclusion]
                                         for r in receipts]},
                "devices": sorted(records, key=lambda r: r["hostname"])})
            artifacts = stage.artifacts
            if late is not None:
                problems = late.result()
                if problems:
                    raise _LateDistrust(prev.root, _trust_problem(problems))
    return BuildResult(final, info, results, artifacts, notes, warnings, change_doc)


def _identity_packages(targets) -> bool:
    """Per-Mac identity packages are made for the manual target and for opted-in Munki items."""
    return bool(targets.manual or (targets.munki is not None and targets.munki.identities))


def _fleet_profiles(config, cas, vendor) -> dict:
    from ..certs import is_self_signed
    from ..profiles import login_items_profile, trust_profile

    fleet, ident, org = config.fleet.name, config.fleet.identifier, config.fleet.organization
    return {
        "trust": trust_profile(fleet=fleet, organization=org, identifier_prefix=ident,
                               roots=[c for c in cas if is_self_signed(c)],
                               intermediates=[c for c in cas if not is_self_signed(c)]),
        "login-items": login_items_profile(fleet=fleet, organization=org, identifier_prefix=ident,
                                           label=vendor.daemon_label, team_id=vendor.team_id),
    }


def _wrapper_inputs(package: Path, scripts: dict, version: str, min_os: str, config, installer_signer) -> str:
    """The wrapper's inputs fingerprint: the vendor package's bytes, every rendered script, the
    version, macOS floor, identity, installer signer and timestamp server, fleetpkg's format."""
    from .changes import WRAPPER_FORMAT, fingerprint

    with open(package, "rb") as fh:
        vendor_sha256 = hashlib.file_digest(fh, "sha256").hexdigest()
    signer = None
    if installer_signer is not None:
        signer = [hashlib.sha256(c.public_bytes(Encoding.DER)).hexdigest()
                  for c in (installer_signer.certificate, *installer_signer.chain)]
    return fingerprint(WRAPPER_FORMAT, vendor_sha256, sorted(scripts.items()), version, min_os,
                       config.fleet.identifier, config.fleet.organization, signer, config.signing.timestamp_url)


def _rendered_scripts(ctx) -> dict:
    from .scripts import render_jamf_ea, render_wrapper_scripts

    scripts = dict(render_wrapper_scripts(ctx))
    scripts["jamf-ea.sh"] = render_jamf_ea(ctx)
    return scripts


class DevicesFailed(BuildError):
    """Some devices fail the rules; the build stops (exit 1) unless --skip-failed-devices."""

    exit_code = 1

    def __init__(self, results, message: str):
        super().__init__(message, hint="run `fleetpkg check` for details, or pass --skip-failed-devices")
        self.results = results
