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


def _write(value, indent: str, out: list) -> None:
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
        if not value:
            out.append(f"{indent}<dict/>\n")
            return
        out.append(f"{indent}<dict>\n")
        inner = indent + "\t"
        for key, item in sorted(value.items()):
            if not isinstance(key, str):
                raise TypeError("keys must be strings")
            out.append(f"{inner}<key>{_escape(key)}</key>\n")
            _write(item, inner, out)
        out.append(f"{indent}</dict>\n")
    elif isinstance(value, (bytes, bytearray)):
        out.append(f"{indent}<data>\n")
        # plistlib narrows base64 lines by the indentation, a tab counting 8 columns
        # (its lines encode whole 3-byte groups, so one encoding cut into lines is the same text)
        width = (max(16, 76 - 8 * len(indent)) // 4) * 4
        text = binascii.b2a_base64(value, newline=False).decode("ascii")
        lines = [text[i:i + width] for i in range(0, len(text), width)]
        if lines:
            out.append(indent + f"\n{indent}".join(lines) + "\n")
        out.append(f"{indent}</data>\n")
    elif isinstance(value, datetime.datetime):
        out.append(f"{indent}<date>{value.year:04d}-{value.month:02d}-{value.day:02d}T"
                   f"{value.hour:02d}:{value.minute:02d}:{value.second:02d}Z</date>\n")
    elif isinstance(value, (tuple, list)):
        if not value:
            out.append(f"{indent}<array/>\n")
            return
        out.append(f"{indent}<array>\n")
        inner = indent + "\t"
        for item in value:
            _write(item, inner, out)
        out.append(f"{indent}</array>\n")
    else:
        raise TypeError(f"unsupported type: {type(value)}")
