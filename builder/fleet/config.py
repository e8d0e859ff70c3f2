"""fleet.toml -> FleetConfig (frozen dataclasses, builder/fleet/model.py), or one ConfigError line.

Everything a user can get wrong is caught here, before anything is built: unknown keys (with the
closest valid one suggested), wrong types, missing files, unsafe 1E.Client.conf values. Paths in
fleet.toml are relative to its folder; stored paths are absolute. The device inventory is read by
inventory.py. Passwords are not read here: devices carry a PasswordSource, resolved later (see
passwords.py).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import ConfigError
from .fields import decode_text, existing_file, suggest
from .inventory import load_devices
from .model import (ClientSettings, Device, Enroll, Fleet, FleetConfig, Inventory, MunkiTarget, Profiles,
                    Secrets, Signing, SigningIdentity, Targets, Trust, Vendor, split_list)
from .passwords import ENV_NAME, ChallengeSource, PasswordSource

__all__ = ["ClientSettings", "Device", "Enroll", "Fleet", "FleetConfig", "Inventory", "MunkiTarget",
           "Profiles", "Secrets", "Signing", "SigningIdentity", "Targets", "Trust", "Vendor", "load_config"]
# ---------------------------------------------------------------------------------------------
# Loading

TABLES = ("fleet", "vendor", "client", "trust", "devices", "signing", "profiles", "targets",
          "enroll", "secrets")
REQUIRED_TABLES = ("fleet", "vendor", "client", "trust", "devices")

_FLEET_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,63}\Z")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_IDENTIFIER = re.compile(rf"{_LABEL}(?:\.{_LABEL})+\Z")
_DNS = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\Z")
_OS_VERSION = re.compile(r"(\d{2})(?:\.\d{1,3}){0,2}\Z")
_MUNKI_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
# C0/C1 controls and Unicode line/paragraph separators: anything a line reader might split on
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def load_config(path: str | os.PathLike[str]) -> FleetConfig:
    """Read and validate a fleet; raises ConfigError with one line naming file, key and fix."""
    shown = str(path)
    path = Path(path)
    doc = _read_toml(path, shown)
    root = path.absolute().parent
    shown_root = Path(shown).parent
    ctx = _Ctx(shown, root, shown_root)

    for key, value in doc.items():
        if key not in TABLES:
            kind = "table" if isinstance(value, dict) else "top-level key"
            raise ConfigError(f"unknown {kind} [{key}]" if kind == "table"
                              else f"unknown top-level key {key!r}", where=shown,
                              hint=suggest(key, TABLES, "table", brackets=True))
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a table ([{key}]), not {_typename(value)}",
                              where=shown)
    for name in REQUIRED_TABLES:
        if name not in doc:
            raise ConfigError(f"missing required table [{name}]", where=shown,
                              hint="see `fleetpkg init` for a commented example")

    fleet = _load_fleet(_Table(ctx, "fleet", doc["fleet"]))
    vendor = _load_vendor(_Table(ctx, "vendor", doc["vendor"]))
    client = _load_client(ctx, doc["client"])
    trust = _load_trust(_Table(ctx, "trust", doc["trust"]))
    inventory = _load_inventory(_Table(ctx, "devices", doc["devices"]))
    devices = load_devices(inventory, ctx.root, ctx.shown_root)
    signing = _load_signing(_Table(ctx, "signing", doc.get("signing", {})))
    profiles = _load_profiles(_Table(ctx, "profiles", doc.get("profiles", {})))
    targets = _load_targets(_Table(ctx, "targets", doc.get("targets", {})))
    enroll = _load_enroll(_Table(ctx, "enroll", doc["enroll"])) if "enroll" in doc else None
    secrets = _load_secrets(_Table(ctx, "secrets", doc.get("secrets", {})))
    return FleetConfig(path.absolute(), fleet, vendor, client, trust, inventory, devices,
                       signing, profiles, targets, enroll, secrets)


def _read_toml(path: Path, shown: str) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such file", where=shown,
                          hint="create one with `fleetpkg init`") from None
    except IsADirectoryError:
        raise ConfigError("is a directory, not a fleet.toml", where=shown) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=shown) from None
    text = decode_text(raw, shown)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = " ".join(str(exc).split())
        m = re.search(r"\(at line (\d+), column (\d+)\)", msg)
        where = shown
        if m:
            where = f"{shown}:{m.group(1)}"
            msg = msg[: m.start()].rstrip() + f" (column {m.group(2)})"
        raise ConfigError(f"invalid TOML: {msg}", where=where) from None


@dataclass(frozen=True)
class _Ctx:
    shown: str  # fleet.toml as the user named it
    root: Path  # its folder, absolute
    shown_root: Path  # its folder as the user named it (for messages)


def _typename(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    return {
        str: "a string", int: "an integer", float: "a float", list: "an array",
        dict: "a table",
    }.get(type(value), f"a {type(value).__name__}")


class _Table:
    """Typed access to one TOML table; finish() rejects the keys nobody asked for."""

    def __init__(self, ctx: _Ctx, name: str, data: dict[str, Any]):
        self.ctx, self.name, self.data = ctx, name, data
        self.known: list[str] = []

    def err(self, key: str | None, message: str, hint: str | None = None) -> ConfigError:
        label = f"{self.name}.{key}" if key else f"[{self.name}]"
        return ConfigError(f"{label}: {message}", where=self.ctx.shown, hint=hint)

    def get(self, key: str, types: tuple[type, ...], required: bool, default: Any = None,
            hint: str | None = None) -> Any:
        self.known.append(key)
        if key not in self.data:
            if required:
                raise ConfigError(f"[{self.name}] missing required key '{key}'",
                                  where=self.ctx.shown, hint=self._missing_hint(key))
            return default
        value = self.data[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            want = " or ".join(_typename(t()) for t in types)
            raise self.err(key, f"expected {want}, got {_typename(value)}", hint)
        return value

    def _missing_hint(self, key: str) -> str | None:
        stray = [k for k in self.data if k not in self.known]
        close = difflib.get_close_matches(key, stray, n=1, cutoff=0.6)
        return f"is '{close[0]}' a typo for '{key}'?" if close else None

    def string(self, key: str, required: bool = False, default: str | None = None) -> str | None:
        value = self.get(key, (str,), required, default)
        if value is not None and key in self.data:
            if _CONTROL.search(value):
                raise self.err(key, "contains a control character (newline, tab, NUL...)")
            if value.strip() == "":
                raise self.err(key, "must not be empty")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        return self.get(key, (bool,), False, default, hint=f"write {key} = true or false")

    def path(self, key: str, required: bool = False, suffixes: tuple[str, ...] = ()) -> Path | None:
        value = self.string(key, required)
        if value is None:
            return None
        return existing_file(self.ctx.root, self.ctx.shown_root, value,
                              f"{self.ctx.shown}: {self.name}.{key}", suffixes)

    def paths(self, key: str, required: bool = False) -> tuple[Path, ...]:
        value = self.get(key, (list, str), required, [])
        items = [value] if isinstance(value, str) else value
        if required and not items:
            raise self.err(key, "must list at least one file")
        out: list[Path] = []
        for i, item in enumerate(items):
            if not isinstance(item, str) or not item.strip() or _CONTROL.search(item):
                raise self.err(key, f"item {i + 1} must be a non-empty path string")
            p = existing_file(self.ctx.root, self.ctx.shown_root, item,
                               f"{self.ctx.shown}: {self.name}.{key}")
            if p in out:
                raise self.err(key, f"lists {item!r} twice")
            out.append(p)
        return tuple(out)

    def password(self, prefix: str = "") -> PasswordSource | None:
        env_key, file_key = f"{prefix}password_env", f"{prefix}password_file"
        env = self.string(env_key)
        pw_file = self.string(file_key)
        if env is not None and pw_file is not None:
            raise self.err(None, f"set either {env_key} or {file_key}, not both")
        if env is not None:
            if not ENV_NAME.match(env):
                raise self.err(env_key, "is not an environment variable name (value not shown)",
                               hint="write the variable's name, e.g. FLEET_PFX_PASSWORD, "
                                    "never the password itself")
            return PasswordSource("env", env)
        if pw_file is not None:
            p = existing_file(self.ctx.root, self.ctx.shown_root, pw_file,
                               f"{self.ctx.shown}: {self.name}.{file_key}")
            return PasswordSource("file", str(p))
        return None

    def finish(self) -> None:
        for key in self.data:
            if key not in self.known:
                raise ConfigError(f"[{self.name}] unknown key '{key}'", where=self.ctx.shown,
                                  hint=suggest(key, self.known))


def _load_fleet(t: _Table) -> Fleet:
    name = t.string("name", required=True)
    if not _FLEET_NAME.match(name):
        raise t.err("name", f"{name!r} must be lowercase letters, digits and '-' (max 64), "
                            "starting with a letter or digit",
                    hint="it is used in file names, e.g. name = \"acme-prod\"")
    organization = t.string("organization", required=True)
    if organization != organization.strip():
        raise t.err("organization", "has leading or trailing spaces")
    identifier = t.string("identifier", required=True)
    if not _IDENTIFIER.match(identifier) or len(identifier) > 155:
        raise t.err("identifier", f"{identifier!r} is not a reverse-DNS identifier",
                    hint="e.g. identifier = \"com.acme.1e-client\" (letters, digits, '-', '.')")
    build = t.get("build", (int,), False, 1, hint="write build = 1 (a whole number, no quotes)")
    if build < 0:
        raise t.err("build", "must be 0 or more")
    minimum_os = t.get("minimum_os", (str,), False, None,
                       hint="quote it: minimum_os = \"11.0\"")
    if minimum_os is not None:
        m = _OS_VERSION.match(minimum_os)
        if not m or not 10 <= int(m.group(1)) <= 99:
            raise t.err("minimum_os", f"{minimum_os!r} is not a macOS version",
                        hint="e.g. minimum_os = \"11.0\"")
    t.finish()
    return Fleet(name, organization, identifier, build, minimum_os)


def _load_vendor(t: _Table) -> Vendor:
    package = t.path("package", required=True, suffixes=(".pkg", ".dmg", ".zip"))
    allow = t.boolean("allow_foreign_vendor", False)
    t.finish()
    return Vendor(package, allow)


# ---------------------------------------------------------------------------------------------
# [client]: 1E.Client.conf settings

def _client_text(ctx: _Ctx, key: str, value: Any) -> str:
    where = ctx.shown
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"client.{key}: expected a string, integer or boolean, got "
                      f"{_typename(value)}", where=where,
                      hint=f"quote it: {key} = \"...\"")


def _check_client_key(ctx: _Ctx, key: str) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"[client] key {key!r} {why}", where=ctx.shown,
                           hint="1E.Client.conf keys are single words like LoggingLevel")

    if key == "":
        raise bad("is empty")
    if _CONTROL.search(key):
        raise bad("contains a control character (newline, NUL...)")
    if key != key.strip():
        raise bad("has leading or trailing spaces")
    if any(c.isspace() for c in key):
        raise bad("contains a space")
    if "=" in key:
        raise bad("contains '='")
    if key[0] in "#;[":
        raise bad(f"starts with {key[0]!r}, which 1E.Client.conf reads as a comment or section")


def _check_client_value(ctx: _Ctx, key: str, value: str) -> None:
    def bad(why: str) -> ConfigError:
        return ConfigError(f"client.{key}: value {why}", where=ctx.shown)

    if "\n" in value or "\r" in value:
        raise bad("contains a newline (it would inject another setting)")
    if "\x00" in value:
        raise bad("contains a NUL character")
    if _CONTROL.search(value):
        raise bad("contains a control character")
    if value != value.strip():
        raise bad("has leading or trailing spaces (1E.Client.conf would drop them)")


def _valid_host(host: str) -> bool:
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
            return True
        except ValueError:
            return False
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
            return True
        except ValueError:
            return False
    return len(host) <= 253 and bool(_DNS.match(host))


def validate_switch(value: str) -> tuple[str, ...]:
    """host:port[,|;host:port...] -> the entries; ValueError saying what is wrong."""
    entries = split_list(value)
    for entry in entries:
        if entry == "":
            raise ValueError(f"{value!r} has an empty entry (stray ',' or ';')")
        host, sep, port = entry.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{entry!r} is not host:port")
        if not _valid_host(host):
            raise ValueError(f"{entry!r}: {host!r} is not a valid host name or IP address")
        if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"{entry!r}: port must be a number from 1 to 65535")
    return tuple(entries)


def validate_https_url(value: str) -> tuple[str, ...]:
    """https URL(s), ','/';' separated like Switch (a DMZ URL may follow); ValueError if bad."""
    entries = split_list(value)
    for entry in entries:
        if entry == "":
            raise ValueError(f"{value!r} has an empty entry (stray ',' or ';')")
        try:
            parts = urlsplit(entry)
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{entry!r} is not a valid URL ({exc})") from None
        if parts.scheme.lower() != "https":
            raise ValueError(f"{entry!r} must start with https://")
        host = parts.hostname or ""
        if not host or not _valid_host(f"[{host}]" if ":" in host else host):
            raise ValueError(f"{entry!r} has no valid host name")
        if port == 0 or any(c.isspace() for c in entry) or parts.username or parts.password:
            raise ValueError(f"{entry!r} is not a plain https://host[:port]/path URL")
    return tuple(entries)


_REQUIRED_CLIENT = {
    "Switch": (validate_switch, "e.g. Switch = \"tachyon.acme.local:4000\""),
    "BackgroundChannelUrl": (validate_https_url,
                             "e.g. BackgroundChannelUrl = \"https://tachyon.acme.local/Background\""),
}


def _flatten(data: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Unquoted dotted keys (Module.Inventory.Enabled = true) are nested tables in TOML; the
    1E.Client.conf key is the dotted name, so flatten them back."""
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        if isinstance(value, dict):
            out += _flatten(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def _load_client(ctx: _Ctx, data: dict[str, Any]) -> ClientSettings:
    items: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    flat = _flatten(data)
    for key, raw in flat:
        _check_client_key(ctx, key)
        folded = key.casefold()
        if folded in seen:
            if seen[folded] == key:
                raise ConfigError(f"[client] key '{key}' is given twice (quoted and dotted)",
                                  where=ctx.shown)
            raise ConfigError(f"[client] keys '{seen[folded]}' and '{key}' differ only in case",
                              where=ctx.shown,
                              hint="the 1E Client reads keys case-insensitively: keep one")
        seen[folded] = key
        value = _client_text(ctx, key, raw)
        _check_client_value(ctx, key, value)
        items.append((key, value))
    settings = ClientSettings(tuple(items))
    for required, (validate, example) in _REQUIRED_CLIENT.items():
        value = settings.get(required)
        if value is None:
            stray = [k for k, _ in flat
                     if k.casefold() not in {r.casefold() for r in _REQUIRED_CLIENT}]
            close = difflib.get_close_matches(required, stray, n=1, cutoff=0.6)
            hint = f"is '{close[0]}' a typo for '{required}'?" if close else example
            raise ConfigError(f"[client] missing required key '{required}'", where=ctx.shown,
                              hint=hint)
        try:
            validate(value)
        except ValueError as exc:
            raise ConfigError(f"client.{seen[required.casefold()]}: {exc}", where=ctx.shown,
                              hint=example) from None
    return settings


def _load_trust(t: _Table) -> Trust:
    certs = t.paths("certificates", required=True)
    t.finish()
    return Trust(certs)


def _load_inventory(t: _Table) -> Inventory:
    path = t.path("inventory", required=True)
    default = t.password()
    t.finish()
    return Inventory(path, default)


def _load_signing(t: _Table) -> Signing:
    roles = {}
    for role in ("installer", "profile"):
        p12 = t.path(f"{role}_identity", suffixes=(".p12", ".pfx"))
        cert = t.path(f"{role}_certificate")
        key = t.path(f"{role}_key")
        chain = t.paths(f"{role}_chain")
        password = t.password(f"{role}_")
        if p12 is not None and (cert or key or chain):
            raise t.err(f"{role}_identity", f"use either {role}_identity (a .p12) or "
                        f"{role}_certificate + {role}_key, not both")
        if p12 is None and (cert is None) != (key is None):
            missing = f"{role}_key" if key is None else f"{role}_certificate"
            raise ConfigError(f"[signing] missing required key '{missing}'", where=t.ctx.shown,
                              hint=f"a PEM signing identity needs {role}_certificate and "
                                   f"{role}_key")
        if p12 is None and cert is None and chain:
            raise t.err(f"{role}_chain", f"needs {role}_certificate and {role}_key")
        if p12 is None and cert is None and password is not None:
            raise t.err(None, f"{role}_password_* is set but no {role} identity is",
                        hint=f"add {role}_identity or {role}_certificate + {role}_key")
        if p12 is not None or cert is not None:
            roles[role] = SigningIdentity(role, p12, cert, key, chain, password)
    url = t.string("timestamp_url")
    if url is not None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise t.err("timestamp_url", f"{url!r} is not an http(s) URL",
                        hint="e.g. timestamp_url = \"http://timestamp.apple.com/ts01\"")
    t.finish()
    return Signing(roles.get("installer"), roles.get("profile"), url)


def _load_profiles(t: _Table) -> Profiles:
    p = Profiles(t.boolean("allow_all_apps_access", True), t.boolean("key_is_extractable", False))
    t.finish()
    return p


def _load_targets(t: _Table) -> Targets:
    munki_raw = t.get("munki", (bool, dict), False, True,
                      hint='write munki = true, false or { catalogs = ["testing"], name = "1E-Client", '
                           'identities = false }')
    munki: MunkiTarget | None
    if munki_raw is True:
        munki = MunkiTarget()
    elif munki_raw is False:
        munki = None
    else:
        sub = _Table(t.ctx, "targets.munki", munki_raw)
        catalogs = sub.get("catalogs", (list,), False, ["testing"])
        if not catalogs:
            raise sub.err("catalogs", "must name at least one catalog")
        for c in catalogs:
            if not isinstance(c, str) or not c.strip() or "/" in c or _CONTROL.search(c):
                raise sub.err("catalogs", f"{c!r} is not a catalog name")
        if len(set(catalogs)) != len(catalogs):
            raise sub.err("catalogs", "lists a catalog twice")
        name = sub.string("name", default="1E-Client")
        if not _MUNKI_NAME.match(name):
            raise sub.err("name", f"{name!r} must be letters, digits, '.', '_' or '-'")
        identities = sub.boolean("identities", False)
        sub.finish()
        munki = MunkiTarget(tuple(catalogs), name, identities)
    targets = Targets(munki, t.boolean("jamf", True), t.boolean("intune", True),
                      t.boolean("manual", True))
    t.finish()
    return targets


# ---------------------------------------------------------------------------------------------
# [enroll]: SCEP

SUBJECT_KEYS = ("C", "ST", "L", "O", "OU")
KEY_SIZES = (2048, 3072, 4096)
_HEX = re.compile(r"[0-9a-f]+\Z")


def _load_enroll(t: _Table) -> Enroll:
    url = t.string("scep_url", required=True)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a bad port)
    except ValueError as exc:
        raise t.err("scep_url", f"{url!r} is not a valid URL ({exc})") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.username \
            or parts.fragment or any(c.isspace() for c in url):
        raise t.err("scep_url", f"{url!r} is not a plain http(s)://host/path URL",
                    hint="NDES: scep_url = \"https://ndes.acme.local/certsrv/mscep/mscep.dll\"")
    fingerprint = t.string("ca_fingerprint")
    if fingerprint is not None:
        fingerprint = _fingerprint(t, fingerprint)
    elif parts.scheme.lower() == "http":
        raise t.err("ca_fingerprint", "is required when scep_url is http:// (nothing else "
                                      "proves the CA is the right one)",
                    hint="the SHA-256 of the CA certificate: openssl x509 -noout -fingerprint "
                         "-sha256 -in ca.cer, or certutil -dump ca.cer (Cert Hash(sha256))")
    challenge = _challenge(t)
    key_size = t.get("key_size", (int,), False, 2048, hint="write key_size = 2048")
    if key_size not in KEY_SIZES:
        raise t.err("key_size", f"{key_size} is not one of {', '.join(map(str, KEY_SIZES))}"
                    + (" (the vendor's rules need RSA of at least 2048 bits)" if key_size < 2048
                       else ""))
    subject = _subject(t)
    renew = t.get("renew_within_days", (int,), False, 30, hint="write renew_within_days = 30")
    if not 0 <= renew <= 3650:
        raise t.err("renew_within_days", f"{renew} must be from 0 to 3650 days")
    t.finish()
    return Enroll(url, fingerprint, challenge, key_size, subject, renew)


