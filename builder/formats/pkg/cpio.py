"""cpio archives: streaming reader (odc, newc, crc) and a strict odc writer.

Payload and Scripts archives are odc ("070707", format doc §5.1). The writer emits exactly what
Apple's reader expects: 76-byte header, name size including the NUL, no padding between members,
"TRAILER!!!", and the archive padded to 512 bytes like pkgbuild and GNU cpio. The reader also takes
newc/crc so archives made by other tools can be inspected; it never holds a member in memory.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator

from ...errors import BuildError, ChecksumError, FormatError, UnsupportedError
from .tree import TreeEntry, check_tree, decode_name, encode_name

ODC_MAGIC = b"070707"
NEWC_MAGIC = b"070701"
CRC_MAGIC = b"070702"
TRAILER = "TRAILER!!!"
ODC_HEADER = 76
NEWC_HEADER = 110
MAX_NAME = 4096  # PATH_MAX on Linux; macOS is 1024
MAX_LINK = 4096
COPY_CHUNK = 1 << 20


@dataclass(frozen=True)
class CpioEntry:
    """One member as stored. `mode` is the full st_mode (type bits included)."""

    name: str
    mode: int
    uid: int
    gid: int
    nlink: int
    mtime: int
    size: int
    dev: int = 0
    ino: int = 0
    rdev: int = 0
    link_target: str | None = None

    @property
    def kind(self) -> str:
        fmt = stat.S_IFMT(self.mode)
        return {stat.S_IFDIR: "dir", stat.S_IFREG: "file", stat.S_IFLNK: "symlink"}.get(fmt, "other")


class _Input:
    """Exact reads from a stream; a short read is a truncated archive."""

    def __init__(self, stream: BinaryIO, where: str | None):
        self.stream = stream
        self.where = where
        self.offset = 0

    def read_upto(self, n: int) -> bytes:
        parts = []
        while n > 0:
            chunk = self.stream.read(n)
            if not chunk:
                break
            parts.append(chunk)
            n -= len(chunk)
        data = b"".join(parts)
        self.offset += len(data)
        return data

    def read_exact(self, n: int, what: str) -> bytes:
        data = self.read_upto(n)
        if len(data) != n:
            raise FormatError(f"cpio archive truncated in {what} (at byte {self.offset})",
                              where=self.where)
        return data

    def skip(self, n: int, what: str) -> None:
        while n > 0:
            step = min(n, COPY_CHUNK)
            self.read_exact(step, what)
            n -= step


class EntryData:
    """Reader for one member's data; only valid until the iterator moves on (then it is skipped)."""

    def __init__(self, src: _Input, size: int, name: str, preload: bytes | None = None):
        self._src = src
        self._left = size
        self._name = name
        self._preload = preload
        self._check = 0

    def read(self, n: int = -1) -> bytes:
        if self._preload is not None:
            data = self._preload if n < 0 else self._preload[:n]
            self._preload = self._preload[len(data):]
            return data
        if n < 0 or n > self._left:
            n = self._left
        if n == 0:
            return b""
        data = self._src.read_exact(n, f"data of {self._name!r}")
        self._left -= n
        self._check = (self._check + sum(data)) & 0xFFFFFFFF
        return data

    def chunks(self, size: int = COPY_CHUNK) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data

    def _finish(self) -> int:
        """Consume what the caller did not read; returns the byte sum (newc "crc")."""
        while self._left:
            self.read(min(self._left, COPY_CHUNK))
        return self._check


def _octal(field: bytes, name: str, where: str | None) -> int:
    if not field or any(c not in b"01234567" for c in field):
        raise FormatError(f"cpio odc header field {name} is not octal: {field!r}", where=where)
    return int(field, 8)


def _hex(field: bytes, name: str, where: str | None) -> int:
    if any(c not in b"0123456789abcdefABCDEF" for c in field):
        raise FormatError(f"cpio newc header field {name} is not hexadecimal: {field!r}", where=where)
    return int(field, 16)


def _read_name(src: _Input, namesize: int) -> str:
    if namesize < 2 or namesize > MAX_NAME:
        raise FormatError(f"cpio name size {namesize} out of range (2..{MAX_NAME})", where=src.where)
    raw = src.read_exact(namesize, "a member name")
    if raw[-1] != 0 or 0 in raw[:-1]:
        raise FormatError("cpio member name is not a single NUL-terminated string", where=src.where)
    return decode_name(raw[:-1])


