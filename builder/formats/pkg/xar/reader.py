"""XarReader: opens a xar reading only its header and TOC, bounds-checks and verifies them, and
streams members on demand, checking their checksums and sizes as the last chunk goes by."""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import struct
import xml.etree.ElementTree as ET
import zlib
from typing import Any, BinaryIO, Iterator

from ....errors import ChecksumError, FleetpkgError, FormatError, UnsupportedError
from .decoding import DECODE_ERRORS, Decoder
from .model import (ALGORITHMS, CHUNK, HASH_STYLES, HEADER, HEADER_SIZE, MAGIC, OCTET_STREAM,
                    XarData, XarEntry, XarSignature, check_name, new_hash)
from .toc import child_named, child_text, children_named, local_name, parse_number, required

# Bounds against hostile archives, checked before allocating or inflating.
MAX_TOC_COMPRESSED = 64 << 20
MAX_TOC_XML = 256 << 20
MAX_TOC_ELEMENTS = 2_000_000
MAX_XML_DEPTH = 256
MAX_ENTRIES = 200_000
MAX_FILE_DEPTH = 64


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
        """Up to `size` bytes at `offset` (fewer only at end of file); positional when a descriptor
        is available, so readers of different members never disturb each other."""
        fd = self._fd
        if fd is None:
            self._f.seek(offset)
        parts = []
        while size > 0:
            got = os.pread(fd, size, offset) if fd is not None else self._f.read(size)
            if not got:
                break
            parts.append(got)
            offset += len(got)
            size -= len(got)
        return b"".join(parts)

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
        if alg_name == "?" or (alg_name is not None and alg_name not in HASH_STYLES):
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
        if root is None or local_name(root.tag) != "xar":
            raise FormatError("TOC root element is not <xar>", where=self.name)
        return root

    def _toc(self, root: ET.Element) -> ET.Element:
        tocs = children_named(root, "toc")
        if len(tocs) != 1:
            raise FormatError(f"TOC must have exactly one <toc>, found {len(tocs)}", where=self.name)
        return tocs[0]

    def _checksum_location(self, root: ET.Element, alg: str, digest_size: int) -> tuple[int, int]:
        cks = child_named(self._toc(root), "checksum")
        if cks is None:
            return 0, digest_size
        style = (cks.get("style") or "").strip().lower()
        if style and style != alg:
            raise FormatError(f"TOC checksum style {style!r} does not match the header's {alg!r}",
                              where=self.name)
        where = f"{self.name}: <checksum>"
        offset = parse_number(child_text(cks, "offset"), "checksum offset", where)
        size = parse_number(child_text(cks, "size"), "checksum size", where)
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
        self.creation_time = child_text(toc, "creation-time")
        self.signature = self._parse_signature(child_named(toc, "signature"), "signature")
        self.x_signature = self._parse_signature(child_named(toc, "x-signature"), "x-signature")
        self.entries: list[XarEntry] = []
        self._by_path: dict[str, XarEntry] = {}
        self._extra_ranges: list[tuple[int, int]] = []  # <ea> heap ranges, shifted by resign too
        # Iterative pre-order walk: (element, parent path, depth).
        stack = [(el, "", 1) for el in reversed(children_named(toc, "file"))]
        while stack:
            el, parent, depth = stack.pop()
            if depth > MAX_FILE_DEPTH:
                raise FormatError(f"directories nested deeper than {MAX_FILE_DEPTH}", where=self.name)
            entry = self._parse_file(el, parent)
            self.entries.append(entry)
            if len(self.entries) > MAX_ENTRIES:
                raise FormatError(f"more than {MAX_ENTRIES} entries", where=self.name)
            self._by_path.setdefault(entry.path, entry)
            stack.extend((c, entry.path, depth + 1) for c in reversed(children_named(el, "file")))
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
        offset = required(parse_number(child_text(el, "offset"), "signature offset", where), "offset", where)
        size = required(parse_number(child_text(el, "size"), "signature size", where), "size", where)
        certs = []
        for c in el.iter():
            if isinstance(c.tag, str) and local_name(c.tag) == "X509Certificate":
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
        file_id = required(parse_number(id_text or None, "file id", where), "id", where)
        names = children_named(el, "name")
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
        type_el = child_named(el, "type")
        ftype = (type_el.text or "").strip() if type_el is not None else "file"
        link = child_text(el, "link")
        if link is None and type_el is not None and type_el.get("link"):
            link = type_el.get("link")
        data = None
        data_el = child_named(el, "data")
        if data_el is not None:
            data = self._parse_data(data_el, mwhere)
        for ea in children_named(el, "ea"):
            off = parse_number(child_text(ea, "offset"), "ea offset", mwhere)
            length = parse_number(child_text(ea, "length"), "ea length", mwhere)
            if off is not None and length is not None:
                self._extra_ranges.append((off, length))
        user = child_text(el, "user")
        group = child_text(el, "group")
        return XarEntry(
            id=file_id, path=path, name=name, type=ftype,
            mode=parse_number(child_text(el, "mode"), "mode", mwhere, base=8),
            uid=parse_number(child_text(el, "uid"), "uid", mwhere),
            gid=parse_number(child_text(el, "gid"), "gid", mwhere),
            user=user, group=group, mtime=child_text(el, "mtime"), link=link, data=data,
        )

    def _parse_data(self, el: ET.Element, where: str) -> XarData:
        offset = required(parse_number(child_text(el, "offset"), "data offset", where), "offset", where)
        length = required(parse_number(child_text(el, "length"), "data length", where), "length", where)
        size = parse_number(child_text(el, "size"), "data size", where)
        enc_el = child_named(el, "encoding")
        encoding = OCTET_STREAM if enc_el is None else (enc_el.get("style") or OCTET_STREAM).strip()
        return XarData(offset=offset, length=length, size=length if size is None else size,
                       encoding=encoding,
                       archived_checksum=self._parse_sum(child_named(el, "archived-checksum")),
                       extracted_checksum=self._parse_sum(child_named(el, "extracted-checksum")))

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

    def _member(self, entry_or_path: XarEntry | str) -> tuple[XarData, str, Any] | None:
        """(data, where, archived-checksum hash) of a member; None when it has no data."""
        entry = self._entry(entry_or_path)
        data = self._data_of(entry)
        if data is None:
            return None
        where = self._where(entry.path)
        arc = new_hash(data.archived_checksum[0], where) if data.archived_checksum else None
        return data, where, arc

    def iter_stored(self, entry_or_path: XarEntry | str, chunk_size: int = CHUNK) -> Iterator[bytes]:
        """The stored heap bytes verbatim; the archived checksum is checked after the last chunk."""
        member = self._member(entry_or_path)
        if member is None:
            return iter(())
        data, where, arc = member
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
        member = self._member(entry_or_path)
        if member is None:
            return iter(())
        data, where, arc = member
        ext = new_hash(data.extracted_checksum[0], where) if data.extracted_checksum else None
        decoder = Decoder(data.encoding, where)
        return self._gen_data(data, arc, ext, decoder, max(1, chunk_size), where)

    def _gen_data(self, data: XarData, arc, ext, decoder: Decoder, chunk_size: int,
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
        except DECODE_ERRORS as exc:
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
