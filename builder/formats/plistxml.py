"""XML property lists, byte for byte as `plistlib.dumps(value, fmt=FMT_XML, sort_keys=True)` writes
them, several times faster.

plistlib's writer makes a method call and a small write per line; a fleet build serialises five
plists per Mac (the device profile, the content views its PayloadUUIDs are digests of, the Munki
pkginfo), so that was a sizeable share of the per-device work. This writer appends text pieces
and encodes once. The output is pinned to plistlib's by a property test
(tests/formats/test_plistxml.py): PayloadUUIDs are digests of these bytes and must never move.
"""

from __future__ import annotations

import binascii
import datetime
import re

HEADER = ('<?xml version="1.0" encoding="UTF-8"?>\n'
          '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
          '<plist version="1.0">\n')
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # plistlib's _controlCharPat
_SPECIAL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\r&<>]")  # anything _escape would act on


def dumps(value) -> bytes:
    """The XML plist of `value` (dict keys sorted), exactly as plistlib writes it; the same
    TypeError, ValueError and OverflowError for what plistlib refuses."""
    out = [HEADER]
    _write(value, "", out)
    out.append("</plist>\n")
    return "".join(out).encode("utf-8")


def _escape(text: str) -> str:
    if _SPECIAL.search(text) is None:
        return text
    if _CONTROL.search(text) is not None:
        raise ValueError("strings can't contain control characters; use bytes instead")
    return (text.replace("\r\n", "\n").replace("\r", "\n").replace("&", "&amp;")
            .replace("<", "&lt;").replace(">", "&gt;"))


# (indent, key) -> its <key> line: a fleet's plists repeat the same few dozen keys at the same
# depths thousands of times. Keys are names (PayloadType, Password...), never secrets; values, which
# can be, are never remembered.
_LINES: dict[tuple, str] = {}
_LINES_MAX = 4096


def _remember(key: tuple, line: str) -> str:
    if len(_LINES) >= _LINES_MAX:
        _LINES.clear()
    _LINES[key] = line
    return line


def _write(value, indent: str, out: list) -> None:
    kind = type(value)
    if kind is dict:
        _write_dict(value, indent, out)
    elif kind is str:
        out.append(f"{indent}<string>{_escape(value)}</string>\n")
    elif kind is bytes:
        _write_data(value, indent, out)
    elif kind is list or kind is tuple:
        _write_array(value, indent, out)
    else:
        _write_other(value, indent, out)


def _write_dict(value: dict, indent: str, out: list) -> None:
    """A dictionary, its string, boolean and small integer values written inline: profiles are
    mostly such leaves, and one call per leaf was most of the writer's time."""
    if not value:
        out.append(f"{indent}<dict/>\n")
        return
    out.append(f"{indent}<dict>\n")
    inner = indent + "\t"
    append, escape, lines = out.append, _escape, _LINES
    for key, item in sorted(value.items()):
        line = lines.get((inner, key))
        if line is None:
            if not isinstance(key, str):
                raise TypeError("keys must be strings")
            line = _remember((inner, key), f"{inner}<key>{escape(key)}</key>\n")
        append(line)
        kind = type(item)
        if kind is str:  # values are not remembered: a profile's strings include its p12 password
            append(f"{inner}<string>{escape(item)}</string>\n")
        elif item is True:
            append(f"{inner}<true/>\n")
        elif item is False:
            append(f"{inner}<false/>\n")
        elif kind is int and -1 << 63 <= item < 1 << 64:
            append(f"{inner}<integer>{'%d' % item}</integer>\n")
        else:
            _write(item, inner, out)
    append(f"{indent}</dict>\n")


def _write_array(value, indent: str, out: list) -> None:
    if not value:
        out.append(f"{indent}<array/>\n")
        return
    out.append(f"{indent}<array>\n")
    inner = indent + "\t"
    for item in value:
        _write(item, inner, out)
    out.append(f"{indent}</array>\n")


def _write_data(value, indent: str, out: list) -> None:
    out.append(f"{indent}<data>\n")
    # plistlib narrows base64 lines by the indentation, a tab counting 8 columns
    # (its lines encode whole 3-byte groups, so one encoding cut into lines is the same text)
    width = (max(16, 76 - 8 * len(indent)) // 4) * 4
    text = binascii.b2a_base64(value, newline=False).decode("ascii")
    if text:
        out.append(indent + f"\n{indent}".join([text[i:i + width] for i in range(0, len(text), width)]) + "\n")
    out.append(f"{indent}</data>\n")


def _write_other(value, indent: str, out: list) -> None:
    """Every other value (and subclasses of the common ones), in plistlib's order of tests."""
    if isinstance(value, str):
        out.append(f"{indent}<string>{_escape(value)}</string>\n")
    elif value is True:
        out.append(f"{indent}<true/>\n")
    elif value is False:
        out.append(f"{indent}<false/>\n")
    elif isinstance(value, int):
        if not -1 << 63 <= value < 1 << 64:
            raise OverflowError(value)
        out.append(f"{indent}<integer>{'%d' % value}</integer>\n")
    elif isinstance(value, float):
        out.append(f"{indent}<real>{_escape(repr(value))}</real>\n")
    elif isinstance(value, dict):
        _write_dict(value, indent, out)
    elif isinstance(value, (bytes, bytearray)):
        _write_data(value, indent, out)
    elif isinstance(value, datetime.datetime):
        out.append(f"{indent}<date>{value.year:04d}-{value.month:02d}-{value.day:02d}T"
                   f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z</date>\n")
    elif isinstance(value, (tuple, list)):
        _write_array(value, indent, out)
    else:
        raise TypeError(f"unsupported type: {type(value)}")
