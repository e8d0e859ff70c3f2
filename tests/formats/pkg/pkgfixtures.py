"""Helpers for the payload/BOM tests: fixture members extracted with bsdtar, GNU cpio listings.

Everything here goes through tools nobody on this project wrote (bsdtar, GNU cpio, gzip, cksum), so
the tests compare our readers and writers against independent output.
"""

from __future__ import annotations

import stat
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import FIXTURES, require_tool

NOT_INSTALLERS = {"homebrew-container.pkg"}
# Built by the pkgbuild of OS X 10.10 (InstallCmds-502). Its Bom numbers the paths depth first in
# file-system order, and its installKBytes is larger than the byte count (allocation blocks), where
# today's pkgbuild (the other fixtures, and our writers) numbers breadth first by name and counts bytes.
OLD_PKGBUILD = {"macops-KeychainMinder-1.0.pkg"}


def fixture_packages() -> list[Path]:
    return sorted(p for p in (FIXTURES / "pkg").glob("*.pkg") if p.name not in NOT_INSTALLERS)


def extract_package(pkg: Path, dest: Path) -> list[Path]:
    """bsdtar -xf the package; returns the component directories (those holding a Bom)."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([require_tool("bsdtar"), "-xf", str(pkg), "-C", str(dest)], check=True)
    return sorted(p.parent for p in dest.rglob("Bom"))


@dataclass(frozen=True)
class Listed:
    """One line of `cpio -itvn`."""

    name: str
    perms: str
    nlink: int
    uid: int
    gid: int
    size: int
    link_target: str | None


def cpio_list(data: bytes) -> list[Listed]:
    """GNU `cpio -itvn` of raw cpio bytes, parsed."""
    out = subprocess.run([require_tool("cpio"), "-itvn", "--quiet"], input=data, capture_output=True,
                         check=True).stdout.decode("utf-8", "surrogateescape")
    rows = []
    for line in out.splitlines():
        perms, nlink, uid, gid, size, _mon, _day, _year, rest = line.split(None, 8)
        target = None
        if perms.startswith("l") and " -> " in rest:
            rest, target = rest.split(" -> ", 1)
        rows.append(Listed(rest, perms, int(nlink), int(uid), int(gid), int(size), target))
    return rows


def perms_of(mode: int) -> str:
    """st_mode -> the 10-character `ls -l` string, via the standard library (not our code)."""
    return stat.filemode(mode)


def gnu_extract(data: bytes, dest: Path) -> None:
    """GNU cpio -idm (keeps file mtimes, no absolute names) into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([require_tool("cpio"), "-idm", "--quiet", "--no-absolute-filenames"], input=data,
                   cwd=dest, check=True)


def bsdtar_extract(data: bytes, dest: Path) -> None:
    """bsdtar -xp of a (compressed) archive; restores directory times after filling them."""
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([require_tool("bsdtar"), "-xpf", "-", "-C", str(dest)], input=data, check=True)


def tool_cksum(path_or_bytes: Path | bytes) -> int:
    """CRC from coreutils `cksum`."""
    cmd = [require_tool("cksum")]
    if isinstance(path_or_bytes, Path):
        out = subprocess.run(cmd + [str(path_or_bytes)], capture_output=True, check=True).stdout
    else:
        out = subprocess.run(cmd, input=path_or_bytes, capture_output=True, check=True).stdout
    return int(out.split()[0])


def raw_bom_records(bom: bytes) -> dict[str, tuple[int, bytes]]:
    """path -> (parent id, PathInfo2 record bytes), parsed independently of builder.formats.pkg.bom
    (single-level or one-branch Paths trees, as every BOM here has)."""
    index_off = struct.unpack_from(">I", bom, 16)[0]
    count = struct.unpack_from(">I", bom, index_off)[0]
    blocks = [struct.unpack_from(">II", bom, index_off + 4 + 8 * i) for i in range(count)]

    def block(i: int) -> bytes:
        off, length = blocks[i]
        return bom[off:off + length]

    vars_off = struct.unpack_from(">I", bom, 24)[0]
    nvars = struct.unpack_from(">I", bom, vars_off)[0]
    pos, paths_tree = vars_off + 4, None
    for _ in range(nvars):
        idx, nlen = struct.unpack_from(">IB", bom, pos)
        if bom[pos + 5:pos + 5 + nlen] == b"Paths":
            paths_tree = idx
        pos += 5 + nlen
    node = struct.unpack_from(">I", block(paths_tree), 8)[0]
    leaves = [node]
    is_leaf, n = struct.unpack_from(">HH", block(node), 0)
    if not is_leaf:
        leaves = [struct.unpack_from(">I", block(node), 12 + 8 * i)[0] for i in range(n)]
    entries = []
    for leaf in leaves:
        _, n = struct.unpack_from(">HH", block(leaf), 0)
        for i in range(n):
            i0, i1 = struct.unpack_from(">II", block(leaf), 12 + 8 * i)
            pid, rec = struct.unpack_from(">II", block(i0), 0)
            fblk = block(i1)
            parent = struct.unpack_from(">I", fblk, 0)[0]
            entries.append((pid, parent, fblk[4:].split(b"\0")[0].decode(), block(rec)))
    names = {pid: (parent, name) for pid, parent, name, _ in entries}

    def path(pid: int) -> str:
        parent, name = names[pid]
        return name if parent == 0 else path(parent) + "/" + name

    return {path(pid): (parent, rec) for pid, parent, _, rec in entries}
