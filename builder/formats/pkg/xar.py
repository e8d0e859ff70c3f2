"""xar container: the outer layer of every flat package (spec: flat-package-format.md §1, §2).

Reading verifies the TOC checksum on open and each member's checksums when it is read, streaming
the heap in chunks, because Installer rejects damage only on the Mac, far from where it happened.
Writing spools member data to a temp file, then emits header, TOC, checksum, signature space and
the data in sorted document order, so the same inputs give the same bytes. Any malformed input
raises a FleetpkgError subclass, never a bare library exception.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import hashlib
import io
import lzma
import os
import stat
import struct
import tempfile
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol, Sequence

from ... import repro
from ...errors import BuildError, ChecksumError, FleetpkgError, FormatError, SigningError, UnsupportedError

ALGORITHMS = {0: None, 1: "sha1", 2: "md5", 3: "sha256", 4: "sha512"}
ALGORITHM_IDS = {name: num for num, name in ALGORITHMS.items() if name}
# Digest styles accepted in <archived-checksum>/<extracted-checksum> and mackyle's named header.
_HASH_STYLES = frozenset({"sha1", "md5", "sha224", "sha256", "sha384", "sha512"})

MAGIC = b"xar!"
HEADER = struct.Struct(">4sHHQQI")
HEADER_SIZE = HEADER.size  # 28
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"

OCTET_STREAM = "application/octet-stream"
GZIP = "application/x-gzip"  # a zlib (RFC 1950) stream, despite the name
BZIP2 = "application/x-bzip2"
LZMA = "application/x-lzma"
XZ = "application/x-xz"

CHUNK = 1 << 20
# Sources at least this large are hashed now and copied by the kernel at close() instead of being
# spooled: one read pass fewer on the hot path (wrapping a vendor component).
REFERENCE_MIN = 4 << 20
# Bounds against hostile archives, checked before allocating or inflating.
MAX_TOC_COMPRESSED = 64 << 20
MAX_TOC_XML = 256 << 20
MAX_TOC_ELEMENTS = 2_000_000
MAX_XML_DEPTH = 256
MAX_ENTRIES = 200_000
MAX_FILE_DEPTH = 64
MAX_NAME_BYTES = 1024
MAX_NUMBER_DIGITS = 20


# ----------------------------------------------------------------------------------------------
# Model


@dataclass(frozen=True)
class XarData:
    offset: int  # heap-relative
    length: int  # stored bytes
    size: int  # decoded bytes
    encoding: str
    archived_checksum: tuple[str, str] | None  # (style, hex)
    extracted_checksum: tuple[str, str] | None


@dataclass(frozen=True)
class XarEntry:
    id: int
    path: str  # "/"-joined from nesting, no leading slash
    name: str
    type: str
    mode: int | None
    uid: int | None
    gid: int | None
    user: str | None
    group: str | None
    mtime: str | None
    link: str | None
    data: XarData | None


@dataclass(frozen=True)
class XarSignature:
    style: str  # "RSA" or "CMS"
    offset: int
    size: int
    certificates: tuple[bytes, ...] = field(repr=False)  # DER, TOC order (leaf first)


class Signer(Protocol):
    """Signs the TOC checksum; implemented by builder/formats/pkg/signing.py."""

    rsa_size: int
    cms_size: int
    certificates: Sequence[bytes]

    def sign(self, toc_checksum: bytes) -> tuple[bytes, bytes]: ...


# ----------------------------------------------------------------------------------------------
# Small helpers


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[1] if tag.startswith("{") else tag


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if isinstance(c.tag, str) and _local(c.tag) == name]


def _child(el: ET.Element, name: str) -> ET.Element | None:
    found = _children(el, name)
    return found[-1] if found else None


def _text(el: ET.Element, name: str) -> str | None:
    c = _child(el, name)
    return None if c is None else (c.text or "").strip()


def _number(text: str | None, what: str, where: str, *, base: int = 10) -> int | None:
    if text is None:
        return None
    if not text or len(text) > MAX_NUMBER_DIGITS or not text.isascii() or not text.isdigit():
        raise FormatError(f"{what} is not a non-negative number: {text[:40]!r}", where=where)
    if base == 8 and any(ch in "89" for ch in text):
        raise FormatError(f"{what} is not an octal number: {text!r}", where=where)
    value = int(text, base)
    if value >= 1 << 63:
        raise FormatError(f"{what} is out of range: {text}", where=where)
    return value


def _required(value: int | None, what: str, where: str) -> int:
    if value is None:
        raise FormatError(f"missing <{what}>", where=where)
    return value


def _new_hash(style: str, where: str):
    style = style.lower()
    if style not in _HASH_STYLES:
        raise UnsupportedError(f"unsupported checksum style {style!r}", where=where)
    return hashlib.new(style)


def check_name(name: str, where: str) -> None:
    """Refuse member names that could escape the extraction directory."""
    if not name:
        raise FormatError("empty member name", where=where)
    if "/" in name or "\x00" in name or name in (".", ".."):
        raise FormatError(f"unsafe member name {name!r}", where=where,
                          hint="names must not contain '/', NUL, or be '.' or '..'")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise FormatError(f"member name longer than {MAX_NAME_BYTES} bytes", where=where)


def split_path(path: str, where: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise FormatError(f"bad member path {path!r}", where=where)
    if path.startswith("/"):
        raise FormatError(f"absolute member path {path!r}", where=where)
    parts = path.split("/")
    for part in parts:
        check_name(part, f"{where}: {path}" if where else path)
    return parts


class _Decoder:
    """Streaming decoder for one <encoding> style; output bounded per call (no inflate bombs)."""

    def __init__(self, encoding: str, where: str):
        enc = encoding.strip().lower()
        self.kind = enc
        if enc == OCTET_STREAM:
            self._d = None
        elif enc == GZIP:
            self._d = zlib.decompressobj(47)  # zlib, or gzip when a writer really used gzip
        elif enc == BZIP2:
            self._d = bz2.BZ2Decompressor()
        elif enc in (LZMA, XZ):
            self._d = lzma.LZMADecompressor()
        else:
            raise UnsupportedError(f"unsupported data encoding {encoding!r}", where=where)

    @property
    def eof(self) -> bool:
        return self._d is None or self._d.eof

    def feed(self, data, limit: int) -> Iterator[bytes]:
        d = self._d
        if d is None:
            if data:
                yield data
            return
        if d.eof:
            return  # trailing bytes after the stream end are covered by the archived checksum
        if self.kind == GZIP:
            out = d.decompress(data, limit)
            while True:
                if out:
                    yield out
                if d.eof or not d.unconsumed_tail:
                    return
                out = d.decompress(d.unconsumed_tail, limit)
        out = d.decompress(data, limit)
        while True:
            if out:
                yield out
            if d.eof or d.needs_input:
                return
            out = d.decompress(b"", limit)

    def finish(self) -> Iterator[bytes]:
        if self.kind == GZIP and not self._d.eof:
            out = self._d.flush()
            if out:
                yield out


_DECODE_ERRORS = (zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)


# ----------------------------------------------------------------------------------------------
# Reader


class XarReader:
    """Open a xar: reads only the header and TOC; member data is read lazily and verified."""

    def __init__(self, source: str | os.PathLike | BinaryIO, *, name: str | None = None):
        self._own = False
        self._fd: int | None = None
        if isinstance(source, (str, os.PathLike)):
            self.name = name or os.fspath(source)
            try:
                self._f: BinaryIO = open(source, "rb", buffering=0)
            except OSError as exc:
                raise FormatError(f"cannot open: {exc.strerror or exc}", where=self.name) from None
            self._own = True
        else:
            self.name = name or str(getattr(source, "name", "<xar>"))
            self._f = source
            seekable = getattr(source, "seekable", None)
            if seekable is None or not seekable():
                raise FormatError("xar input must be a seekable file", where=self.name)
        try:
            try:
                self._fd = self._f.fileno()
                os.fstat(self._fd)
            except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
                self._fd = None
            self._open()
        except FleetpkgError:
            self.close()
            raise
        except (struct.error, ValueError, OverflowError, UnicodeError, OSError, zlib.error,
                ET.ParseError, binascii.Error, EOFError, RecursionError) as exc:
            self.close()
            raise FormatError(f"malformed xar archive: {exc}", where=self.name) from None

    # -- context manager
    def __enter__(self) -> "XarReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._own and self._f is not None:
            self._f.close()
        self._own = False

    # -- low-level reads
    def _pread(self, offset: int, size: int) -> bytes:
        if self._fd is not None:
            parts = []
            while size > 0:
                got = os.pread(self._fd, size, offset)
                if not got:
                    break
                parts.append(got)
                offset += len(got)
                size -= len(got)
            data = b"".join(parts)
        else:
            self._f.seek(offset)
            parts = []
            while size > 0:
                got = self._f.read(size)
                if not got:
                    break
                parts.append(got)
                size -= len(got)
            data = b"".join(parts)
        return data

    def _read_exact(self, offset: int, size: int, what: str, where: str | None = None) -> bytes:
        data = self._pread(offset, size)
        if len(data) != size:
            raise FormatError(f"file is truncated: {what} ends past end of file", where=where or self.name)
        return data

    def _file_size(self) -> int:
        if self._fd is not None:
            return os.fstat(self._fd).st_size
        pos = self._f.seek(0, os.SEEK_END)
        return pos

    # -- opening
    def _open(self) -> None:
        raw = self._pread(0, HEADER_SIZE)
        if len(raw) < 4 or raw[:4] != MAGIC:
            raise FormatError("not a xar archive (no 'xar!' magic)", where=self.name,
                              hint="expected a flat .pkg")
        if len(raw) < HEADER_SIZE:
            raise FormatError("file is truncated inside the xar header", where=self.name)
        _, hsize, version, lc, lu, alg = HEADER.unpack(raw)
        if hsize < HEADER_SIZE:
            raise FormatError(f"xar header size {hsize} is smaller than 28", where=self.name)
        if version not in (0, 1):
            raise UnsupportedError(f"unsupported xar version {version}", where=self.name)
        alg_name = ALGORITHMS.get(alg, "?")
        if hsize > HEADER_SIZE and alg == 3:
            # mackyle's extended header names the algorithm after byte 28.
            extra = self._read_exact(HEADER_SIZE, hsize - HEADER_SIZE, "xar header")
            named = extra.split(b"\x00", 1)[0].decode("ascii", "replace").lower()
            if named:
                alg_name = named
        if alg_name == "?" or (alg_name is not None and alg_name not in _HASH_STYLES):
            raise UnsupportedError(f"unsupported TOC checksum algorithm {alg}", where=self.name)
        if alg_name is None:
            raise UnsupportedError("archive has no TOC checksum (algorithm 0); refusing unverifiable input",
                                   where=self.name)
        if lc == 0 or lc > MAX_TOC_COMPRESSED:
            raise FormatError(f"compressed TOC length {lc} out of bounds (1..{MAX_TOC_COMPRESSED})",
                              where=self.name)
        if lu == 0 or lu > MAX_TOC_XML:
            raise FormatError(f"TOC length {lu} out of bounds (1..{MAX_TOC_XML})", where=self.name)
        self.header_size = hsize
        self.version = version
        self.checksum_alg = alg_name
        self.toc_compressed_length = lc
        self.toc_length = lu
        self.heap_offset = hsize + lc
        self.signature_base = HEADER_SIZE + lc  # where Apple's xar reads signatures from (§1.1)
        self.file_size = self._file_size()
        if self.heap_offset > self.file_size:
            raise FormatError("file is truncated inside the TOC", where=self.name)
        self.toc_compressed = self._read_exact(hsize, lc, "TOC")
        digest_size = hashlib.new(alg_name).digest_size
        computed = hashlib.new(alg_name, self.toc_compressed).digest()
        at_zero = self._pread(self.heap_offset, digest_size)
        root: ET.Element | None = None
        if at_zero != computed:
            # The TOC is damaged, unless it declares its checksum elsewhere in the heap.
            try:
                xml = self._inflate_toc()
                root = self._parse_xml(xml)
                offset, size = self._checksum_location(root, alg_name, digest_size)
            except FleetpkgError:
                raise ChecksumError("TOC checksum does not match: the TOC is damaged", where=self.name,
                                    hint="re-download or rebuild the package") from None
            stored = self._pread(self.heap_offset + offset, size)
            if offset == 0 or stored != computed:
                raise ChecksumError("TOC checksum does not match: the TOC is damaged", where=self.name,
                                    hint="re-download or rebuild the package")
        else:
            xml = self._inflate_toc()
            root = self._parse_xml(xml)
        self.toc_xml = xml
        self._root = root
        self.checksum_offset, self.checksum_size = self._checksum_location(root, alg_name, digest_size)
        self.stored_toc_checksum = computed
        self._parse_toc(root)

    def _inflate_toc(self) -> bytes:
        d = zlib.decompressobj()
        try:
            xml = d.decompress(self.toc_compressed, self.toc_length + 1)
        except zlib.error as exc:
            raise FormatError(f"TOC is not a valid zlib stream: {exc}", where=self.name) from None
        if len(xml) != self.toc_length or not d.eof:
            raise FormatError(f"TOC inflates to a size other than the header's {self.toc_length} bytes",
                              where=self.name)
        return xml

    def _parse_xml(self, xml: bytes) -> ET.Element:
        if b"<!DOCTYPE" in xml or b"<!ENTITY" in xml:
            raise FormatError("TOC contains a DOCTYPE/ENTITY declaration", where=self.name)
        if b"\x00" in xml:
            raise FormatError("TOC contains a NUL byte", where=self.name)
        parser = ET.XMLPullParser(events=("start", "end"))
        elements = depth = 0
        root = None
        view = memoryview(xml)
        try:
            for pos in range(0, len(xml), CHUNK):
                parser.feed(bytes(view[pos:pos + CHUNK]))
                for event, el in parser.read_events():
                    if event == "start":
                        if root is None:
                            root = el
                        elements += 1
                        depth += 1
                        if elements > MAX_TOC_ELEMENTS or depth > MAX_XML_DEPTH:
                            raise FormatError("TOC has too many or too deeply nested elements",
                                              where=self.name)
                    else:
                        depth -= 1
            parser.close()
            for _ in parser.read_events():
                pass
        except (ET.ParseError, LookupError, ValueError, UnicodeError) as exc:
            raise FormatError(f"TOC is not well-formed XML: {exc}", where=self.name) from None
        if root is None or _local(root.tag) != "xar":
            raise FormatError("TOC root element is not <xar>", where=self.name)
        return root

    def _toc(self, root: ET.Element) -> ET.Element:
        tocs = _children(root, "toc")
        if len(tocs) != 1:
            raise FormatError(f"TOC must have exactly one <toc>, found {len(tocs)}", where=self.name)
        return tocs[0]

    def _checksum_location(self, root: ET.Element, alg: str, digest_size: int) -> tuple[int, int]:
        cks = _child(self._toc(root), "checksum")
        if cks is None:
            return 0, digest_size
        style = (cks.get("style") or "").strip().lower()
        if style and style != alg:
            raise FormatError(f"TOC checksum style {style!r} does not match the header's {alg!r}",
                              where=self.name)
        where = f"{self.name}: <checksum>"
        offset = _number(_text(cks, "offset"), "checksum offset", where)
        size = _number(_text(cks, "size"), "checksum size", where)
        offset = 0 if offset is None else offset
        size = digest_size if size is None else size
        if size != digest_size:
            raise FormatError(f"TOC checksum size {size} is not the {alg} digest size {digest_size}",
                              where=self.name)
        if self.heap_offset + offset + size > self.file_size:
            raise FormatError("file is truncated: TOC checksum lies past end of file", where=self.name)
        return offset, size

    def _parse_toc(self, root: ET.Element) -> None:
        toc = self._toc(root)
        self.creation_time = _text(toc, "creation-time")
        self.signature = self._parse_signature(_child(toc, "signature"), "signature")
        self.x_signature = self._parse_signature(_child(toc, "x-signature"), "x-signature")
        self.entries: list[XarEntry] = []
        self._by_path: dict[str, XarEntry] = {}
        self._extra_ranges: list[tuple[int, int]] = []  # <ea> heap ranges, shifted by resign too
        # Iterative pre-order walk: (element, parent path, depth).
        stack = [(el, "", 1) for el in reversed(_children(toc, "file"))]
        while stack:
            el, parent, depth = stack.pop()
            if depth > MAX_FILE_DEPTH:
                raise FormatError(f"directories nested deeper than {MAX_FILE_DEPTH}", where=self.name)
            entry = self._parse_file(el, parent)
            self.entries.append(entry)
            if len(self.entries) > MAX_ENTRIES:
                raise FormatError(f"more than {MAX_ENTRIES} entries", where=self.name)
            self._by_path.setdefault(entry.path, entry)
            stack.extend((c, entry.path, depth + 1) for c in reversed(_children(el, "file")))
        ends = [self.checksum_offset + self.checksum_size]
        for sig in (self.signature, self.x_signature):
            if sig is not None:
                base = self.signature_base + sig.offset
                if base + sig.size > self.file_size:
                    raise FormatError(f"file is truncated: <{self._sig_tag(sig)}> lies past end of file",
                                      where=self.name)
                ends.append(base + sig.size - self.heap_offset)
        for entry in self.entries:
            if entry.data is not None:
                if self.heap_offset + entry.data.offset + entry.data.length > self.file_size:
                    raise FormatError("file is truncated: member data lies past end of file",
                                      where=self._where(entry.path))
                ends.append(entry.data.offset + entry.data.length)
        for off, length in self._extra_ranges:
            if self.heap_offset + off + length > self.file_size:
                raise FormatError("file is truncated: extended attribute data past end of file",
                                  where=self.name)
            ends.append(off + length)
        self._heap_end = max(ends)

    def _sig_tag(self, sig: XarSignature) -> str:
        return "signature" if sig is self.signature else "x-signature"

    def _parse_signature(self, el: ET.Element | None, tag: str) -> XarSignature | None:
        if el is None:
            return None
        where = f"{self.name}: <{tag}>"
        offset = _required(_number(_text(el, "offset"), "signature offset", where), "offset", where)
        size = _required(_number(_text(el, "size"), "signature size", where), "size", where)
        certs = []
        for c in el.iter():
            if isinstance(c.tag, str) and _local(c.tag) == "X509Certificate":
                b64 = "".join((c.text or "").split())
                try:
                    certs.append(base64.b64decode(b64, validate=True))
                except (binascii.Error, ValueError):
                    raise FormatError("certificate is not valid base64", where=where) from None
        return XarSignature(style=(el.get("style") or "").strip(), offset=offset, size=size,
                            certificates=tuple(certs))

    def _parse_file(self, el: ET.Element, parent: str) -> XarEntry:
        where = f"{self.name}: {parent or '/'}"
        id_text = (el.get("id") or "").strip()
        file_id = _required(_number(id_text or None, "file id", where), "id", where)
        names = _children(el, "name")
        if not names:
            raise FormatError(f"file id {file_id} has no <name>", where=where)
        name_el = names[-1]  # Apple output may repeat <name>; apple-xar takes the last
        name = name_el.text or ""
        if (name_el.get("enctype") or "").lower() == "base64":
            try:
                name = base64.b64decode("".join(name.split()), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise FormatError(f"file id {file_id}: bad base64 <name>", where=where) from None
        path = f"{parent}/{name}" if parent else name
        check_name(name, f"{self.name}: {path}")
        mwhere = self._where(path)
        type_el = _child(el, "type")
        ftype = (type_el.text or "").strip() if type_el is not None else "file"
        link = _text(el, "link")
        if link is None and type_el is not None and type_el.get("link"):
            link = type_el.get("link")
        data = None
        data_el = _child(el, "data")
        if data_el is not None:
            data = self._parse_data(data_el, mwhere)
        for ea in _children(el, "ea"):
            off = _number(_text(ea, "offset"), "ea offset", mwhere)
            length = _number(_text(ea, "length"), "ea length", mwhere)
            if off is not None and length is not None:
                self._extra_ranges.append((off, length))
        user = _text(el, "user")
        group = _text(el, "group")
        return XarEntry(
            id=file_id, path=path, name=name, type=ftype,
            mode=_number(_text(el, "mode"), "mode", mwhere, base=8),
            uid=_number(_text(el, "uid"), "uid", mwhere), gid=_number(_text(el, "gid"), "gid", mwhere),
            user=user, group=group, mtime=_text(el, "mtime"), link=link, data=data,
        )

    def _parse_data(self, el: ET.Element, where: str) -> XarData:
        offset = _required(_number(_text(el, "offset"), "data offset", where), "offset", where)
        length = _required(_number(_text(el, "length"), "data length", where), "length", where)
        size = _number(_text(el, "size"), "data size", where)
        enc_el = _child(el, "encoding")
        encoding = OCTET_STREAM if enc_el is None else (enc_el.get("style") or OCTET_STREAM).strip()
        return XarData(offset=offset, length=length, size=length if size is None else size,
                       encoding=encoding,
                       archived_checksum=self._parse_sum(_child(el, "archived-checksum")),
                       extracted_checksum=self._parse_sum(_child(el, "extracted-checksum")))

    @staticmethod
    def _parse_sum(el: ET.Element | None) -> tuple[str, str] | None:
        if el is None:
            return None
        style = (el.get("style") or "").strip().lower()
        if style in ("", "none"):
            return None
        return style, (el.text or "").strip().lower()

    # -- public queries
    def _where(self, path: str) -> str:
        return f"{self.name}: {path}"

    def get(self, path: str) -> XarEntry | None:
        return self._by_path.get(path)

    def _entry(self, entry_or_path: XarEntry | str) -> XarEntry:
        if isinstance(entry_or_path, XarEntry):
            return entry_or_path
        entry = self._by_path.get(entry_or_path)
        if entry is None:
            raise FormatError(f"no member named {entry_or_path!r}", where=self.name)
        return entry

    def heap_data_end(self) -> int:
        """Heap-relative end of the last data or signature; anything after it is a trailer."""
        return self._heap_end

    def read_heap(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise FormatError(f"negative heap range {offset}+{size}", where=self.name)
        return self._read_exact(self.heap_offset + offset, size, f"heap range {offset}+{size}")

    def read_signature(self, sig: XarSignature) -> bytes:
        """The signature blob, read where Apple's xar reads it (28 + TOC length + offset)."""
        return self._read_exact(self.signature_base + sig.offset, sig.size, f"<{self._sig_tag(sig)}>")

    def _raw_chunks(self, data: XarData, chunk_size: int, where: str) -> Iterator[bytes]:
        pos = self.heap_offset + data.offset
        left = data.length
        while left > 0:
            n = min(chunk_size, left)
            chunk = self._pread(pos, n)
            if len(chunk) != n:
                raise FormatError("file is truncated: member data ends past end of file", where=where)
            pos += n
            left -= n
            yield chunk

    def _data_of(self, entry: XarEntry) -> XarData | None:
        if entry.data is None and entry.type == "directory":
            raise FormatError("is a directory, not a file", where=self._where(entry.path))
        return entry.data

    def iter_stored(self, entry_or_path: XarEntry | str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The stored heap bytes verbatim; the archived checksum is checked after the last chunk."""
        entry = self._entry(entry_or_path)
        data = self._data_of(entry)
        if data is None:
            return iter(())
        where = self._where(entry.path)
        arc = _new_hash(data.archived_checksum[0], where) if data.archived_checksum else None
        return self._gen_stored(data, arc, max(1, chunk_size), where)

    def _gen_stored(self, data: XarData, arc, chunk_size: int, where: str) -> Iterator[bytes]:
        for chunk in self._raw_chunks(data, chunk_size, where):
            if arc is not None:
                arc.update(chunk)
            yield chunk
        if arc is not None and arc.hexdigest() != data.archived_checksum[1]:
            raise ChecksumError("archived checksum does not match: member data is damaged", where=where)

    def iter_data(self, entry_or_path: XarEntry | str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """Decoded member bytes in chunks; checksums and size are verified after the last chunk,
        so consumers must not trust the bytes until the iterator finishes without error."""
        entry = self._entry(entry_or_path)
        data = self._data_of(entry)
        if data is None:
            return iter(())
        where = self._where(entry.path)
        arc = _new_hash(data.archived_checksum[0], where) if data.archived_checksum else None
        ext = _new_hash(data.extracted_checksum[0], where) if data.extracted_checksum else None
        decoder = _Decoder(data.encoding, where)
        return self._gen_data(data, arc, ext, decoder, max(1, chunk_size), where)

    def _gen_data(self, data: XarData, arc, ext, decoder: _Decoder, chunk_size: int,
                  where: str) -> Iterator[bytes]:
        raw_iter = self._raw_chunks(data, chunk_size, where)
        produced = 0
        problem: FormatError | None = None
        try:
            for raw in raw_iter:
                if arc is not None:
                    arc.update(raw)
                for out in decoder.feed(raw, chunk_size):
                    produced += len(out)
                    if produced > data.size:
                        raise ChecksumError(f"decodes to more than its declared size {data.size}",
                                            where=where)
                    if ext is not None:
                        ext.update(out)
                    yield out
            for out in decoder.finish():
                produced += len(out)
                if produced > data.size:
                    raise ChecksumError(f"decodes to more than its declared size {data.size}", where=where)
                if ext is not None:
                    ext.update(out)
                yield out
            if not decoder.eof:
                problem = FormatError(f"{data.encoding} data is truncated", where=where)
        except ChecksumError as exc:
            problem = exc
        except _DECODE_ERRORS as exc:
            problem = FormatError(f"cannot decode {data.encoding} data: {exc}", where=where)
        if problem is not None:
            # Prefer the checksum diagnosis: damaged bytes usually break decoding first.
            for raw in raw_iter:
                if arc is not None:
                    arc.update(raw)
            if arc is not None and arc.hexdigest() != data.archived_checksum[1]:
                raise ChecksumError("archived checksum does not match: member data is damaged",
                                    where=where)
            raise problem
        if arc is not None and arc.hexdigest() != data.archived_checksum[1]:
            raise ChecksumError("archived checksum does not match: member data is damaged", where=where)
        if produced != data.size:
            raise ChecksumError(f"decodes to {produced} bytes, not the declared {data.size}", where=where)
        if ext is not None and ext.hexdigest() != data.extracted_checksum[1]:
            raise ChecksumError("extracted checksum does not match: member data is damaged", where=where)

    def read(self, entry_or_path: XarEntry | str, max_size: int = 64 << 20) -> bytes:
        entry = self._entry(entry_or_path)
        if entry.data is not None and entry.data.size > max_size:
            raise FormatError(f"member is {entry.data.size} bytes, more than the {max_size} allowed here",
                              where=self._where(entry.path))
        return b"".join(self.iter_data(entry))


# ----------------------------------------------------------------------------------------------
# TOC serialisation (shared by the writer and resign)


def _escape_text(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _escape_attr(s: str) -> str:
    return (_escape_text(s).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;"))


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, local = tag[1:].split("}", 1)
        return ns, local
    return "", tag


def toc_bytes(root: ET.Element) -> bytes:
    """Serialise a TOC tree with a default-namespace xmlns where needed (no ns0: prefixes)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def emit(el: ET.Element, default_ns: str) -> None:
        ns, local = _split_tag(el.tag)
        attrs = ""
        if ns != default_ns:
            attrs = f' xmlns="{_escape_attr(ns)}"'
        for key, value in el.attrib.items():
            if key.startswith("{"):
                raise UnsupportedError(f"namespaced attribute {key!r} in TOC")
            attrs += f' {key}="{_escape_attr(value)}"'
        if el.text is None and len(el) == 0:
            out.append(f"<{local}{attrs}/>")
        else:
            out.append(f"<{local}{attrs}>")
            if el.text:
                out.append(_escape_text(el.text))
            for child in el:
                if isinstance(child.tag, str):
                    emit(child, ns)
                if child.tail:
                    out.append(_escape_text(child.tail))
            out.append(f"</{local}>")

    emit(root, "")
    out.append("\n")
    return "".join(out).encode("utf-8")


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


def _signature_element(tag: str, style: str, offset: int, size: int, certs: Sequence[bytes]) -> ET.Element:
    el = ET.Element(tag, {"style": style})
    _sub(el, "offset", str(offset))
    _sub(el, "size", str(size))
    key_info = _sub(el, f"{{{XMLDSIG_NS}}}KeyInfo")
    x509 = _sub(key_info, f"{{{XMLDSIG_NS}}}X509Data")
    for der in certs:
        b64 = base64.b64encode(der).decode("ascii")
        wrapped = "\n".join(b64[i:i + 72] for i in range(0, len(b64), 72))  # as productsign does
        _sub(x509, f"{{{XMLDSIG_NS}}}X509Certificate", wrapped)
    return el


def _check_signer(signer: Signer) -> tuple[int, int, list[bytes]]:
    rsa_size, cms_size = int(signer.rsa_size), int(signer.cms_size)
    certs = [bytes(c) for c in signer.certificates]
    if rsa_size <= 0 or cms_size < 0:
        raise SigningError(f"signer reserves invalid sizes rsa={rsa_size} cms={cms_size}")
    if not certs:
        raise SigningError("signer has no certificates")
    return rsa_size, cms_size, certs


def _signatures(signer: Signer, checksum: bytes, rsa_size: int, cms_size: int) -> bytes:
    rsa, cms = signer.sign(checksum)
    if not isinstance(rsa, (bytes, bytearray)) or len(rsa) != rsa_size:
        raise SigningError(f"RSA signature is {len(rsa)} bytes, not the reserved {rsa_size}")
    if not isinstance(cms, (bytes, bytearray)) or len(cms) > cms_size:
        raise SigningError(f"CMS signature is {len(cms)} bytes, more than the reserved {cms_size}",
                           hint="reserve more CMS space in the signer")
    return bytes(rsa) + bytes(cms).ljust(cms_size, b"\x00")


def _assemble_prefix(toc_xml: bytes, alg: str, signer: Signer | None,
                     sizes: tuple[int, int]) -> bytes:
    """header ‖ zlib TOC ‖ checksum ‖ signatures: everything before the file data."""
    toc_z = zlib.compress(toc_xml, 9)
    checksum = hashlib.new(alg, toc_z).digest()
    sigs = _signatures(signer, checksum, *sizes) if signer is not None else b""
    header = HEADER.pack(MAGIC, HEADER_SIZE, 1, len(toc_z), len(toc_xml), ALGORITHM_IDS[alg])
    return header + toc_z + checksum + sigs


# ----------------------------------------------------------------------------------------------
# Byte copying


def _write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Append src[offset:offset+length] to dst at its current position, in the kernel if possible."""
    end = offset + length
    if hasattr(os, "copy_file_range"):
        try:
            while offset < end:
                n = os.copy_file_range(src_fd, dst_fd, min(end - offset, 1 << 30), offset)
                if n == 0:
                    break
                offset += n
        except OSError:
            pass
    while offset < end:
        chunk = os.pread(src_fd, min(CHUNK, end - offset), offset)
        if not chunk:
            raise FormatError("source ended while copying xar data")
        _write_all(dst_fd, chunk)
        offset += len(chunk)


def _copy_from_reader(reader: XarReader, offset: int, length: int, dst_fd: int) -> None:
    if reader._fd is not None:
        _copy_range(reader._fd, dst_fd, offset, length)
        return
    while length > 0:
        chunk = reader._read_exact(offset, min(CHUNK, length), "heap data")
        _write_all(dst_fd, chunk)
        offset += len(chunk)
        length -= len(chunk)


class _Output:
    """A temp file next to dest, renamed over it on commit and removed on abort."""

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)
        directory = self.dest.parent if str(self.dest.parent) else Path(".")
        try:
            self.fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.dest.name}.", suffix=".tmp")
        except OSError as exc:
            raise BuildError(f"cannot create output: {exc.strerror or exc}", where=str(self.dest)) from None

    def commit(self, mode: int = 0o644) -> None:
        os.fchmod(self.fd, mode)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------------------------
# Writer


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


def _needs_base64(name: str) -> bool:
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0 or 0xD800 <= ord(ch) <= 0xDFFF
               or ord(ch) in (0xFFFE, 0xFFFF) for ch in name) or name != name.strip()


class XarWriter:
    """Builds a xar file; data is spooled to a temp file so memory stays flat.

    in_memory=True spools to memory instead, for small archives (a per-device identity package):
    the output file is then the only file created, and `written` holds its (sha256, size). `mode` is the output's permission bits, set
    before it appears under its name (0o600 for an archive that holds secrets).
    """

    def __init__(self, dest: str | os.PathLike, *, checksum_alg: str = "sha1",
                 creation_time: int | None = None, signer: Signer | None = None,
                 file_checksum_alg: str = "sha1", in_memory: bool = False, mode: int = 0o644):
        if checksum_alg not in ALGORITHM_IDS:
            raise BuildError(f"unsupported TOC checksum algorithm {checksum_alg!r}",
                             hint=f"use one of {', '.join(sorted(ALGORITHM_IDS))}")
        if file_checksum_alg not in _HASH_STYLES:
            raise BuildError(f"unsupported file checksum algorithm {file_checksum_alg!r}")
        self.dest = Path(dest)
        self.checksum_alg = checksum_alg
        self.file_checksum_alg = file_checksum_alg
        epoch = repro.build_epoch() if creation_time is None else int(creation_time)
        self.creation_time = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        self.signer = signer
        self._sig_sizes = _check_signer(signer)[:2] if signer is not None else (0, 0)
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
            _write_all(self._spool_fd, data)
        self._spool_pos += len(data)

    def _store(self, chunks: Iterable, compress: bool) -> _Blob:
        alg = self.file_checksum_alg
        start = self._spool_pos
        ext = hashlib.new(alg)
        size = 0
        if not compress:
            for chunk in chunks:
                ext.update(chunk)
                self._spool_write(chunk)
                size += len(chunk)
            digest = (alg, ext.hexdigest())
            return _Blob(start, size, size, OCTET_STREAM, digest, digest)
        arc = hashlib.new(alg)
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
        view = memoryview(data)
        chunks = (view[i:i + CHUNK] for i in range(0, len(view), CHUNK))
        self.add_chunks(path, chunks, compress=compress, mode=mode, uid=uid, gid=gid, user=user, group=group)

    def add_file(self, path: str, src: str | os.PathLike, *, compress: bool = False, mode: int = 0o644,
                 uid: int = 0, gid: int = 0, user: str | None = None, group: str | None = None) -> None:
        def blob() -> _Blob:
            try:
                with open(src, "rb", buffering=0) as f:
                    st = os.fstat(f.fileno())
                    if compress or not stat.S_ISREG(st.st_mode) or st.st_size < REFERENCE_MIN:
                        return self._store(_file_chunks(f), compress)
                    h = hashlib.new(self.file_checksum_alg)
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
            extra = None if data.archived_checksum else hashlib.new(self.file_checksum_alg)
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
    def _ordered(self) -> list[tuple[_Node, ET.Element]]:
        """TOC <file> elements in depth-first, name-sorted order; ids and heap order follow it."""
        toc = ET.Element("toc")
        order: list[tuple[_Node, ET.Element]] = []

        def walk(node: _Node, parent_el: ET.Element) -> None:
            for name in sorted(node.children):
                child = node.children[name]
                el = _sub(parent_el, "file", id=str(len(order) + 1))
                order.append((child, el))
                walk(child, el)

        walk(self._root, toc)
        self._toc_el = toc
        return order

    def _toc_tree(self, order: list[tuple[_Node, ET.Element]], data_start: int) -> ET.Element:
        root = ET.Element("xar")
        toc = self._toc_el
        root.append(toc)
        alg = self.checksum_alg
        head = [_text_el("creation-time", self.creation_time)]
        cks = ET.Element("checksum", {"style": alg})
        digest_size = hashlib.new(alg).digest_size
        _sub(cks, "offset", "0")
        _sub(cks, "size", str(digest_size))
        head.append(cks)
        if self.signer is not None:
            rsa_size, cms_size = self._sig_sizes
            certs = [bytes(c) for c in self.signer.certificates]
            head.append(_signature_element("signature", "RSA", digest_size, rsa_size, certs))
            if cms_size:
                head.append(_signature_element("x-signature", "CMS", digest_size + rsa_size, cms_size, certs))
        for i, el in enumerate(head):
            toc.insert(i, el)
        offset = data_start
        for node, el in order:
            if node.blob is not None:
                b = node.blob
                d = ET.Element("data")
                _sub(d, "length", str(b.length))
                _sub(d, "offset", str(offset))
                _sub(d, "size", str(b.size))
                _sub(d, "encoding", style=b.encoding)
                if b.extracted:
                    _sub(d, "extracted-checksum", b.extracted[1], style=b.extracted[0])
                if b.archived:
                    _sub(d, "archived-checksum", b.archived[1], style=b.archived[0])
                el.insert(0, d)
                offset += b.length
            pos = 1 if node.blob is not None else 0
            fields = []
            if node.group is not None:
                fields.append(("group", node.group))
            fields.append(("gid", str(node.gid)))
            if node.user is not None:
                fields.append(("user", node.user))
            fields += [("uid", str(node.uid)), ("mode", f"0{node.mode:o}"), ("type", node.type)]
            for tag, text in fields:
                el.insert(pos, _text_el(tag, text))
                pos += 1
            name_el = _text_el("name", node.name)
            if _needs_base64(node.name):
                name_el.text = base64.b64encode(node.name.encode("utf-8")).decode("ascii")
                name_el.set("enctype", "base64")
            el.insert(pos, name_el)
        ET.indent(root, space=" ")
        return root

    def close(self) -> None:
        if self._closed:
            return
        out: _Output | None = None
        try:
            order = self._ordered()
            digest_size = hashlib.new(self.checksum_alg).digest_size
            data_start = digest_size + sum(self._sig_sizes)
            toc = toc_bytes(self._toc_tree(order, data_start))
            out = _Output(self.dest)
            prefix = _assemble_prefix(toc, self.checksum_alg, self.signer, self._sig_sizes)
            ranges: list[list] = []  # [fd, offset, length], contiguous pieces merged
            for node, _ in order:
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
                whole = bytearray(prefix)
                for _, offset, length in ranges:
                    whole += memoryview(self._memory)[offset:offset + length]
                _write_all(out.fd, whole)
                self.written = (hashlib.sha256(whole).hexdigest(), len(whole))
            else:
                _write_all(out.fd, prefix)
                for fd, offset, length in ranges:
                    if fd == -1:
                        _write_all(out.fd, memoryview(self._memory)[offset:offset + length])
                    else:
                        _copy_range(fd, out.fd, offset, length)
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


def _text_el(tag: str, text: str) -> ET.Element:
    el = ET.Element(tag)
    el.text = text
    return el


def _file_chunks(f) -> Iterator[memoryview]:
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    while True:
        n = f.readinto(buf)
        if not n:
            return
        yield view[:n]


# ----------------------------------------------------------------------------------------------
# Re-signing


def resign(src: str | os.PathLike, dest: str | os.PathLike, signer: Signer | None, *,
           verify_data: bool = False) -> None:
    """Rewrite only the TOC (new signature space, shifted data offsets); file data is copied
    through unchanged, so re-signing costs one sequential copy. The signature covers the TOC,
    which holds every member's checksum, so signing cannot make damaged data pass: readers still
    reject it. verify_data=True reads and checks every member first (one more pass) to refuse
    damaged input outright. signer=None strips the signatures. A stapled notarization trailer
    is dropped: the new TOC checksum invalidates it anyway (§2.6)."""
    sizes = _check_signer(signer)[:2] if signer is not None else (0, 0)
    with XarReader(src) as reader:
        alg = reader.checksum_alg
        if alg not in ALGORITHM_IDS:
            raise UnsupportedError(f"cannot re-sign an archive using {alg!r} TOC checksums", where=reader.name)
        digest_size = hashlib.new(alg).digest_size
        old_base = reader.checksum_offset + reader.checksum_size
        for sig in (reader.signature, reader.x_signature):
            if sig is not None:
                old_base = max(old_base, reader.signature_base - reader.heap_offset + sig.offset + sig.size)
        data_end = max(reader.heap_data_end(), old_base)
        for entry in reader.entries:
            if entry.data is not None and entry.data.length and entry.data.offset < old_base:
                raise FormatError("member data overlaps the checksum/signature area",
                                  where=reader._where(entry.path))
            if verify_data and entry.data is not None:
                for _ in reader.iter_stored(entry):  # refuse to sign damaged data
                    pass
        for off, length in reader._extra_ranges:
            if length and off < old_base:
                raise FormatError("extended attribute data overlaps the signature area", where=reader.name)
        new_base = digest_size + sum(sizes)
        root = ET.fromstring(reader.toc_xml)  # already validated and bounded by XarReader
        toc = _children(root, "toc")[0]
        _rewrite_toc(toc, alg, digest_size, signer, sizes, new_base - old_base)
        prefix = _assemble_prefix(toc_bytes(root), alg, signer, sizes)
        out = _Output(dest)
        try:
            _write_all(out.fd, prefix)
            _copy_from_reader(reader, reader.heap_offset + old_base, data_end - old_base, out.fd)
            out.commit()
            out = None
        except OSError as exc:
            raise BuildError(f"cannot write: {exc.strerror or exc}", where=str(dest)) from None
        finally:
            if out is not None:
                out.abort()


def _rewrite_toc(toc: ET.Element, alg: str, digest_size: int, signer: Signer | None,
                 sizes: tuple[int, int], delta: int) -> None:
    for el in list(toc):
        if isinstance(el.tag, str) and _local(el.tag) in ("signature", "x-signature"):
            toc.remove(el)
    cks = _child(toc, "checksum")
    if cks is None:
        cks = ET.Element("checksum")
        toc.insert(0, cks)
    cks.attrib.clear()
    cks.set("style", alg)
    for child in list(cks):
        cks.remove(child)
    cks.text = "\n" + "   "
    _sub(cks, "offset", "0").tail = "\n   "
    _sub(cks, "size", str(digest_size)).tail = "\n  "
    if cks.tail is None or not cks.tail.strip() == "":
        cks.tail = "\n  "
    if signer is not None:
        rsa_size, cms_size = sizes
        certs = [bytes(c) for c in signer.certificates]
        new = [_signature_element("signature", "RSA", digest_size, rsa_size, certs)]
        if cms_size:
            new.append(_signature_element("x-signature", "CMS", digest_size + rsa_size, cms_size, certs))
        at = list(toc).index(cks) + 1
        for el in new:
            ET.indent(el, space=" ", level=2)
            el.tail = cks.tail
            toc.insert(at, el)
            at += 1
    if delta:
        for parent in toc.iter():
            if isinstance(parent.tag, str) and _local(parent.tag) in ("data", "ea"):
                for off in _children(parent, "offset"):
                    value = _number((off.text or "").strip(), "data offset", "TOC") + delta
                    if value < 0:
                        raise FormatError("data offset lies inside the signature area", where="TOC")
                    off.text = str(value)
