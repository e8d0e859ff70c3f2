"""pbzx: the chunked XZ wrapper pkgbuild uses for `--compression latest` payloads (format doc §5.2).

Layout: "pbzx", u64 BE chunk size, then until EOF {u64 uncompressed size, u64 stored size, data};
stored == uncompressed means raw bytes, otherwise one complete XZ stream. The end is EOF, not the
"more chunks" bit 24 some readers test (a last chunk of exactly 16 MiB would fool them).
"""

from __future__ import annotations

import lzma
import struct
from typing import BinaryIO, Iterable, Iterator

from ...errors import FormatError, UnsupportedError

MAGIC = b"pbzx"
XZ_MAGIC = b"\xfd7zXZ\x00"
DEFAULT_CHUNK = 16 << 20
MAX_CHUNK = 64 << 20  # 4x what Apple writes; bounds memory per chunk


class _ChunkStream:
    """read(n) over an iterable of byte chunks."""

    def __init__(self, chunks: Iterable[bytes]):
        self._it = iter(chunks)
        self._buf = memoryview(b"")

    def read(self, n: int) -> bytes:
        while not self._buf:
            chunk = next(self._it, None)
            if chunk is None:
                return b""
            self._buf = memoryview(bytes(chunk))
        data, self._buf = self._buf[:n], self._buf[n:]
        return bytes(data)


def _read_exact(stream, n: int) -> bytes:
    parts, left = [], n
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def _as_stream(source):
    return source if hasattr(source, "read") else _ChunkStream(source)


def _decode_chunk(data: bytes, usize: int, index: int, where: str | None) -> bytes:
    if data[:6] != XZ_MAGIC:
        if len(data) < 4:
            raise FormatError(f"pbzx chunk {index} is too short to be compressed", where=where)
        if data[:3] == b"bvx":
            raise UnsupportedError(f"pbzx chunk {index} is LZFSE/LZVN compressed ({data[:4]!r})",
                                   where=where, hint="only XZ pbzx payloads are supported; rebuild "
                                   "the package with pkgbuild --compression legacy")
        raise UnsupportedError(f"pbzx chunk {index} has an unknown compression (starts {data[:4]!r})",
                               where=where)
    dec = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
    try:
        out = dec.decompress(data, max_length=usize + 1)
    except lzma.LZMAError as exc:
        raise FormatError(f"pbzx chunk {index}: corrupt XZ data ({exc})", where=where) from None
    if len(out) != usize or not dec.eof or dec.unused_data:
        raise FormatError(f"pbzx chunk {index}: XZ stream does not decode to exactly {usize} bytes",
                          where=where)
    return out


def iter_pbzx(source: BinaryIO | Iterable[bytes], *, where: str | None = None) -> Iterator[bytes]:
    """Decoded chunks of a pbzx stream (a file object or an iterable of byte chunks)."""
    stream = _as_stream(source)
    head = _read_exact(stream, 12)
    if len(head) < 12 or head[:4] != MAGIC:
        raise FormatError("not a pbzx stream (missing 'pbzx' header)", where=where)
    index = 0
    while True:
        sizes = _read_exact(stream, 16)
        if not sizes:
            return
        if len(sizes) != 16:
            raise FormatError(f"pbzx stream truncated in chunk header {index}", where=where)
        usize, csize = struct.unpack(">QQ", sizes)
        if usize > MAX_CHUNK or csize > MAX_CHUNK:
            raise FormatError(f"pbzx chunk {index} too large ({usize}/{csize} bytes, limit {MAX_CHUNK})",
                              where=where)
        data = _read_exact(stream, csize)
        if len(data) != csize:
            raise FormatError(f"pbzx stream truncated in chunk {index} data", where=where)
        yield data if csize == usize else _decode_chunk(data, usize, index, where)
        index += 1


class PbzxWriter:
    """File-like writer: buffers `chunk_size` bytes, emits each as an XZ chunk (raw when XZ is not
    smaller). close() flushes the last partial chunk; it does not close `out`."""

    def __init__(self, out: BinaryIO, chunk_size: int = DEFAULT_CHUNK, *, preset: int = 6):
        if not 0 < chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be in 1..{MAX_CHUNK}")
        self._out = out
        self._size = chunk_size
        self._preset = preset
        self._buf = bytearray()
        self.total = 0
        out.write(MAGIC + struct.pack(">Q", chunk_size))

    def write(self, data: bytes) -> int:
        self._buf += data
        while len(self._buf) >= self._size:
            self._emit(bytes(self._buf[:self._size]))
            del self._buf[:self._size]
        return len(data)

    def _emit(self, chunk: bytes) -> None:
        packed = lzma.compress(chunk, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC64, preset=self._preset)
        if len(packed) >= len(chunk):
            packed = chunk
        self._out.write(struct.pack(">QQ", len(chunk), len(packed)))
        self._out.write(packed)
        self.total += len(chunk)

    def close(self) -> None:
        if self._buf:
            self._emit(bytes(self._buf))
            self._buf = bytearray()


def write_pbzx(out: BinaryIO, data_stream: BinaryIO | Iterable[bytes], chunk_size: int = DEFAULT_CHUNK) -> int:
    """Write `data_stream` as pbzx; returns the uncompressed byte count."""
    writer = PbzxWriter(out, chunk_size)
    stream = _as_stream(data_stream)
    while True:
        block = stream.read(chunk_size)
        if not block:
            break
        writer.write(block)
    writer.close()
    return writer.total
