"""Describe any file `fleetpkg inspect` accepts as plain JSON-ready data, chosen by content.

The file's first bytes decide (xar magic, Mach-O magic, XML/binary plist, DER SEQUENCE), never its
name alone, so a renamed file still gets the right reader. Readers for profiles and PKCS#12 belong
to other modules and are imported only when needed, which keeps `inspect` of a package fast.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..errors import FleetpkgError, FormatError, UnsupportedError

HEAD = 64
MAX_SMALL_FILE = 16 * 1024 * 1024  # profiles and .pfx files are read whole


def sniff_kind(head: bytes, name: str = "") -> str:
    """pkg | macho | mobileconfig | pfx | unknown."""
    from ..formats.macho import is_macho
    if head[:4] == b"xar!":
        return "pkg"
    if is_macho(head):
        return "macho"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith((b"<?xml", b"<!DOCTYPE plist", b"<plist", b"bplist00")):
        return "mobileconfig"
    inner = _der_first_child_tag(head)
    if inner == 0x06:  # ContentInfo: OID first -> CMS SignedData (a signed profile)
        return "mobileconfig"
    if inner == 0x02:  # PFX: version INTEGER first
        return "pfx"
    if inner is not None and name.lower().endswith((".p12", ".pfx")):
        return "pfx"
    return "unknown"


def _der_first_child_tag(head: bytes) -> int | None:
    """Tag of the first element inside a leading DER/BER SEQUENCE, else None."""
    if len(head) < 3 or head[0] != 0x30:
        return None
    first = head[1]
    if first == 0x80:  # BER indefinite length
        pos = 2
    elif first < 0x80:
        pos = 2
    else:
        n = first & 0x7F
        if not 1 <= n <= 4:
            return None
        pos = 2 + n
    return head[pos] if pos < len(head) else None


def describe_file(path: str | os.PathLike, *, password: bytes | None = None) -> dict[str, Any]:
    """Description of `path`; FormatError (one line, naming the file) for anything unreadable."""
    path = Path(path)
    where = str(path)
    with open(path, "rb") as f:
        head = f.read(HEAD)
    if not head:
        raise FormatError("empty file: not a package, Mach-O, profile or PKCS#12 file", where=where)
    kind = sniff_kind(head, path.name)
    try:
        if kind == "pkg":
            from ..formats.pkg.inspect import describe_package
            return describe_package(path)
        if kind == "macho":
            from ..formats.macho import read_macho
            info = read_macho(path)
            return {"kind": "macho", "architectures": list(info.architectures),
                    "identifier": info.identifier, "team_id": info.team_id}
        if kind == "mobileconfig":
            doc = _delegate("builder.profiles.inspect", "describe_mobileconfig", where)(_small(path))
            return {"kind": "mobileconfig", **doc}
        if kind == "pfx":
            doc = _delegate("builder.certs.inspect", "describe_pfx", where)(_small(path), password or b"")
            return {"kind": "pfx", **doc}
    except FleetpkgError as exc:
        if exc.where is None:
            exc.where = where
        if kind == "pfx" and password is None and "password" in exc.message:
            exc.hint = "name an environment variable holding it with --password-env VAR"
        raise
    raise FormatError("not a package, Mach-O, profile or PKCS#12 file (unrecognised content)", where=where,
                      hint="inspect takes .pkg, Mach-O binaries, .mobileconfig and .pfx/.p12 files")


def _small(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_SMALL_FILE:
        raise FormatError(f"{size} bytes is too large for a profile or PKCS#12 file", where=str(path))
    return path.read_bytes()


def _delegate(module: str, function: str, where: str):
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            raise UnsupportedError(f"this build cannot read this kind of file yet ({module} is missing)",
                                   where=where) from None
        raise
    func = getattr(mod, function, None)
    if func is None:
        raise UnsupportedError(f"this build cannot read this kind of file yet ({module}.{function} "
                               "is missing)", where=where)
    return func


def _item_line(item: dict[str, Any]) -> str:
    """One list item: a payload's type with the certificate or identity it carries, or a subject."""
    line = f"  - {item.get('type') or item.get('subject') or ''}"
    cert = item.get("identity") or item.get("certificate")
    if isinstance(cert, dict) and cert.get("subject"):
        line += f": {cert['subject']} (expires {cert.get('not_after', '?')})"
    return line.rstrip()


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """Human-readable summary of a describe_file() result."""
    kind = doc.get("kind")
    if kind in ("product", "component"):
        from ..formats.pkg.inspect import package_summary_lines
        return package_summary_lines(doc)
    if kind == "macho":
        return [f"Mach-O: {', '.join(doc['architectures'])}",
                f"signing identifier: {doc['identifier'] or '(not signed)'}",
                f"team ID: {doc['team_id'] or '(none)'}"]
    lines = [f"kind: {kind}"]
    for key, value in sorted(doc.items()):
        if key == "kind":
            continue
        if isinstance(value, list):
            lines.append(f"{key}: {len(value)}")
            lines += [_item_line(item) for item in value if isinstance(item, dict)]
        elif isinstance(value, dict):
            lines.append(f"{key}: {value.get('subject') or _pairs(value)}")
        else:
            lines.append(f"{key}: {value}")
    return lines


def _pairs(value: dict) -> str:
    import json
    return ", ".join(f"{k}={json.dumps(v, sort_keys=True, default=str) if isinstance(v, (list, dict)) else v}"
                     for k, v in sorted(value.items()))
