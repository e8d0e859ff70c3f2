"""Streaming decoders for the member data encodings a xar may declare (zlib/gzip, bzip2, lzma,
xz, or none), each call's output bounded so a small member cannot inflate without limit."""

from __future__ import annotations

import bz2
import lzma
import zlib
from typing import Iterator

from ....errors import UnsupportedError
from .model import BZIP2, GZIP, LZMA, OCTET_STREAM, XZ


class Decoder:
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


DECODE_ERRORS = (zlib.error, lzma.LZMAError, EOFError, OSError, ValueError)
