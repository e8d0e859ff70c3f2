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

import hashlib
import os
import signal
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .buildinfo import BuildInfo, DeviceArtifacts, Receipt
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


@dataclass
class BuildResult:
    output: Path
    info: BuildInfo
    device_results: list  # builder.artifacts.checking.DeviceResult, inventory order
    artifacts: list  # builder.artifacts.dist.Artifact
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # risks the admin chose (said as "warning:")


# -- per-device work (runs in worker processes) --------------------------------------------------

@dataclass(frozen=True)
class DeviceJob:
    hostname: str
    serial: str | None
    pfx: Path
    where: str
    password: bytes


@dataclass(frozen=True)
class DeviceSettings:
    """Everything a worker needs besides the device: picklable, no secrets but the signer key
    (which reaches workers through the pool's pipe, never a file)."""

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
    files: tuple[WrittenFile, ...]
    artifacts: DeviceArtifacts | None


_settings: DeviceSettings | None = None
_cas: list[x509.Certificate] = []
_signer = None


def _init_worker(settings: DeviceSettings, in_worker: bool = False) -> None:
    global _settings, _signer
    _settings = settings
    if in_worker:  # a forked worker inherits the build's SIGTERM handler (staged_output's cleanup),
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # but the pool stops its workers with SIGTERM
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _cas[:] = [x509.load_der_x509_certificate(d) for d in settings.ca_ders]
    _signer = None
    if settings.profile_signer_pem:
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        from ..profiles import ProfileSigner

        key_pem, cert_der, chain = settings.profile_signer_pem
        _signer = ProfileSigner(x509.load_der_x509_certificate(cert_der), load_pem_private_key(key_pem, None),
                                tuple(x509.load_der_x509_certificate(c) for c in chain))


def _exit_with_parent(parent: int) -> None:
    """A worker whose build was SIGKILLed would wait for work forever (its siblings keep the task
    pipe open), holding the signer's key in memory: it ends when its parent is gone."""
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(70)


def _write_file(staging: Path | None, rel: str, data: bytes, kind: str, signer: str | None = None) -> WrittenFile:
    """A secret per-device file, 0600 from its creation; with staging None (a sealed build) not
    written at all but handed back to the parent. The one place workers put secrets anywhere."""
    digest = hashlib.sha256(data).hexdigest()
    if staging is None:
        return WrittenFile(rel, kind, True, signer, digest, len(data), data)
    path = staging / rel
    _make_folders(staging, path.parent)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
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


def _device_work(job: DeviceJob) -> tuple[str, object]:
    """("ok", DeviceOutcome) or ("error", message): user errors cross the process boundary as text."""
    try:
        return "ok", build_device(job, _settings, _cas, _signer)
    except FleetpkgError as exc:
        return "error", str(exc)


def build_device(job: DeviceJob, s: DeviceSettings, cas: list[x509.Certificate], signer) -> DeviceOutcome:
    from ..certs import build_chain, is_self_signed, reencode_for_macos
    from .checking import judge_device

    identity, result = judge_device(job.hostname, job.pfx, job.password, cas, s.at)
    if not result.ok:  # failing rules, or a .pfx that gave no identity: a failed device
        return DeviceOutcome(result, (), None)

    chain = build_chain(identity.certificate, cas, identity.extra_certificates, s.at)
    roots = [c for c in chain if is_self_signed(c)]
    intermediates = [c for c in chain if not is_self_signed(c)]
    files: list[WrittenFile] = []

    from ..profiles import device_profile, render_xml, sign_profile

    encoded = reencode_for_macos(identity, chain=chain, friendly_name=job.hostname.encode())
    profile = device_profile(fleet=s.fleet, organization=s.organization, identifier_prefix=s.identifier,
                             hostname=job.hostname, p12=encoded.p12, p12_password=encoded.password,
                             roots=roots, intermediates=intermediates,
                             allow_all_apps_access=s.allow_all_apps_access,
                             key_is_extractable=s.key_is_extractable,
                             certificate=identity.certificate)  # reencode_for_macos checked the p12
    xml = render_xml(profile)
    rel = f"profiles/devices/{job.hostname}.mobileconfig"
    files.append(_write_file(s.staging, rel, xml, "device-profile"))
    signed_rel = None
    if signer is not None:
        signed_rel = f"profiles/devices/{job.hostname}.signed.mobileconfig"
        files.append(_write_file(s.staging, signed_rel, sign_profile(xml, signer), "device-profile-signed",
                                 signer.certificate.subject.rfc4514_string()))

    pkg_rel = pkg_id = None
    if s.identity_packages:
        pkg_rel, pkg_id = f"identity/{job.hostname}.pkg", identity_package_id(s.identifier, job.hostname)
        # the identity package gets its own fresh PKCS#12 and password: artifacts never share secrets
        own = reencode_for_macos(identity, chain=chain, friendly_name=job.hostname.encode())
        pkg = _build_identity_package(s, job.hostname, pkg_id, own, roots + intermediates)
        files.append(_write_file(s.staging, pkg_rel, pkg, "identity-pkg"))
    arts = DeviceArtifacts(job.hostname, job.serial, result.not_after, rel, signed_rel, pkg_rel, pkg_id,
                           s.version if pkg_rel else None)
    return DeviceOutcome(result, tuple(files), arts)


