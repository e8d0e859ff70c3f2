"""The one description of a payload, shared by the cpio writer and the BOM writer.

Both the Payload (cpio) and the Bom must list exactly the same paths, modes, owners, sizes and
times, or Installer's receipt disagrees with what landed on disk. Building both from one list of
TreeEntry values makes that agreement structural rather than something to test for.

Paths are "." for the payload root and "./a/b" below it, as pkgbuild and `find . | cpio` write them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

from ... import repro
from ...errors import FormatError

KINDS = ("dir", "file", "symlink")
_TYPE_BITS = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "symlink": stat.S_IFLNK}


@dataclass(frozen=True)
class TreeEntry:
    """One payload item. `mode` holds permission bits only; `st_mode` adds the type bits."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    source: Path | None = None
    data: bytes | None = None
    link_target: str | None = None

    @property
    def st_mode(self) -> int:
        return _TYPE_BITS[self.kind] | self.mode

    @property
    def name(self) -> str:
        """Basename ("." for the root)."""
        return "." if self.path == "." else self.path.rsplit("/", 1)[1]

    @property
    def parent(self) -> str | None:
        return None if self.path == "." else self.path.rsplit("/", 1)[0]


def encode_name(path: str) -> bytes:
    """Bytes of a path as stored in cpio and BOM (UTF-8; undecodable bytes round-trip)."""
    return path.encode("utf-8", "surrogateescape")