def _fingerprint(t: _Table, value: str) -> str:
    digits = re.sub(r"[\s:]", "", value).lower()
    if not _HEX.match(digits):
        raise t.err("ca_fingerprint", "must be hexadecimal digits (':' and spaces allowed)")
    if len(digits) == 40:
        raise t.err("ca_fingerprint", "is a SHA-1 thumbprint; give the SHA-256 fingerprint",
                    hint="openssl x509 -noout -fingerprint -sha256 -in ca.cer, or certutil -dump "
                         "ca.cer (Cert Hash(sha256))")
    if len(digits) != 64:
        raise t.err("ca_fingerprint", f"has {len(digits)} hex digits; a SHA-256 fingerprint has 64")
    return digits


def _challenge(t: _Table) -> ChallengeSource | None:
    env = t.string("challenge_env")
    path = t.string("challenge_file")
    command = t.get("challenge_command", (str, list), False, None,
                    hint='e.g. challenge_command = ["scripts/ndes-challenge.sh"]')
    given = [k for k, v in (("challenge_env", env), ("challenge_file", path),
                            ("challenge_command", command)) if v is not None]
    if len(given) > 1:
        raise t.err(None, f"set one of {' or '.join(given)}, not {len(given)}")
    if env is not None:
        if not ENV_NAME.match(env):
            raise t.err("challenge_env", "is not an environment variable name (value not shown)",
                        hint="write the variable's name, e.g. SCEP_CHALLENGE, never the challenge")
        return ChallengeSource("env", env)
    if path is not None:
        full = existing_file(t.ctx.root, t.ctx.shown_root, path,
                              f"{t.ctx.shown}: enroll.challenge_file")
        return ChallengeSource("file", str(full))
    if command is None:
        return None
    if isinstance(command, str) and _CONTROL.search(command):
        raise t.err("challenge_command", "contains a control character")
    try:
        argv = shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as exc:
        raise t.err("challenge_command", f"cannot be split into words ({exc})") from None
    if not argv or not all(isinstance(a, str) and a and not _CONTROL.search(a) for a in argv):
        raise t.err("challenge_command", "must be a non-empty command (a string or an array of "
                                         "non-empty strings)")
    program = Path(argv[0]).expanduser()
    if "/" in argv[0] and not program.is_absolute():  # a path: relative to fleet.toml's folder
        argv[0] = str(t.ctx.root / program)
    shown = command if isinstance(command, str) else shlex.join(command)
    return ChallengeSource("command", shown, tuple(argv), str(t.ctx.root))


