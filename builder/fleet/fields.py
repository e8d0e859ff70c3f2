"""Checks shared by fleet.toml and devices.csv: named paths, files that must exist, 'did you mean ...?'."""

from __future__ import annotations

import difflib
from pathlib import Path

from ..errors import ConfigError


def suggest(key: str, valid: tuple[str, ...] | list[str], what: str = "key",
             brackets: bool = False) -> str:
    """'did you mean ...?' using a case-insensitive match first, then difflib."""
    fmt = (lambda k: f"[{k}]") if brackets else (lambda k: f"'{k}'")
    for v in valid:
        if v.casefold() == key.casefold():
            return f"did you mean {fmt(v)}?"
    close = difflib.get_close_matches(key.lower(), [v.lower() for v in valid], n=1, cutoff=0.6)
    if close:
        match = next(v for v in valid if v.lower() == close[0])
        return f"did you mean {fmt(match)}?"
    return f"valid {what}s: " + ", ".join(fmt(v) for v in valid)


def named_path(root: Path, value: str) -> Path:
    """A path as a config names it: `~` expanded, relative to `root` (absolute when root is)."""
    if value[:1] not in ("~", "/"):
        return root / value  # the usual inventory row: a plain relative path
    rel = Path(value).expanduser()
    return rel if rel.is_absolute() else root / rel


def existing_file(root: Path, shown_root: Path, value: str, where: str,
                   suffixes: tuple[str, ...] = ()) -> Path:
    full = named_path(root, value)
    shown = named_path(shown_root, value)
    if suffixes and full.suffix.lower() not in suffixes:
        raise ConfigError(f"{value!r} must end in " + ", ".join(suffixes), where=where)
    if not full.exists():
        raise ConfigError(f"{shown}: no such file", where=where,
                          hint="paths are relative to the file that names them")
    if not full.is_file():
        raise ConfigError(f"{shown}: not a regular file", where=where)
    return full


def decode_text(raw: bytes, shown: str, *, encoding: str = "utf-8", hint: str | None = None) -> str:
    """A config file's text; not UTF-8 is one ConfigError naming the line where decoding fails."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", where=f"{shown}:{line}", hint=hint) from None
