"""devices.csv -> one Device per Mac (hostname, .pfx, serial, password source), or one ConfigError line.

.pfx and password-file paths are relative to the CSV's folder; hostnames are unique regardless of
case (macOS host names are case-insensitive). A .pfx need not exist yet: whether it is there and
usable is judged per device (`check`/`build` report the pfx-* findings; `enroll` writes it), so
one missing export does not stop the fleet. A password file, like the rest of the row, must be.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..errors import ConfigError
from .fields import decode_text, existing_file, named_path, suggest
from .model import Device, Inventory
from .passwords import ENV_NAME, PasswordSource

CSV_COLUMNS = ("hostname", "pfx", "serial", "password_env", "password_file")
CSV_FORMAT = "hostname,pfx[,serial][,password_env|password_file]"

_HOSTNAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?"
                       r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9])?)*\Z")
_SERIAL = re.compile(r"[A-Za-z0-9-]{1,64}\Z")


def load_devices(inventory: Inventory, root: Path, shown_root: Path) -> tuple[Device, ...]:
    """The devices in inventory order. A .pfx need not exist: `check` and `build` judge a missing one
    as a finding on that device, `enroll` writes it."""
    csv_path = inventory.path
    try:
        rel = csv_path.relative_to(root)
        shown = str(shown_root / rel)
    except ValueError:
        shown = str(csv_path)
    try:
        raw = csv_path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=shown) from None
    text = decode_text(raw, shown, encoding="utf-8-sig", hint="save the inventory as UTF-8 CSV")
    folder = csv_path.parent
    shown_folder = Path(shown).parent
    header: list[str] | None = None
    devices: list[Device] = []
    seen: dict[str, Device] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{shown}:{lineno}"
        try:
            cells = next(csv.reader([line], strict=True))
        except csv.Error as exc:
            raise ConfigError(f"malformed CSV row ({exc})", where=where) from None
        cells = [c.strip() for c in cells]
        if header is None:
            header = _csv_header(cells, where)
            continue
        if len(cells) != len(header):
            raise ConfigError(f"row has {len(cells)} fields, the header has {len(header)} "
                              f"({','.join(header)})", where=where,
                              hint="leave a field empty rather than dropping its comma")
        row = dict(zip(header, cells))
        device = _csv_device(row, where, folder, shown_folder, shown, lineno, inventory)
        folded = device.hostname.casefold()
        if folded in seen:
            first = seen[folded]
            raise ConfigError(f"duplicate hostname {device.hostname!r}: already on line "
                              f"{first.line} as {first.hostname!r}", where=where,
                              hint="hostnames are compared case-insensitively; keep one row")
        seen[folded] = device
        devices.append(device)
    if header is None:
        raise ConfigError(f"no header row: the first row must be {CSV_FORMAT}", where=shown)
    if not devices:
        raise ConfigError("lists no devices", where=shown,
                          hint="add one row per Mac: hostname,pfx path")
    return tuple(devices)


def _csv_header(cells: list[str], where: str) -> list[str]:
    names = [c.lower() for c in cells]
    for name in names:
        if name not in CSV_COLUMNS:
            hint = suggest(name, CSV_COLUMNS, "column")
            if "hostname" not in names:
                hint = f"the first row must be a header: {CSV_FORMAT}"
            raise ConfigError(f"unknown column {name!r}", where=where, hint=hint)
    for name in set(names):
        if names.count(name) > 1:
            raise ConfigError(f"column {name!r} appears twice", where=where)
    for required in ("hostname", "pfx"):
        if required not in names:
            raise ConfigError(f"header has no {required!r} column", where=where,
                              hint=f"the header must be {CSV_FORMAT}")
    return names


def _csv_device(row: dict[str, str], where: str, folder: Path, shown_folder: Path,
                shown: str, lineno: int, inventory: Inventory) -> Device:
    hostname = row["hostname"]
    if not hostname:
        raise ConfigError("hostname is empty", where=where)
    if len(hostname) > 253 or not _HOSTNAME.match(hostname):  # the pattern has no room for a space
        if any(c.isspace() for c in hostname):
            raise ConfigError(f"hostname {hostname!r} contains a space", where=where)
        raise ConfigError(f"hostname {hostname!r} is not a valid host name", where=where,
                          hint="letters, digits, '-', '_' and '.', as `hostname` prints it")
    dev = f"{where} (device {hostname})"
    if not row["pfx"]:
        raise ConfigError("pfx is empty", where=dev, hint="give the path of this Mac's .pfx")
    pfx = named_path(folder, row["pfx"])  # absolute; may be missing (a finding; `enroll` writes it)
    serial = row.get("serial") or None
    if serial is not None and not _SERIAL.match(serial):
        raise ConfigError(f"serial {serial!r} is not a serial number (letters, digits, '-')",
                          where=dev)
    env = row.get("password_env") or None
    pw_file = row.get("password_file") or None
    if env and pw_file:
        raise ConfigError("set either password_env or password_file, not both", where=dev)
    password = inventory.default_password
    if env:
        if not ENV_NAME.match(env):
            raise ConfigError("password_env is not an environment variable name (value not shown)",
                              where=dev, hint="write the variable's name, never the password")
        password = PasswordSource("env", env)
    elif pw_file:
        password = PasswordSource("file", str(existing_file(folder, shown_folder, pw_file, dev)))
    return Device(hostname, pfx, serial, password, shown, lineno)
