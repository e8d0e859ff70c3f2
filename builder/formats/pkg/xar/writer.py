"""XarWriter: builds a xar whose bytes depend only on what was added. Member data is spooled (to an
unlinked temp file, or memory for small archives) or, for large sources, hashed now and copied by
the kernel at close(); the TOC lists members depth-first in name order and the heap follows it."""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import re
import stat
import tempfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from .... import repro
from ....errors import BuildError, FormatError, UnsupportedError
from .model import (ALGORITHM_IDS, CHUNK, GZIP, HASH_STYLES, OCTET_STREAM, Signer, XarEntry,
                    split_path)
from .output import Output, copy_range, write_all
from .prefix import assemble_prefix, check_signer
from .toc import element_xml, escape_attr, escape_text, signature_element

if TYPE_CHECKING:
    from .reader import XarReader

# Sources at least this large are hashed now and copied by the kernel at close() instead of being
# spooled: one read pass fewer on the hot path (wrapping a vendor component).
REFERENCE_MIN = 4 << 20


@dataclass(frozen=True)
class _Blob:
    """Stored bytes of one member: in the spool (fd None) or left in a large source file (fd)."""

    offset: int
    length: int
    size: int
    encoding: str
    archived: tuple[str, str] | None
    extracted: tuple[str, str] | None
    fd: int | None = None
    stamp: tuple[int, int] | None = None  # (size, mtime_ns) of the source when it was hashed


def _stamp(st: os.stat_result) -> tuple[int, int]:
    return st.st_size, st.st_mtime_ns


@dataclass
class _Node:
    name: str
    type: str  # "file" | "directory"
    mode: int
    uid: int
    gid: int
    user: str | None
    group: str | None
    explicit: bool = True
    blob: _Blob | None = None
    children: dict[str, "_Node"] = field(default_factory=dict)


def _owner_names(uid: int, gid: int, user: str | None, group: str | None) -> tuple[str | None, str | None]:
    return (user if user is not None else ("root" if uid == 0 else None),
            group if group is not None else ("wheel" if gid == 0 else None))


def _check_ids(path: str, mode: int, uid: int, gid: int) -> None:
    if not (isinstance(mode, int) and 0 <= mode <= 0o7777):
        raise BuildError(f"mode {mode!r} out of range", where=path)
    for what, value in (("uid", uid), ("gid", gid)):
        if not (isinstance(value, int) and 0 <= value < 1 << 32):
            raise BuildError(f"{what} {value!r} out of range", where=path)


# characters XML cannot carry (controls, lone surrogates, U+FFFE/U+FFFF) or that we keep out of it
_UNSAFE_IN_XML = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _needs_base64(name: str) -> bool:
    return _UNSAFE_IN_XML.search(name) is not None or name != name.strip()


SMALL_MEMBER = 1 << 16


@functools.lru_cache(maxsize=8)
def _toc_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


@functools.lru_cache(maxsize=32)
def _deflated(data: bytes, alg: str) -> tuple[bytes, str, str]:
    """The zlib stream XarWriter._store writes for `data` (same level; deflate's output does not
    depend on how its input is split), made in one call, with its archived and extracted digests."""
    packed = zlib.compress(data, 9)
    new = getattr(hashlib, alg)
    return packed, new(packed).hexdigest(), new(data).hexdigest()


@dataclass
class _Layout:
    """The TOC walk's running state: nodes in id (and heap) order, and the next data offset."""

    offset: int
    order: list[_Node] = field(default_factory=list)