def iter_cpio(stream: BinaryIO, *, where: str | None = None) -> Iterator[tuple[CpioEntry, EntryData]]:
    """Yield (entry, data reader) per member up to TRAILER!!!; bytes after it are ignored.

    Symlink targets are read for the entry (bounded); their reader returns the same bytes.
    """
    src = _Input(stream, where)
    while True:
        magic = src.read_exact(6, "a member header")
        if magic == ODC_MAGIC:
            head = src.read_exact(ODC_HEADER - 6, "a member header")
            f = [head[i:i + 6] for i in range(0, 42, 6)] + [head[42:53], head[53:59], head[59:70]]
            names = ("dev", "ino", "mode", "uid", "gid", "nlink", "rdev", "mtime", "namesize", "filesize")
            v = dict(zip(names, (_octal(x, n, where) for x, n in zip(f, names))))
            name = _read_name(src, v["namesize"])
            pad_name = pad_data = 0
            check = None
        elif magic in (NEWC_MAGIC, CRC_MAGIC):
            head = src.read_exact(NEWC_HEADER - 6, "a member header")
            names = ("ino", "mode", "uid", "gid", "nlink", "mtime", "filesize", "devmajor", "devminor",
                     "rdevmajor", "rdevminor", "namesize", "check")
            v = dict(zip(names, (_hex(head[i:i + 8], n, where) for i, n in zip(range(0, 104, 8), names))))
            v["dev"] = os.makedev(v["devmajor"] & 0xFFF, v["devminor"] & 0xFFFFF)
            v["rdev"] = os.makedev(v["rdevmajor"] & 0xFFF, v["rdevminor"] & 0xFFFFF)
            name = _read_name(src, v["namesize"])
            pad_name = (-(NEWC_HEADER + v["namesize"])) % 4
            pad_data = (-v["filesize"]) % 4
            check = v["check"] if magic == CRC_MAGIC else None
            src.skip(pad_name, "name padding")
        elif magic[:2] in (b"\xc7\x71", b"\x71\xc7"):
            raise UnsupportedError("old binary cpio archives are not supported", where=where,
                                   hint="payloads are odc ('070707')")
        else:
            raise FormatError(f"not a cpio member header at byte {src.offset - 6} (magic {magic!r})",
                              where=where)
        if name == TRAILER:
            return
        link_target = None
        preload = None
        if stat.S_ISLNK(v["mode"]):
            if v["filesize"] > MAX_LINK:
                raise FormatError(f"symlink target of {name!r} is {v['filesize']} bytes long", where=where)
            preload = src.read_exact(v["filesize"], f"symlink target of {name!r}")
            link_target = decode_name(preload)
        entry = CpioEntry(name, v["mode"], v["uid"], v["gid"], v["nlink"], v["mtime"], v["filesize"],
                          v["dev"], v["ino"], v["rdev"], link_target)
        reader = EntryData(src, 0 if preload is not None else v["filesize"], name, preload)
        yield entry, reader
        total = reader._finish()
        if check is not None and preload is None and stat.S_ISREG(v["mode"]) and total != check:
            raise ChecksumError(f"cpio crc mismatch for {name!r}", where=where)
        src.skip(pad_data, "data padding")


def list_cpio(stream: BinaryIO, *, where: str | None = None) -> list[CpioEntry]:
    return [entry for entry, _ in iter_cpio(stream, where=where)]


def safe_relpath(name: str, *, where: str | None = None) -> str:
    """Member name -> relative path below the destination ("" for the root). Refuses escapes."""
    if "\x00" in name:
        raise FormatError(f"member name contains NUL: {name!r}", where=where)
    if name.startswith("/"):
        raise FormatError(f"absolute member name refused: {name!r}", where=where)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise FormatError(f"member name with '..' refused: {name!r}", where=where)
    return "/".join(parts)


