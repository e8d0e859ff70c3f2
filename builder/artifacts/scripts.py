"""Render every shell script fleetpkg ships, plus the small data files those scripts read.

The scripts run on Macs as root (Installer, Munki, Jamf), so every value that reaches shell text
goes through the `shquote` filter, and values that reach line-oriented data files (fleet.conf,
doctor.conf) are refused when they could break a line. Rendering is pure and deterministic:
same context -> same bytes (no timestamps), so rebuilt packages are identical.

Which file goes where (the pipeline builds the packages; see `wrapper_payload_files`):
- `preinstall`  -> Scripts of `<identifier>.prepare` (mode 0755)
- `postinstall` -> Scripts of `<identifier>.configure` (mode 0755)
- configure Payload, under `support_dir`: `fleet.conf` 0644, `doctor.conf` 0644,
  `uninstall.sh` 0755, `doctor` 0755 (static, from payloads/)
- identity package Scripts: `preinstall`, `postinstall` (0755), the .p12 and CA .cer files,
  and IDENTITY_PASSWORD_FILE (0600), all of which the scripts delete after use.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, replace

from ..errors import ConfigError
from .resources import payloads_dir
from .templating import Stencil, hole, render, shquote

IDENTITY_PASSWORD_FILE = "identity.pass"
KEYCHAIN = "/Library/Keychains/System.keychain"
FLEET_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
# Characters that would end a line (or a C string) in the scripts' data files.
_LINE_BREAKERS = ("\n", "\r", "\0")


@dataclass(frozen=True)
class ScriptContext:
    fleet: str
    identifier: str
    version: str
    conf_path: str
    daemon_label: str
    daemon_plist: str
    binary_path: str
    needs_rosetta: bool
    client_settings: tuple[tuple[str, str], ...]
    receipts: tuple[str, ...]
    support_dir: str
    log_path: str


@dataclass(frozen=True)
class IdentityContext:
    fleet: str
    hostname: str
    binary_path: str
    p12_name: str
    ca_names: tuple[str, ...]
    label: str


@dataclass(frozen=True)
class PayloadFile:
    """One file of the configure component's payload: absolute install path, bytes, mode."""

    path: str
    data: bytes
    mode: int


def _single_line(value: str, key: str) -> None:
    if any(ch in value for ch in _LINE_BREAKERS):
        raise ConfigError("contains a line break or NUL", where=key, hint="use a single-line value")


def _absolute(value: str, key: str) -> None:
    _single_line(value, key)
    if not value.startswith("/") or value.rstrip("/") == "":
        raise ConfigError(f"not an absolute file path: {value!r}", where=key)
    if "/../" in value + "/" or "/./" in value + "/":
        raise ConfigError(f"path has '.' or '..' components: {value!r}", where=key)


def _plain_name(value: str, key: str) -> None:
    _single_line(value, key)
    if value in ("", ".", "..") or "/" in value:
        raise ConfigError(f"not a plain file name: {value!r}", where=key)


def _fleet(value: str, key: str) -> None:
    if not FLEET_NAME.match(value):
        raise ConfigError(f"fleet name {value!r} must be lowercase letters, digits and '-'", where=key)


def validate_context(ctx: ScriptContext) -> None:
    """Refuse values the scripts cannot carry safely (everything else is quoted)."""
    _fleet(ctx.fleet, "fleet.name")
    for key, value in (("fleet.identifier", ctx.identifier), ("version", ctx.version),
                       ("daemon label", ctx.daemon_label)):
        _single_line(value, key)
        if not value or any(ch.isspace() for ch in value):
            raise ConfigError(f"empty or contains whitespace: {value!r}", where=key)
    for key, value in (("conf path", ctx.conf_path), ("daemon plist", ctx.daemon_plist),
                       ("binary path", ctx.binary_path), ("support dir", ctx.support_dir),
                       ("log path", ctx.log_path)):
        _absolute(value, key)
    if not ctx.receipts:
        raise ConfigError("no package receipts to uninstall", where="receipts")
    for receipt in ctx.receipts:
        _single_line(receipt, "receipts")
        if not receipt or any(ch.isspace() for ch in receipt):
            raise ConfigError(f"bad package identifier {receipt!r}", where="receipts")
    for key, value in ctx.client_settings:
        where = f"[client] {key}"
        _single_line(key, where)
        _single_line(value, where)
        if not key or "=" in key or key != key.strip() or key[0] in "#;":
            raise ConfigError("setting names must be non-empty, without '=', surrounding spaces "
                              "or a leading '#'/';'", where=where)


def validate_identity(ctx: IdentityContext) -> None:
    _fleet(ctx.fleet, "fleet.name")
    _single_line(ctx.hostname, "hostname")
    if not ctx.hostname.strip() or ctx.hostname != ctx.hostname.strip():
        raise ConfigError(f"bad hostname {ctx.hostname!r}", where="devices.csv hostname")
    _absolute(ctx.binary_path, "binary path")
    _plain_name(ctx.p12_name, "identity file name")
    for name in ctx.ca_names:
        _plain_name(name, "CA file name")
    names = [ctx.p12_name, IDENTITY_PASSWORD_FILE, "preinstall", "postinstall", *ctx.ca_names]
    if len(set(names)) != len(names):
        raise ConfigError("file names in the identity package's Scripts folder collide",
                          where="identity package", hint=", ".join(sorted(names)))
    _single_line(ctx.label, "daemon label")


def _setting(settings: tuple[tuple[str, str], ...], name: str) -> str:
    """The last value of a [client] key, matched case-insensitively like the 1E Client does."""
    found = ""
    for key, value in settings:
        if key.lower() == name.lower():
            found = value
    return found