def _walk(node: _Node, level: int, layout: _Layout, out: list[str]) -> None:
    """The <file> elements below `node` as TOC text, depth-first and name-sorted, indented as
    ET.indent(space=" ") indents them (`level`: their depth below <xar>); ids and heap order
    follow this order. Written as text, not built as ElementTree elements: on a small archive
    (an identity package) building and serialising the tree cost more than its compression.
    A function of the module, not a closure: a recursive closure is a reference cycle."""
    pad = "\n" + " " * level
    inner = pad + " "
    deep = inner + " "
    for name in sorted(node.children):
        child = node.children[name]
        layout.order.append(child)
        b = child.blob
        data = ""
        if b is not None:
            data = (f"{inner}<data>{deep}<length>{b.length}</length>{deep}<offset>{layout.offset}</offset>"
                    f'{deep}<size>{b.size}</size>{deep}<encoding style="{escape_attr(b.encoding)}"/>')
            if b.extracted:
                data += (f'{deep}<extracted-checksum style="{escape_attr(b.extracted[0])}">'
                         f"{escape_text(b.extracted[1])}</extracted-checksum>")
            if b.archived:
                data += (f'{deep}<archived-checksum style="{escape_attr(b.archived[0])}">'
                         f"{escape_text(b.archived[1])}</archived-checksum>")
            data += f"{inner}</data>"
            layout.offset += b.length
        group = "" if child.group is None else f"{inner}<group>{escape_text(child.group)}</group>"
        user = "" if child.user is None else f"{inner}<user>{escape_text(child.user)}</user>"
        if _needs_base64(child.name):
            encoded = base64.b64encode(child.name.encode("utf-8")).decode("ascii")
            name_el = f'{inner}<name enctype="base64">{encoded}</name>'
        else:
            name_el = f"{inner}<name>{escape_text(child.name)}</name>"
        out.append(f'{pad}<file id="{len(layout.order)}">{data}{group}{inner}<gid>{child.gid}</gid>{user}'
                   f"{inner}<uid>{child.uid}</uid>{inner}<mode>0{child.mode:o}</mode>{inner}<type>{child.type}</type>"
                   f"{name_el}")
        if child.children:
            _walk(child, level + 1, layout, out)
        out.append(f"{pad}</file>")