def _ensure_real_dirs(dest: Path, rel: str, where: str | None) -> None:
    """Every parent of `rel` below dest must be a real directory: never write through a symlink."""
    cur = dest
    for part in rel.split("/")[:-1]:
        cur = cur / part
        try:
            st = cur.lstat()
        except FileNotFoundError:
            os.mkdir(cur, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise FormatError(f"member {rel!r} would be written through a non-directory "
                              f"({cur.relative_to(dest)})", where=where)


def _remove_existing(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        return
    path.unlink()


def extract_cpio(stream: BinaryIO, dest: Path, *, where: str | None = None) -> list[CpioEntry]:
    """Extract below `dest` (created if missing). Never writes outside it, never follows links.

    Permission bits are applied without setuid/setgid/sticky; owners are not changed (the archive's
    owners are Mac accounts). Directory modes and times are set last so read-only dirs still fill.
    """
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        done: list[CpioEntry] = []
        dirs: list[tuple[Path, CpioEntry]] = []
        for entry, data in iter_cpio(stream, where=where):
            rel = safe_relpath(entry.name, where=where)
            target = dest / rel if rel else dest
            kind = entry.kind
            if rel:
                _ensure_real_dirs(dest, rel, where)
            if kind == "dir":
                if rel:
                    _remove_existing(target)
                    if not target.is_dir():
                        os.mkdir(target, 0o700)
                dirs.append((target, entry))
            elif kind == "file":
                if not rel:
                    raise FormatError("a regular file cannot be the archive root", where=where)
                _remove_existing(target)
                if target.is_dir():
                    raise FormatError(f"file {entry.name!r} collides with a directory", where=where)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    for chunk in data.chunks():
                        out.write(chunk)
                os.chmod(target, stat.S_IMODE(entry.mode) & 0o777)
                os.utime(target, (entry.mtime, entry.mtime))
            elif kind == "symlink":
                if not rel:
                    raise FormatError("a symlink cannot be the archive root", where=where)
                _remove_existing(target)
                if target.is_dir() and not target.is_symlink():
                    raise FormatError(f"symlink {entry.name!r} collides with a directory", where=where)
                os.symlink(entry.link_target or "", target)
                os.utime(target, (entry.mtime, entry.mtime), follow_symlinks=False)
            else:
                raise UnsupportedError(f"member {entry.name!r} is a device, fifo or socket "
                                       f"(mode {entry.mode:o}); not extracted", where=where)
            done.append(entry)
        for target, entry in reversed(dirs):
            os.chmod(target, (stat.S_IMODE(entry.mode) & 0o777) | 0o700)
            os.utime(target, (entry.mtime, entry.mtime))
        return done
    except OSError as exc:
        raise FormatError(f"cannot extract into {dest}: {exc.strerror or exc}", where=where) from None


def _odc_field(value: int, width: int, what: str, path: str) -> bytes:
    if value < 0 or value >= 8 ** width:
        raise UnsupportedError(f"{what} {value} does not fit a cpio odc header", where=path)
    return b"%0*o" % (width, value)


_ODC_FIELDS = ((6, "device"), (6, "inode"), (6, "mode"), (6, "uid"), (6, "gid"), (6, "link count"),
               (6, "rdev"), (11, "mtime"), (6, "name size"), (11, "file size"))
_ODC_FORMAT = ODC_MAGIC + b"".join(b"%%0%do" % width for width, _ in _ODC_FIELDS)
_MAX6, _MAX11 = 8 ** 6, 8 ** 11


def _odc_header(*, dev: int, ino: int, mode: int, uid: int, gid: int, nlink: int, rdev: int,
                mtime: int, name: bytes, size: int, path: str) -> bytes:
    values = (dev, ino, mode, uid, gid, nlink, rdev, mtime, len(name) + 1, size)
    if (min(values) < 0 or max(dev, ino, mode, uid, gid, nlink, rdev, values[8]) >= _MAX6
            or mtime >= _MAX11 or size >= _MAX11):
        for value, (width, what) in zip(values, _ODC_FIELDS):
            _odc_field(value, width, what, path)  # names the field that does not fit
    return _ODC_FORMAT % values + name + b"\x00"


def _file_chunks(entry: TreeEntry) -> Iterator[bytes]:
    """Content of a file entry, streamed from disk; a file changing size mid-build is an error."""
    if entry.data is not None:
        if len(entry.data) != entry.size:
            raise BuildError(f"entry size {entry.size} differs from its data ({len(entry.data)} bytes)",
                             where=entry.path)
        yield entry.data
        return
    if entry.source is None:
        raise BuildError("file entry has neither source nor data", where=entry.path)
    seen = 0
    try:
        with open(entry.source, "rb") as fh:
            while True:
                chunk = fh.read(COPY_CHUNK)
                if not chunk:
                    break
                seen += len(chunk)
                if seen > entry.size:
                    break
                yield chunk
    except OSError as exc:
        raise BuildError(f"cannot read: {exc.strerror}", where=str(entry.source)) from None
    if seen != entry.size:
        raise BuildError(f"file changed size while packaging ({entry.size} -> {seen} bytes)",
                         where=str(entry.source))


def write_odc(out: BinaryIO, entries: Iterable[TreeEntry], *, on_data=None) -> int:
    """Write a strict odc archive of `entries` in the given order; returns bytes written.

    dev is 0 and inodes count from 1 (unique; no hard links). nlink is 1 for files and links and
    2 + subdirectories for directories, as a Unix filesystem (and so `find | cpio`) reports it.
    `on_data(entry, chunk)` sees every content chunk (used to checksum in the same pass).
    """
    entries = check_tree(entries)
    subdirs: dict[str, int] = {}
    for entry in entries:
        if entry.kind == "dir" and entry.parent is not None:
            subdirs[entry.parent] = subdirs.get(entry.parent, 0) + 1
    written = 0
    for ino, entry in enumerate(entries, start=1):
        name = encode_name(entry.path)
        if entry.kind == "dir":
            nlink, size = 2 + subdirs.get(entry.path, 0), 0
        elif entry.kind == "symlink":
            nlink, size = 1, len(encode_name(entry.link_target or ""))
        else:
            nlink, size = 1, entry.size
        head = _odc_header(dev=0, ino=ino, mode=entry.st_mode, uid=entry.uid, gid=entry.gid,
                           nlink=nlink, rdev=0, mtime=entry.mtime, name=name, size=size,
                           path=entry.path)
        out.write(head)
        written += len(head)
        if entry.kind == "symlink":
            target = encode_name(entry.link_target or "")
            if on_data:
                on_data(entry, target)
            out.write(target)
            written += len(target)
        elif entry.kind == "file":
            for chunk in _file_chunks(entry):
                if on_data:
                    on_data(entry, chunk)
                out.write(chunk)
                written += len(chunk)
    trailer = _odc_header(dev=0, ino=0, mode=0, uid=0, gid=0, nlink=1, rdev=0, mtime=0,
                          name=TRAILER.encode(), size=0, path=TRAILER)
    pad = (-(written + len(trailer))) % 512
    out.write(trailer + b"\x00" * pad)
    return written + len(trailer) + pad