def decode_name(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def sort_key(path: str) -> tuple[bytes, ...]:
    """Depth-first order with children sorted by name bytes: parents always precede children."""
    if path == ".":
        return ()
    return tuple(encode_name(part) for part in path.split("/")[1:])


def normalize_path(name: str, *, where: str | None = None) -> str:
    """'a/b', './a/b', 'a//b/' -> './a/b'; '', '.', './' -> '.'. Refuses '..', NUL and absolute paths."""
    if "\x00" not in name:  # the usual cases, a plain name or "./" and one: no need to split
        if "/" not in name and name not in ("", ".", ".."):
            return "./" + name
        if name.startswith("./") and "/" not in name[2:] and name[2:] not in ("", ".", ".."):
            return name
    if "\x00" in name:
        raise FormatError(f"path contains a NUL byte: {name!r}", where=where)
    if name.startswith("/"):
        raise FormatError(f"absolute path not allowed: {name!r}", where=where,
                          hint="payload paths are relative to the install location")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FormatError(f"path escapes the payload root: {name!r}", where=where)
    return "./" + "/".join(parts) if parts else "."


def _check_root(root: Path) -> None:
    try:
        st = root.lstat()
    except OSError as exc:
        raise FormatError(f"cannot read payload root: {exc.strerror}", where=str(root)) from None
    if not stat.S_ISDIR(st.st_mode):
        raise FormatError("payload root is not a directory", where=str(root))


def scan_tree(root: Path, *, uid: int = 0, gid: int = 0, mtime: int | None = None) -> list[TreeEntry]:
    """Describe a directory tree as payload entries, sorted, "." first.

    Permission bits come from disk; owners and times are forced (root:wheel 0/0 and the build epoch
    by default) so a Linux build user's uid never leaks into the package (format doc §9 P9).
    Symlinks are kept as links, never followed.
    """
    root = Path(root)
    _check_root(root)
    when = repro.build_epoch() if mtime is None else mtime
    out: list[TreeEntry] = []
    stack: list[tuple[Path, str]] = [(root, ".")]
    while stack:
        disk, rel = stack.pop()
        try:
            st = disk.lstat()
        except OSError as exc:
            raise FormatError(f"cannot read: {exc.strerror}", where=str(disk)) from None
        perm = stat.S_IMODE(st.st_mode)
        if stat.S_ISDIR(st.st_mode):
            out.append(TreeEntry(rel, "dir", perm, uid, gid, when, 0))
            try:
                names = os.listdir(disk)
            except OSError as exc:
                raise FormatError(f"cannot list directory: {exc.strerror}", where=str(disk)) from None
            for name in names:
                stack.append((disk / name, f"{rel}/{name}"))
        elif stat.S_ISREG(st.st_mode):
            out.append(TreeEntry(rel, "file", perm, uid, gid, when, st.st_size, source=disk))
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(disk)
            out.append(TreeEntry(rel, "symlink", perm, uid, gid, when, len(encode_name(target)),
                                 link_target=target))
        else:
            raise FormatError("unsupported file type (only directories, files and symlinks "
                              "can go in a payload)", where=str(disk))
    out.sort(key=lambda e: sort_key(e.path))
    return out


def entries_from_mapping(files: Mapping[str, bytes | tuple[bytes, int]], *, uid: int = 0, gid: int = 0,
                         mtime: int | None = None, file_mode: int = 0o644,
                         dir_mode: int = 0o755) -> list[TreeEntry]:
    """An in-memory tree (scripts, small payloads). Values are content or (content, mode);
    parent directories are implied with `dir_mode`."""
    when = repro.build_epoch() if mtime is None else mtime
    by_path: dict[str, TreeEntry] = {".": TreeEntry(".", "dir", dir_mode, uid, gid, when, 0)}
    for raw_name, value in files.items():
        path = normalize_path(raw_name, where=raw_name)
        if path == ".":
            raise FormatError("a file cannot be the payload root", where=raw_name)
        content, mode = value if isinstance(value, tuple) else (value, file_mode)
        if path in by_path:
            raise FormatError("path given twice or used as a directory", where=raw_name)
        by_path[path] = TreeEntry(path, "file", stat.S_IMODE(mode), uid, gid, when, len(content),
                                  data=bytes(content))
        parent = path.rsplit("/", 1)[0]
        while parent not in by_path:
            by_path[parent] = TreeEntry(parent, "dir", dir_mode, uid, gid, when, 0)
            parent = parent.rsplit("/", 1)[0]
        if by_path[parent].kind != "dir":
            raise FormatError("a file is also used as a directory", where=parent)
    return sorted(by_path.values(), key=lambda e: sort_key(e.path))


def apply_metadata(entries: Iterable[TreeEntry], reference: Iterable[Any]) -> list[TreeEntry]:
    """Take mode, uid, gid and mtime (and directory sizes) from a listing of the same tree.

    `reference` items need .path or .name, .mode (full st_mode), .uid, .gid, .mtime, .size: a BomEntry
    or CpioEntry list works. Used to rebuild a vendor payload with its original ownership and times
    (content-derived values, file sizes and checksums, still come from disk). A directory's "size" in
    an Apple BOM is the build machine's directory size, which no file carries, hence copied too.
    BOM placeholder records (BomEntry.placeholder) carry no metadata and are skipped.
    """
    ref: dict[str, Any] = {}
    for item in reference:
        name = getattr(item, "path", None) or getattr(item, "name")
        ref[normalize_path(name, where=name)] = item
    out = []
    for entry in entries:
        item = ref.get(entry.path)
        if item is None or getattr(item, "placeholder", False):
            out.append(entry)
            continue
        if stat.S_IFMT(item.mode) != _TYPE_BITS[entry.kind]:
            raise FormatError(f"type differs from the reference listing ({entry.kind} on disk, "
                              f"mode {item.mode:o} listed)", where=entry.path)
        changes = dict(mode=stat.S_IMODE(item.mode), uid=item.uid, gid=item.gid, mtime=item.mtime)
        if entry.kind == "dir":
            changes["size"] = item.size
        out.append(replace(entry, **changes))
    return out


def check_tree(entries: Iterable[TreeEntry]) -> list[TreeEntry]:
    """Validate a whole tree: "." present, unique paths, every parent a listed directory."""
    entries = list(entries)
    kinds: dict[str, str] = {}
    for entry in entries:
        if entry.kind not in KINDS:
            raise FormatError(f"unknown entry kind {entry.kind!r}", where=entry.path)
        if normalize_path(entry.path, where=entry.path) != entry.path:
            raise FormatError("path must be '.' or start with './' with no empty parts", where=entry.path)
        if entry.path in kinds:
            raise FormatError("path listed twice", where=entry.path)
        kinds[entry.path] = entry.kind
    if kinds.get(".") != "dir":
        raise FormatError("the tree has no root directory '.'")
    for entry in entries:
        if entry.parent is not None and kinds.get(entry.parent) != "dir":
            raise FormatError("parent directory is not listed", where=entry.path)
    return entries