def render_fleet_conf(ctx: ScriptContext) -> str:
    lines = [f"# fleetpkg {ctx.fleet} {ctx.version}: the fleet's [client] settings.",
             "# Merged into 1E.Client.conf by the configure postinstall; the fleet wins for these keys.",
             *(f"{key}={value}" for key, value in ctx.client_settings)]
    return "\n".join(lines) + "\n"


def render_doctor_conf(ctx: ScriptContext) -> str:
    """key=value lines the static doctor script parses (never sources: no code in data)."""
    values = (
        ("fleet", ctx.fleet),
        ("version", ctx.version),
        ("label", ctx.daemon_label),
        ("plist", ctx.daemon_plist),
        ("binary", ctx.binary_path),
        ("conf", ctx.conf_path),
        ("needs_rosetta", "1" if ctx.needs_rosetta else "0"),
        ("switch", _setting(ctx.client_settings, "Switch")),
        ("background_channel_url", _setting(ctx.client_settings, "BackgroundChannelUrl")),
    )
    lines = [f"# fleetpkg {ctx.fleet} {ctx.version}: what the health check expects on this Mac."]
    lines += [f"{key}={value}" for key, value in values]
    return "\n".join(lines) + "\n"


def render_wrapper_scripts(ctx: ScriptContext) -> dict[str, str]:
    validate_context(ctx)
    values = {"ctx": ctx, "backup_path": f"{ctx.support_dir}/backup/1E.Client.conf.local",
              "fleet_conf_path": f"{ctx.support_dir}/fleet.conf"}
    return {
        "preinstall": render("wrapper-preinstall.sh.j2", **values),
        "postinstall": render("wrapper-postinstall.sh.j2", **values),
        "uninstall.sh": render("uninstall.sh.j2", **values),
        "doctor.conf": render_doctor_conf(ctx),
        "fleet.conf": render_fleet_conf(ctx),
    }


def doctor_script() -> str:
    """The static health check (payloads/doctor); one file serves every fleet."""
    return (payloads_dir() / "doctor").read_text(encoding="utf-8")


def wrapper_payload_files(ctx: ScriptContext, rendered: dict[str, str] | None = None) -> tuple[PayloadFile, ...]:
    """The configure component's payload, sorted by path (owner root:wheel); `rendered` is
    render_wrapper_scripts(ctx) when the caller already has it."""
    rendered = rendered if rendered is not None else render_wrapper_scripts(ctx)
    files = (
        PayloadFile(f"{ctx.support_dir}/doctor", doctor_script().encode(), 0o755),
        PayloadFile(f"{ctx.support_dir}/doctor.conf", rendered["doctor.conf"].encode(), 0o644),
        PayloadFile(f"{ctx.support_dir}/fleet.conf", rendered["fleet.conf"].encode(), 0o644),
        PayloadFile(f"{ctx.support_dir}/uninstall.sh", rendered["uninstall.sh"].encode(), 0o755),
    )
    return tuple(sorted(files, key=lambda f: f.path))


def render_identity_scripts(ctx: IdentityContext) -> dict[str, str]:
    """The identity package's scripts: the Jinja2 render (_render_identity) byte for byte, made
    from a stencil rendered once per build (only the hostname and .p12 name differ per Mac)."""
    validate_identity(ctx)
    stencils = _identity_stencils(ctx.fleet, ctx.binary_path, ctx.ca_names, ctx.label)
    if stencils is None:
        return _render_identity(ctx)
    values = (ctx.hostname, ctx.p12_name)
    return {name: stencil.fill(values) for name, stencil in stencils.items()}


# Used once per stencil: a render of it must equal the Jinja2 render for this hostile probe.
_PROBE = ("Probe's $(x) `y` \\z\t\"q\"", "p 'q' $r.p12")


@functools.lru_cache(maxsize=8)
def _identity_stencils(fleet: str, binary_path: str, ca_names: tuple[str, ...],
                       label: str) -> dict[str, Stencil] | None:
    """Stencils of the identity scripts for everything but the hostname and .p12 name (holes 0
    and 1); None when they would not reproduce the Jinja2 render of the probe (a template using
    the hostname other than as {{ value }} or {{ value | shquote }}): then every Mac renders."""
    shape = IdentityContext(fleet=fleet, hostname=hole(0), binary_path=binary_path, p12_name=hole(1),
                            ca_names=ca_names, label=label)
    stencils = {name: Stencil.from_rendered(text, len(_PROBE)) for name, text in _render_identity(shape).items()}
    probe = replace(shape, hostname=_PROBE[0], p12_name=_PROBE[1])
    if any(stencils[name].fill(_PROBE) != text for name, text in _render_identity(probe).items()):
        return None
    return stencils


def _render_identity(ctx: IdentityContext) -> dict[str, str]:
    values = {"ctx": ctx, "keychain": KEYCHAIN, "password_file": IDENTITY_PASSWORD_FILE,
              "log_path": f"/var/log/fleetpkg-{ctx.fleet}.log",
              "override_file": f"/Library/Application Support/fleetpkg/{ctx.fleet}/allow-any-host"}
    return {
        "preinstall": render("identity-preinstall.sh.j2", **values),
        "postinstall": render("identity-postinstall.sh.j2", **values),
    }


def render_jamf_ea(ctx: ScriptContext) -> str:
    validate_context(ctx)
    return render("jamf-ea.sh.j2", ctx=ctx, doctor_path=f"{ctx.support_dir}/doctor")


__all__ = [
    "IDENTITY_PASSWORD_FILE", "IdentityContext", "PayloadFile", "ScriptContext", "doctor_script",
    "render_doctor_conf", "render_fleet_conf", "render_identity_scripts", "render_jamf_ea",
    "render_wrapper_scripts", "shquote", "validate_context", "validate_identity",
    "wrapper_payload_files",
]