def identity_package_id(prefix: str, hostname: str) -> str:
    return f"{prefix}.identity.{hostname.lower()}"


def _build_identity_package(s: DeviceSettings, hostname: str, pkg_id: str, encoded, cas) -> bytes:
    """The package, built in memory (no file, no temporary file)."""
    from ..formats.pkg.package import build_component
    from .scripts import IDENTITY_PASSWORD_FILE, IdentityContext, render_identity_scripts

    ca_names = tuple(f"ca-{i + 1}.cer" for i in range(len(cas)))
    p12_name = f"{hostname}.p12"
    scripts = render_identity_scripts(IdentityContext(
        fleet=s.fleet, hostname=hostname, binary_path=s.binary_path, p12_name=p12_name,
        ca_names=ca_names, label=s.daemon_label))
    files: dict[str, tuple[bytes, int]] = {
        "preinstall": (scripts["preinstall"].encode(), 0o755),
        "postinstall": (scripts["postinstall"].encode(), 0o755),
        p12_name: (encoded.p12, 0o600),
        IDENTITY_PASSWORD_FILE: (encoded.password.encode(), 0o600),
    }
    for name, cert in zip(ca_names, cas):
        files[name] = (cert.public_bytes(Encoding.DER), 0o644)
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
        outcomes.append(take(value) if take else value)
        if progress:
            progress(len(outcomes), total)

    if workers <= 1 or total <= 1:
        _init_worker(settings)
        for job in jobs:
            done(_device_work(job))
        return outcomes
    chunk = max(1, min(64, total // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(settings, True)) as pool:
        try:
            for item in pool.map(_device_work, jobs, chunksize=chunk):
                done(item)
        except BrokenProcessPool:
            raise BuildError("a worker process died (killed, or out of memory); the build stopped and "
                             "removed what it had written", hint="run the build again; try --jobs 1 if "
                             "memory is short") from None
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outcomes


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

def run_build(config, options: BuildOptions, *, progress: Callable[[int, int], None] | None = None,
              log: Callable[[str], None] = lambda _m: None) -> BuildResult:
    from ..certs import is_self_signed, load_ca_files
    from .dist import staged_output
    from ..fleet.intake import resolve_vendor_package
    from ..fleet.passwords import PasswordResolver
    from ..profiles import login_items_profile, render_xml, sign_profile, trust_profile
    from .scripts import ScriptContext
    from ..fleet.vendor import inspect_vendor

    notes: list[str] = []
    warnings: list[str] = []
    seal = seal_for(config, options)  # a bad recipient stops the build before any work
    resolver = PasswordResolver(ask=options.ask_password)
    passwords = [resolver.resolve(d.password, d.where) for d in config.devices]
    cas = load_ca_files(list(config.trust.certificates))
    installer_signer = _load_installer_signer(config, resolver)
    profile_signer = _load_profile_signer(config, resolver)
    if installer_signer is not None:
        notes += list(installer_signer.warnings)

    with tempfile.TemporaryDirectory(prefix="fleetpkg-build-") as tmpname:
        tmp = Path(tmpname)
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

        with staged_output(final, seal=seal, log=log) as stage:
            # 1. devices: check + identities, in parallel, straight into the staging folder
            signer_material = None
            if profile_signer is not None:
                from cryptography.hazmat.primitives import serialization

                signer_material = (
                    profile_signer.key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption()),
                    profile_signer.certificate.public_bytes(Encoding.DER),
                    tuple(c.public_bytes(Encoding.DER) for c in profile_signer.chain))
            settings = DeviceSettings(
                staging=None if stage.sealed else stage.root, fleet=fleet, organization=config.fleet.organization, identifier=ident,
                version=version, at=options.at, ca_ders=tuple(c.public_bytes(Encoding.DER) for c in cas),
                allow_all_apps_access=config.profiles.allow_all_apps_access,
                key_is_extractable=config.profiles.key_is_extractable, binary_path=vendor.binary_path,
                daemon_label=vendor.daemon_label, identity_packages=_identity_packages(config.targets),
                profile_signer_pem=signer_material)
            jobs = [DeviceJob(d.hostname, d.serial, d.pfx, d.where, bytes(p)) for d, p in zip(config.devices, passwords)]
            workers = min(options.jobs or os.cpu_count() or 1, max(1, len(jobs)))
            outcomes = run_devices(jobs, settings, workers, progress, _sealer(stage) if stage.sealed else None)
            results = [o.result for o in outcomes]
            failed = [r for r in results if not r.ok]
            if failed and not options.skip_failed_devices:
                names = ", ".join(r.hostname for r in failed[:10]) + (" ..." if len(failed) > 10 else "")
                raise DevicesFailed(results, f"{len(failed)} device(s) fail the certificate rules: {names}")
            for outcome in outcomes:
                for f in outcome.files:
                    stage.register(f.rel, kind=f.kind, secret=f.secret, signed=f.signer, sha256=f.sha256,
                                   size=f.size)
            devices = tuple(o.artifacts for o in outcomes if o.artifacts is not None)
            skipped = tuple(r.hostname for r in failed)

            # 2. the wrapper
            wrapper_rel = f"{fleet}-1E-Client-{version}.pkg"
            unsigned = tmp / "wrapper-unsigned.pkg"
            scripts = _rendered_scripts(script_ctx)
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
                notes.append("the wrapper package is unsigned: Jamf MDM/PreStage installs, Intune LOB and "
                             "double-click installs need a Developer ID Installer signature ([signing])")
            stage.register(wrapper_rel, kind="wrapper-pkg", signed=signed_by)

            # 3. fleet-wide profiles
            roots = [c for c in cas if is_self_signed(c)]
            intermediates = [c for c in cas if not is_self_signed(c)]
            fleet_profiles = {
                "trust": trust_profile(fleet=fleet, organization=config.fleet.organization,
                                       identifier_prefix=ident, roots=roots, intermediates=intermediates),
                "login-items": login_items_profile(fleet=fleet, organization=config.fleet.organization,
                                                   identifier_prefix=ident, label=vendor.daemon_label,
                                                   team_id=vendor.team_id),
            }
            profile_paths: dict[str, tuple[str, str | None]] = {}
            for name, doc in fleet_profiles.items():
                xml = render_xml(doc)
                rel = f"profiles/{name}.mobileconfig"
                stage.write(rel, xml, kind=f"{name}-profile")
                signed_rel = None
                if profile_signer is not None:
                    signed_rel = f"profiles/{name}.signed.mobileconfig"
                    stage.write(signed_rel, sign_profile(xml, profile_signer), kind=f"{name}-profile-signed",
                                signed=profile_signer.certificate.subject.rfc4514_string())
                profile_paths[name] = (rel, signed_rel)
            if profile_signer is None:
                notes.append("profiles are unsigned: fine for MDM upload; double-click installs show them as "
                             "unverified ([signing] profile_identity)")
            if config.targets.manual:
                notes.append("identity packages import each Mac's identity and CA certificates, but cannot "
                             "mark the root CA trusted (macOS 11+ asks an administrator): deliver "
                             "profiles/trust.mobileconfig by MDM or have the user approve it")

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
                devices=devices, skipped_devices=skipped, targets=config.targets, built_at=build_datetime())
            stage.write("uninstall.sh", info.scripts["uninstall.sh"].encode(), kind="uninstall-script",
                        executable=True)

            # 4. deployment targets
            from .targets import write_targets
            from .targets.munki import IDENTITIES_WARNING

            write_targets(info, stage)
            if config.targets.munki is not None and config.targets.munki.identities and devices:
                warnings.append(IDENTITIES_WARNING)

            stage.finish({"fleet": fleet, "version": version, "vendor": {
                "identifier": vendor.identifier, "version": vendor.version,
                "architectures": list(vendor.architectures), "team_id": vendor.team_id},
                "skipped_devices": list(skipped)})
            artifacts = stage.artifacts
    return BuildResult(final, info, results, artifacts, notes, warnings)


def _identity_packages(targets) -> bool:
    """Per-Mac identity packages are made for the manual target and for opted-in Munki items."""
    return bool(targets.manual or (targets.munki is not None and targets.munki.identities))


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