class XarWriter:
    """Builds a xar file; data is spooled to a temp file so memory stays flat.

    in_memory=True spools to memory instead, for small archives (a per-device identity package):
    the output file is then the only file created, and `written` holds its (sha256, size); with
    dest None no file at all is created and `data` holds the archive (a sealed build's secrets;
    `written` stays None: the caller hashes what it keeps). `mode` is the output's permission
    bits, set before it appears under its name (0o600 for an archive that holds secrets).
    """

    def __init__(self, dest: str | os.PathLike | None, *, checksum_alg: str = "sha1",
                 creation_time: int | None = None, signer: Signer | None = None,
                 file_checksum_alg: str = "sha1", in_memory: bool = False, mode: int = 0o644):
        if checksum_alg not in ALGORITHM_IDS:
            raise BuildError(f"unsupported TOC checksum algorithm {checksum_alg!r}",
                             hint=f"use one of {', '.join(sorted(ALGORITHM_IDS))}")
        if file_checksum_alg not in HASH_STYLES:
            raise BuildError(f"unsupported file checksum algorithm {file_checksum_alg!r}")
        if dest is None and not in_memory:
            raise BuildError("internal error: an archive without a destination must be built in memory")
        self.dest = Path(dest) if dest is not None else None
        self.data: bytes | None = None  # the archive, when dest is None
        self.checksum_alg = checksum_alg
        self.file_checksum_alg = file_checksum_alg
        self._file_hash = getattr(hashlib, file_checksum_alg)  # every HASH_STYLES name is one
        self.creation_time = _toc_time(repro.build_epoch() if creation_time is None else int(creation_time))
        self.signer = signer
        self._sig_sizes = check_signer(signer)[:2] if signer is not None else (0, 0)
        self._root = _Node("", "directory", 0o755, 0, 0, "root", "wheel")
        self._closed = False
        self.mode = mode
        self.written: tuple[str, int] | None = None  # (sha256, size) of the output, see close()
        self._spool = None
        self._memory: bytearray | None = bytearray() if in_memory else None
        self._spool_fd = -1  # with in_memory: stands for self._memory in _Blob ranges
        if not in_memory:
            directory = self.dest.parent if str(self.dest.parent) else Path(".")
            try:
                self._spool = tempfile.TemporaryFile(dir=directory, buffering=0)
            except OSError as exc:
                raise BuildError(f"cannot create temporary file: {exc.strerror or exc}",
                                 where=str(self.dest)) from None
            self._spool_fd = self._spool.fileno()
        self._spool_pos = 0
        self._held: list[int] = []  # dup'd descriptors of referenced sources, closed at the end

    def __enter__(self) -> "XarWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # -- tree
    def _split(self, path: str) -> list[str]:
        try:
            parts = split_path(path, "")
            for part in parts:
                part.encode("utf-8")
        except FormatError as exc:
            raise BuildError(exc.message, where=f"{self.dest}: {path}") from None
        except UnicodeError:
            raise BuildError("member name is not valid UTF-8", where=f"{self.dest}: {path!r}") from None
        return parts

    def _parent(self, parts: list[str], path: str) -> _Node:
        node = self._root
        for part in parts[:-1]:
            child = node.children.get(part)
            if child is None:
                child = _Node(part, "directory", 0o755, 0, 0, "root", "wheel", explicit=False)
                node.children[part] = child
            elif child.type != "directory":
                raise BuildError(f"{part!r} is a file, cannot hold {path!r}", where=str(self.dest))
            node = child
        return node

    def _check_open(self) -> None:
        if self._closed:
            raise BuildError("xar writer is already closed", where=str(self.dest))

    def add_directory(self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0,
                      user: str | None = None, group: str | None = None) -> None:
        """user/group default to root/wheel for uid/gid 0 and are omitted otherwise."""
        self._check_open()
        parts = self._split(path)
        _check_ids(path, mode, uid, gid)
        parent = self._parent(parts, path)
        existing = parent.children.get(parts[-1])
        if existing is not None and (existing.explicit or existing.type != "directory"):
            raise BuildError(f"duplicate member {path!r}", where=str(self.dest))
        user, group = _owner_names(uid, gid, user, group)
        node = _Node(parts[-1], "directory", mode, uid, gid, user, group)
        if existing is not None:
            node.children = existing.children
        parent.children[parts[-1]] = node

    def _add_file(self, path: str, blob_fn, mode: int, uid: int, gid: int,
                  user: str | None, group: str | None) -> None:
        self._check_open()
        parts = self._split(path)
        _check_ids(path, mode, uid, gid)
        parent = self._parent(parts, path)
        if parts[-1] in parent.children:
            raise BuildError(f"duplicate member {path!r}", where=str(self.dest))
        blob = blob_fn()  # only registered once its data is fully and correctly spooled
        user, group = _owner_names(uid, gid, user, group)
        parent.children[parts[-1]] = _Node(parts[-1], "file", mode, uid, gid, user, group, blob=blob)

    def _hold(self, fd: int) -> int:
        held = os.dup(fd)
        self._held.append(held)
        return held

    def _spool_write(self, data) -> None:
        if self._memory is not None:
            self._memory += data
        else:
            write_all(self._spool_fd, data)
        self._spool_pos += len(data)

    def _store(self, chunks: Iterable, compress: bool) -> _Blob:
        alg = self.file_checksum_alg
        start = self._spool_pos
        ext = self._file_hash()
        size = 0
        if not compress:
            for chunk in chunks:
                ext.update(chunk)
                self._spool_write(chunk)
                size += len(chunk)
            digest = (alg, ext.hexdigest())
            return _Blob(start, size, size, OCTET_STREAM, digest, digest)
        arc = self._file_hash()
        z = zlib.compressobj(9)
        for chunk in chunks:
            ext.update(chunk)
            size += len(chunk)
            out = z.compress(chunk)
            if out:
                arc.update(out)
                self._spool_write(out)
        out = z.flush()
        arc.update(out)
        self._spool_write(out)
        return _Blob(start, self._spool_pos - start, size, GZIP, (alg, arc.hexdigest()),
                     (alg, ext.hexdigest()))

    def add_chunks(self, path: str, chunks: Iterable[bytes], *, compress: bool, mode: int = 0o644,
                   uid: int = 0, gid: int = 0, user: str | None = None, group: str | None = None) -> None:
        """Add a file from an iterable of byte chunks (e.g. a payload being generated)."""
        self._add_file(path, lambda: self._store(chunks, compress), mode, uid, gid, user, group)

    def add_bytes(self, path: str, data: bytes, *, compress: bool, mode: int = 0o644, uid: int = 0,
                  gid: int = 0, user: str | None = None, group: str | None = None) -> None:
        if compress and len(data) <= SMALL_MEMBER:
            # small members recur (every identity package of a build has the same Bom): their
            # zlib stream, the same bytes _store would make, and its digests are made once per process
            packed = _deflated(bytes(data), self.file_checksum_alg)
            self._add_file(path, lambda: self._store_packed(len(data), *packed), mode, uid, gid, user, group)
            return
        view = memoryview(data)
        chunks = (view,) if len(view) <= CHUNK else (view[i:i + CHUNK] for i in range(0, len(view), CHUNK))
        self.add_chunks(path, chunks, compress=compress, mode=mode, uid=uid, gid=gid, user=user, group=group)

    def _store_packed(self, size: int, packed: bytes, archived: str, extracted: str) -> _Blob:
        alg = self.file_checksum_alg
        start = self._spool_pos
        self._spool_write(packed)
        return _Blob(start, len(packed), size, GZIP, (alg, archived), (alg, extracted))

    def add_file(self, path: str, src: str | os.PathLike, *, compress: bool = False, mode: int = 0o644,
                 uid: int = 0, gid: int = 0, user: str | None = None, group: str | None = None) -> None:
        def blob() -> _Blob:
            try:
                with open(src, "rb", buffering=0) as f:
                    st = os.fstat(f.fileno())
                    if compress or not stat.S_ISREG(st.st_mode) or st.st_size < REFERENCE_MIN:
                        return self._store(_file_chunks(f), compress)
                    h = self._file_hash()
                    size = 0
                    for chunk in _file_chunks(f):
                        h.update(chunk)
                        size += len(chunk)
                    if size != st.st_size:
                        raise BuildError("file changed while being read", where=os.fspath(src))
                    digest = (self.file_checksum_alg, h.hexdigest())
                    return _Blob(0, size, size, OCTET_STREAM, digest, digest,
                                 fd=self._hold(f.fileno()), stamp=_stamp(st))
            except OSError as exc:
                raise BuildError(f"cannot read: {exc.strerror or exc}", where=os.fspath(src)) from None
        self._add_file(path, blob, mode, uid, gid, user, group)

    def add_stored(self, path: str, reader: XarReader, entry: XarEntry, *, mode: int | None = None,
                   uid: int | None = None, gid: int | None = None) -> None:
        """Embed another archive's member byte-for-byte (same encoding and checksums), verified."""
        if entry.type == "directory":
            self.add_directory(path, mode=entry.mode if mode is None else mode,
                               uid=(entry.uid or 0) if uid is None else uid,
                               gid=(entry.gid or 0) if gid is None else gid,
                               user=entry.user if uid is None else None,
                               group=entry.group if gid is None else None)
            return
        if entry.type != "file":
            raise UnsupportedError(f"cannot embed a {entry.type!r} member", where=reader._where(entry.path))
        data = entry.data

        def blob() -> _Blob | None:
            if data is None:
                return None
            start = self._spool_pos
            refer = reader._fd is not None and data.length >= REFERENCE_MIN
            st = os.fstat(reader._fd) if refer else None
            extra = None if data.archived_checksum else self._file_hash()
            for chunk in reader.iter_stored(entry):  # verifies the archived checksum at the end
                if extra is not None:
                    extra.update(chunk)
                if not refer:
                    self._spool_write(chunk)
            archived = data.archived_checksum or (self.file_checksum_alg, extra.hexdigest())
            extracted = data.extracted_checksum
            if extracted is None and data.encoding.strip().lower() == OCTET_STREAM:
                extracted = archived
            if refer:
                return _Blob(reader.heap_offset + data.offset, data.length, data.size, data.encoding,
                             archived, extracted, fd=self._hold(reader._fd), stamp=_stamp(st))
            return _Blob(start, data.length, data.size, data.encoding, archived, extracted)

        self._add_file(path, blob,
                       (entry.mode if entry.mode is not None else 0o644) if mode is None else mode,
                       (entry.uid or 0) if uid is None else uid, (entry.gid or 0) if gid is None else gid,
                       entry.user if uid is None else None, entry.group if gid is None else None)

    # -- output
    def _toc_xml(self, data_start: int) -> tuple[bytes, list[_Node]]:
        """The TOC (what toc_bytes makes of the tree ET.indent(space=" ") indented) and the file
        nodes in id order, which the heap follows."""
        alg = self.checksum_alg
        digest_size = hashlib.new(alg).digest_size
        out = ['<?xml version="1.0" encoding="UTF-8"?>\n<xar>\n <toc>\n  <creation-time>',
               escape_text(self.creation_time),
               f'</creation-time>\n  <checksum style="{escape_attr(alg)}">\n   <offset>0</offset>'
               f"\n   <size>{digest_size}</size>\n  </checksum>"]
        if self.signer is not None:
            rsa_size, cms_size = self._sig_sizes
            certs = [bytes(c) for c in self.signer.certificates]
            out.append("\n  " + element_xml(signature_element("signature", "RSA", digest_size, rsa_size, certs), 2))
            if cms_size:
                out.append("\n  " + element_xml(
                    signature_element("x-signature", "CMS", digest_size + rsa_size, cms_size, certs), 2))
        layout = _Layout(data_start)
        _walk(self._root, 2, layout, out)
        out.append("\n </toc>\n</xar>\n")
        return "".join(out).encode("utf-8"), layout.order

    def close(self) -> None:
        if self._closed:
            return
        out: Output | None = None
        try:
            digest_size = hashlib.new(self.checksum_alg).digest_size
            toc, order = self._toc_xml(digest_size + sum(self._sig_sizes))
            out = Output(self.dest) if self.dest is not None else None
            prefix = assemble_prefix(toc, self.checksum_alg, self.signer, self._sig_sizes)
            ranges: list[list] = []  # [fd, offset, length], contiguous pieces merged
            for node in order:
                b = node.blob
                if b is None or b.length == 0:
                    continue
                fd = self._spool_fd if b.fd is None else b.fd
                if b.stamp is not None and _stamp(os.fstat(fd)) != b.stamp:
                    raise BuildError("source file changed between add and close", where=node.name)
                last = ranges[-1] if ranges else None
                if last and last[0] == fd and last[1] + last[2] == b.offset:
                    last[2] += b.length
                else:
                    ranges.append([fd, b.offset, b.length])
            if self._memory is not None and all(fd == -1 for fd, _, _ in ranges):
                # everything is in memory: write it at once, and tell the caller what was written
                with memoryview(self._memory) as memory:
                    whole = b"".join([prefix, *(memory[offset:offset + length] for _, offset, length in ranges)])
                if out is None:
                    self.data = whole
                    return
                self.written = (hashlib.sha256(whole).hexdigest(), len(whole))
                write_all(out.fd, whole)
            else:
                write_all(out.fd, prefix)
                for fd, offset, length in ranges:
                    if fd == -1:
                        write_all(out.fd, memoryview(self._memory)[offset:offset + length])
                    else:
                        copy_range(fd, out.fd, offset, length)
            out.commit(self.mode)
            out = None
        except OSError as exc:
            raise BuildError(f"cannot write: {exc.strerror or exc}", where=str(self.dest)) from None
        finally:
            if out is not None:
                out.abort()
            self._finish()

    def abort(self) -> None:
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        while self._held:
            os.close(self._held.pop())
        if self._spool is not None:
            self._spool.close()
            self._spool = None
        self._memory = None


def _file_chunks(f) -> Iterator[memoryview]:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            return
        yield view[:n]
