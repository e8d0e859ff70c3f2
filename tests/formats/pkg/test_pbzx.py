"""pbzx reader/writer. Fixtures are built here with Python's lzma and struct (and checked with the
`xz` tool), not with write_pbzx."""

from __future__ import annotations

import io
import lzma
import os
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import FleetpkgError, FormatError, UnsupportedError
from builder.formats.pkg.pbzx import iter_pbzx, write_pbzx
from tests.conftest import require_tool


def _pbzx(chunks: list[tuple[bytes, bool]], chunk_size: int = 1 << 24) -> bytes:
    """Hand-made pbzx: each (data, compress) becomes an XZ chunk or a stored chunk."""
    out = [b"pbzx", struct.pack(">Q", chunk_size)]
    for data, compress in chunks:
        body = lzma.compress(data, format=lzma.FORMAT_XZ) if compress else data
        out.append(struct.pack(">QQ", len(data), len(body)) + body)
    return b"".join(out)


def _split(data: bytes) -> list[tuple[int, int, bytes]]:
    """Independent chunk walk of a pbzx stream."""
    assert data[:4] == b"pbzx"
    pos, out = 12, []
    while pos < len(data):
        usize, csize = struct.unpack_from(">QQ", data, pos)
        out.append((usize, csize, data[pos + 16:pos + 16 + csize]))
        pos += 16 + csize
    assert pos == len(data)
    return out


def test_reads_lzma_made_stream():
    text = b"compressible cpio bytes " * 5000
    rnd = os.urandom(3000)
    stream = _pbzx([(text, True), (rnd, False), (text[:100], True)])
    assert b"".join(iter_pbzx(io.BytesIO(stream))) == text + rnd + text[:100]
    assert b"".join(iter_pbzx([stream[i:i + 7] for i in range(0, len(stream), 7)])) == text + rnd + text[:100]


def test_last_chunk_of_exactly_chunk_size_is_read_to_eof():
    """A reader trusting the 'more chunks' bit 24 would stop early here (format doc §9 P14)."""
    size = 1 << 24
    big = bytes(size)  # exactly 16 MiB, bit 24 set in its size
    stream = _pbzx([(b"a" * 10, False), (big, True), (b"tail", False)])
    assert b"".join(iter_pbzx(io.BytesIO(stream))) == b"a" * 10 + big + b"tail"


def test_write_round_trip_with_xz_and_stored_chunks(tmp_path):
    data = (b"A" * 40_000) + os.urandom(40_000) + (b"B" * 30_000)
    buf = io.BytesIO()
    assert write_pbzx(buf, io.BytesIO(data), chunk_size=40_000) == len(data)
    out = buf.getvalue()
    assert struct.unpack_from(">Q", out, 4)[0] == 40_000
    chunks = _split(out)
    assert [c[0] for c in chunks] == [40_000, 40_000, 30_000]
    assert chunks[0][1] < 40_000 and chunks[2][1] < 30_000  # XZ
    assert chunks[1][1] == 40_000 and chunks[1][2] == data[40_000:80_000]  # stored: random data
    xz = require_tool("xz")
    for usize, csize, body in (chunks[0], chunks[2]):
        assert body[:6] == b"\xfd7zXZ\x00"
        decoded = subprocess.run([xz, "-dc"], input=body, capture_output=True, check=True).stdout
        assert len(decoded) == usize
    assert b"".join(iter_pbzx(io.BytesIO(out))) == data
    again = io.BytesIO()
    write_pbzx(again, io.BytesIO(data), chunk_size=40_000)
    assert again.getvalue() == out  # deterministic


def test_empty_input():
    buf = io.BytesIO()
    write_pbzx(buf, io.BytesIO(b""))
    assert buf.getvalue() == b"pbzx" + struct.pack(">Q", 1 << 24)
    assert list(iter_pbzx(io.BytesIO(buf.getvalue()))) == []


def test_every_truncation_is_a_format_error():
    stream = _pbzx([(b"x" * 5000, True), (b"raw", False)])
    boundaries = {12, 12 + 16 + len(lzma.compress(b"x" * 5000)), len(stream)}
    for cut in range(len(stream)):
        if cut in boundaries:
            continue  # a stream may legitimately end after any whole chunk
        with pytest.raises(FormatError):
            list(iter_pbzx(io.BytesIO(stream[:cut])))


def test_bad_input():
    with pytest.raises(FormatError, match="not a pbzx"):
        list(iter_pbzx(io.BytesIO(b"\x1f\x8b\x08" + bytes(20))))
    with pytest.raises(UnsupportedError, match="LZFSE"):
        list(iter_pbzx(io.BytesIO(b"pbzx" + bytes(8) + struct.pack(">QQ", 100, 8) + b"bvx2\0\0\0\0")))
    with pytest.raises(FormatError, match="too large"):
        list(iter_pbzx(io.BytesIO(b"pbzx" + bytes(8) + struct.pack(">QQ", 1 << 40, 10) + bytes(10))))
    wrong_size = b"pbzx" + bytes(8)
    body = lzma.compress(b"12345", format=lzma.FORMAT_XZ)
    wrong_size += struct.pack(">QQ", 4, len(body)) + body
    with pytest.raises(FormatError, match="exactly 4"):
        list(iter_pbzx(io.BytesIO(wrong_size)))
    corrupt = bytearray(_pbzx([(b"y" * 1000, True)]))
    corrupt[40] ^= 0xFF
    with pytest.raises(FormatError):
        list(iter_pbzx(io.BytesIO(bytes(corrupt))))


SAMPLE = _pbzx([(b"cpio-ish " * 300, True), (os.urandom(200), False), (b"end" * 50, True)])


@settings(max_examples=150, deadline=None)
@given(cut=st.integers(0, len(SAMPLE)),
       edits=st.lists(st.tuples(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255)), max_size=5))
def test_mutations_only_raise_project_errors(cut, edits):
    data = bytearray(SAMPLE[:cut])
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    try:
        for chunk in iter_pbzx(io.BytesIO(bytes(data))):
            assert len(chunk) <= 1 << 26
    except FleetpkgError:
        pass
