"""Mach-O facts a deployment needs: CPU slices, code-signing identifier and Team ID.

Layers: an optional fat (universal) header lists slices; each slice is a Mach-O header plus
load commands; LC_CODE_SIGNATURE points at a SuperBlob whose CodeDirectory names the signing
identifier and, from version 0x20200, the Team ID. Structures and constants come from macholib;
the walk is our own so every read is bounded by the file size and an unknown load command (which
macholib's MachO class refuses) is skipped, as `file` and `otool` do, instead of losing the slice.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from macholib import mach_o

from ..errors import FormatError

THIN_MAGICS = {
    mach_o.MH_MAGIC: (">", False),
    mach_o.MH_CIGAM: ("<", False),
    mach_o.MH_MAGIC_64: (">", True),
    mach_o.MH_CIGAM_64: ("<", True),
}
FAT_MAGICS = {mach_o.FAT_MAGIC: False, mach_o.FAT_MAGIC_64: True}
MAX_FAT_ARCHS = 32  # Java class files share 0xcafebabe; their "nfat_arch" is a version >= 45
MAX_LOAD_COMMANDS = 0x10000
MAX_SIGNATURE_INDEX = 64
MAX_STRING = 1024

CSMAGIC_EMBEDDED_SIGNATURE = 0xFADE0CC0
CSMAGIC_CODEDIRECTORY = 0xFADE0C02
CSSLOT_CODEDIRECTORY = 0
CSSLOT_ALTERNATE_CODEDIRECTORIES = 0x1000
CS_SUPPORTSTEAMID = 0x20200

ABI64 = 0x01000000
# (cputype, cpusubtype & ~capability bits) -> the name lipo and `file` print
_ARCH_NAMES = {
    (7, 3): "i386",
    (7 | ABI64, 3): "x86_64",
    (7 | ABI64, 8): "x86_64h",
    (12, 6): "armv6",
    (12, 9): "armv7",
    (12, 11): "armv7s",
    (12, 12): "armv7k",
    (12 | ABI64, 0): "arm64",
    (12 | ABI64, 1): "arm64",
    (12 | ABI64, 2): "arm64e",
    (12 | 0x02000000, 1): "arm64_32",
    (18, 0): "ppc",
    (18 | ABI64, 0): "ppc64",
}
_GENERIC_NAMES = {7: "i386", 7 | ABI64: "x86_64", 12: "arm", 12 | ABI64: "arm64", 18: "ppc",
                  18 | ABI64: "ppc64"}


@dataclass(frozen=True)
class MachOInfo:
    architectures: tuple[str, ...]
    identifier: str | None
    team_id: str | None


@dataclass(frozen=True)
class _Slice:
    offset: int
    size: int
    arch: str
    signature: tuple[int, int] | None  # (offset in file, size)


def is_macho(head: bytes) -> bool:
    """True when the first bytes look like a thin or universal Mach-O (not a Java class file)."""
    if len(head) < 8:
        return False
    magic = struct.unpack(">I", head[:4])[0]
    if magic in THIN_MAGICS:
        return True
    if magic in FAT_MAGICS:
        return 0 < struct.unpack(">I", head[4:8])[0] <= MAX_FAT_ARCHS
    return False


def arch_name(cputype: int, cpusubtype: int) -> str:
    cputype &= 0xFFFFFFFF
    sub = cpusubtype & 0x00FFFFFF  # strip CPU_SUBTYPE_MASK capability bits (e.g. arm64e PAC ABI)
    if (cputype, sub) in _ARCH_NAMES:
        return _ARCH_NAMES[(cputype, sub)]
    return _GENERIC_NAMES.get(cputype, f"cputype-{cputype:#x}")


def read_macho(path: str | os.PathLike) -> MachOInfo:
    """Architectures and signing identity of a Mach-O file; FormatError if it is not one."""
    where = str(path)
    with open(path, "rb") as f:
        return read_macho_stream(f, where=where)


def read_macho_stream(f: BinaryIO, *, where: str = "<stream>", size: int | None = None) -> MachOInfo:
    """As read_macho, for a seekable binary stream (e.g. a file extracted to a temp file)."""
    if size is None:
        f.seek(0, os.SEEK_END)
        size = f.tell()
    reader = _Reader(f, size, where)
    slices = _slices(reader)
    identifier = team_id = None
    for sl in slices:
        if sl.signature is None:
            continue
        ident, team = _code_directory(reader, *sl.signature)
        identifier = identifier or ident
        team_id = team_id or team
    return MachOInfo(tuple(sl.arch for sl in slices), identifier, team_id)


class _Reader:
    """Bounded reads: every request is checked against the file size before touching the disk."""

    def __init__(self, f: BinaryIO, size: int, where: str):
        self.f, self.size, self.where = f, size, where

    def error(self, message: str) -> FormatError:
        return FormatError(f"not a valid Mach-O file: {message}", where=self.where)

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise self.error(f"{what} at offset {offset} runs past the end of the file ({self.size} bytes)")
        self.f.seek(offset)
        data = self.f.read(length)
        if len(data) != length:
            raise self.error(f"{what} is truncated")
        return data

    def struct(self, cls, offset: int, endian: str, what: str):
        data = self.read(offset, cls._size_, what)
        return cls.from_str(data, _endian_=endian)


def _slices(r: _Reader) -> list[_Slice]:
    head = r.read(0, 4, "magic") if r.size >= 4 else b""
    if len(head) < 4:
        raise r.error("file too short")
    magic = struct.unpack(">I", head)[0]
    if magic in THIN_MAGICS:
        return [_thin(r, 0, r.size)]
    if magic not in FAT_MAGICS:
        raise r.error(f"unknown magic {magic:#010x}")
    is64 = FAT_MAGICS[magic]
    header = r.struct(mach_o.fat_header, 0, ">", "fat header")
    if not 0 < header.nfat_arch <= MAX_FAT_ARCHS:
        raise r.error(f"universal header lists {header.nfat_arch} architectures")
    arch_cls = mach_o.fat_arch64 if is64 else mach_o.fat_arch
    out = []
    for i in range(header.nfat_arch):
        fa = r.struct(arch_cls, 8 + i * arch_cls._size_, ">", f"fat_arch[{i}]")
        if fa.offset + fa.size > r.size or fa.size == 0:
            raise r.error(f"slice {i} ({fa.offset}+{fa.size}) lies outside the file")
        sl = _thin(r, fa.offset, fa.size)
        fat_name = arch_name(fa.cputype, fa.cpusubtype)
        if sl.arch != fat_name:
            raise r.error(f"slice {i} is {sl.arch} but the universal header says {fat_name}")
        out.append(sl)
    return out


def _thin(r: _Reader, start: int, size: int) -> _Slice:
    magic = struct.unpack(">I", r.read(start, 4, "slice magic"))[0]
    if magic not in THIN_MAGICS:
        raise r.error(f"slice at offset {start} has magic {magic:#010x}")
    endian, is64 = THIN_MAGICS[magic]
    hcls = mach_o.mach_header_64 if is64 else mach_o.mach_header
    h = r.struct(hcls, start, endian, "Mach-O header")
    arch = arch_name(h.cputype, h.cpusubtype)
    pos, end = start + hcls._size_, start + hcls._size_ + h.sizeofcmds
    if h.ncmds > MAX_LOAD_COMMANDS:
        raise r.error(f"{h.ncmds} load commands")
    if end > start + size:
        raise r.error(f"load commands ({h.sizeofcmds} bytes) are truncated: the {arch} slice has {size} bytes")
    signature = None
    for i in range(h.ncmds):
        lc = r.struct(mach_o.load_command, pos, endian, f"load command {i}")
        if lc.cmdsize < 8 or pos + lc.cmdsize > end:
            raise r.error(f"load command {i} has size {lc.cmdsize}, outside the load command area")
        if lc.cmd == mach_o.LC_CODE_SIGNATURE:
            if lc.cmdsize < 16:
                raise r.error("LC_CODE_SIGNATURE is too short")
            cs = r.struct(mach_o.linkedit_data_command, pos + 8, endian, "LC_CODE_SIGNATURE")
            if cs.dataoff + cs.datasize > size:
                raise r.error("the code signature lies outside its slice")
            signature = (start + cs.dataoff, cs.datasize)
        pos += lc.cmdsize
    return _Slice(start, size, arch, signature)


def _code_directory(r: _Reader, offset: int, size: int) -> tuple[str | None, str | None]:
    """Identifier and Team ID from the first CodeDirectory of an embedded-signature SuperBlob."""
    if size < 12:
        raise r.error("code signature is too short")
    magic, length, count = struct.unpack(">III", r.read(offset, 12, "code signature"))
    if magic != CSMAGIC_EMBEDDED_SIGNATURE:
        raise r.error(f"code signature magic {magic:#010x} is not an embedded signature")
    if length > size or count > MAX_SIGNATURE_INDEX or 12 + 8 * count > length:
        raise r.error("code signature index is inconsistent")
    index = r.read(offset + 12, 8 * count, "code signature index")
    slots = [struct.unpack_from(">II", index, 8 * i) for i in range(count)]
    wanted = [o for t, o in slots if t == CSSLOT_CODEDIRECTORY]
    wanted += [o for t, o in slots if CSSLOT_ALTERNATE_CODEDIRECTORIES <= t < CSSLOT_ALTERNATE_CODEDIRECTORIES + 5]
    for blob_off in wanted:
        if blob_off + 52 > length:
            raise r.error("CodeDirectory lies outside the signature")
        cd = r.read(offset + blob_off, 52, "CodeDirectory")
        cd_magic, cd_len, version = struct.unpack_from(">III", cd, 0)
        if cd_magic != CSMAGIC_CODEDIRECTORY:
            continue
        if blob_off + cd_len > length:
            raise r.error("CodeDirectory is longer than the signature")
        (ident_off,) = struct.unpack_from(">I", cd, 20)
        (team_off,) = struct.unpack_from(">I", cd, 48)
        base = offset + blob_off
        ident = _cstring(r, base, cd_len, ident_off, "identifier") if ident_off else None
        team = None
        if version >= CS_SUPPORTSTEAMID and team_off:
            team = _cstring(r, base, cd_len, team_off, "team identifier")
        return ident, team
    return None, None


def _cstring(r: _Reader, base: int, limit: int, off: int, what: str) -> str:
    if off >= limit:
        raise r.error(f"CodeDirectory {what} offset lies outside the CodeDirectory")
    raw = r.read(base + off, min(MAX_STRING, limit - off), f"CodeDirectory {what}")
    end = raw.find(b"\0")
    if end < 0:
        raise r.error(f"CodeDirectory {what} is not NUL-terminated")
    try:
        return raw[:end].decode("utf-8")
    except UnicodeDecodeError:
        raise r.error(f"CodeDirectory {what} is not UTF-8") from None


def describe_macho(path: Path) -> dict:
    info = read_macho(path)
    return {"kind": "macho", "architectures": list(info.architectures),
            "identifier": info.identifier, "team_id": info.team_id}