def _subject(t: _Table) -> tuple[tuple[str, str], ...]:
    raw = t.get("subject", (dict,), False, {}, hint='e.g. subject = { O = "ACME Corp", OU = "Macs" }')
    out = []
    for key, value in raw.items():
        if key.upper() == "CN":
            raise t.err("subject", "must not set CN: it is always the device's hostname")
        if key not in SUBJECT_KEYS:
            raise t.err("subject", f"unknown attribute {key!r}",
                        hint=suggest(key, SUBJECT_KEYS, "attribute"))
        if not isinstance(value, str) or not value.strip() or _CONTROL.search(value) \
                or value != value.strip() or len(value) > 64:
            raise t.err("subject", f"{key} must be a non-empty string of at most 64 characters "
                                   "without leading/trailing spaces")
        if key == "C" and not re.fullmatch(r"[A-Z]{2}", value):
            raise t.err("subject", f"C = {value!r} must be a two-letter country code, e.g. \"DE\"")
        out.append((key, value))
    return tuple(out)


def _load_secrets(t: _Table) -> Secrets:
    from ..errors import FleetpkgError
    from ..formats.age import RECIPIENT_HINT, parse_recipient

    raw = t.get("recipients", (list,), False, [], hint='write recipients = ["age1..."]')
    texts = []
    for value in raw:
        if not isinstance(value, str):
            raise t.err("recipients", f"{_typename(value)} is not a recipient", hint=RECIPIENT_HINT)
        try:
            parse_recipient(value)
        except FleetpkgError as exc:
            raise t.err("recipients", exc.message, hint=exc.hint) from None
        if value.strip() in texts:
            raise t.err("recipients", "lists a recipient twice")
        texts.append(value.strip())
    t.finish()
    return Secrets(tuple(texts))
