"""Payload sniffing, streaming decode (gzip/pbzx/plain) and gzip/pbzx payload writing, checked with
the gzip, xz, cpio and cksum tools and the fixtures' PackageInfo figures."""

from __future__ import annotations

import io
import lzma
import re
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import FleetpkgError, FormatError, UnsupportedError
from builder.formats.pkg.bom import read_bom
from builder.formats.pkg.cpio import iter_cpio, list_cpio
from builder.formats.pkg.payload import open_payload, payload_kind, sniff, write_payload
from builder.formats.pkg.tree import apply_metadata, entries_from_mapping, scan_tree
from tests.conftest import require_tool
from tests.formats.pkg.pkgfixtures import (OLD_PKGBUILD, bsdtar_extract, cpio_list, extract_package,
                                   fixture_packages, tool_cksum)


def _chunks(data: bytes, size: int = 777):
    return (data[i:i + size] for i in range(0, len(data), size))


def _gunzip_tool(data: bytes) -> bytes:
    return subprocess.run([require_tool("gzip"), "-dc"], input=data, capture_output=True, check=True).stdout


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """(label, PackageInfo text, Bom bytes, member name, member bytes) for every Payload/Scripts."""
    out = []
    base = tmp_path_factory.mktemp("fx")
    for pkg in fixture_packages():
        for comp in extract_package(pkg, base / pkg.stem):
            for member in ("Payload", "Scripts"):
                if (comp / member).exists():
                    out.append((f"{pkg.name}:{comp.name}", (comp / "PackageInfo").read_text(),
                                (comp / "Bom").read_bytes(), member, (comp / member).read_bytes()))
    assert len(out) == 6  # KeychainMinder has both, the payload-free rtrouton package both too
    return out


def test_sniff():
    assert sniff(b"\x1f\x8b\x08\x00") == "gzip-cpio"
    assert sniff(b"pbzx\x00\x00") == "pbzx"
    assert sniff(b"070707") == sniff(b"070701") == sniff(b"070702") == "cpio"
    assert sniff(b"AA01xx") == sniff(b"YAA1xx") == "apple-archive"
    assert sniff(b"xar!") == sniff(b"") == "unknown"
    assert payload_kind([b"\x1f", b"\x8b\x08rest"]) == "gzip-cpio" and payload_kind([]) == "none"


def test_fixture_members_decode_like_gzip(members):
    for label, _, _, member, data in members:
        assert sniff(data[:6]) == "gzip-cpio"
        expected = _gunzip_tool(data)
        for size in (1, 100, 65536):
            assert open_payload(_chunks(data, size)).read() == expected, (label, member)
        listed = [r.name for r in cpio_list(expected)]
        assert [e.name for e in list_cpio(open_payload(_chunks(data)))] == listed


def test_multi_member_gzip_and_padding(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_bytes(b"0123456789" * 1000)
    raw = subprocess.run([require_tool("cpio"), "-o", "-H", "odc", "--quiet"], input=b".\n./f\n",
                         cwd=tmp_path / "t", capture_output=True, check=True).stdout
    gz = require_tool("gzip")
    half = len(raw) // 2
    two = b"".join(subprocess.run([gz, "-c"], input=part, capture_output=True, check=True).stdout
                   for part in (raw[:half], raw[half:]))
    assert open_payload(_chunks(two)).read() == raw
    assert [e.name for e in list_cpio(open_payload(_chunks(two + bytes(100))))] == [".", "f"]


def test_plain_cpio_and_pbzx(tmp_path):
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "f").write_bytes(b"abc" * 10000)
    raw = subprocess.run([require_tool("cpio"), "-o", "-H", "odc", "--quiet"], input=b".\n./f\n",
                         cwd=tmp_path / "t", capture_output=True, check=True).stdout
    assert open_payload(_chunks(raw)).read() == raw
    body = lzma.compress(raw[:20000], format=lzma.FORMAT_XZ)
    pbzx = (b"pbzx" + struct.pack(">Q", 1 << 24) + struct.pack(">QQ", 20000, len(body)) + body
            + struct.pack(">QQ", len(raw) - 20000, len(raw) - 20000) + raw[20000:])
    assert sniff(pbzx) == "pbzx"
    assert open_payload(_chunks(pbzx)).read() == raw


@pytest.mark.parametrize("magic", [b"AA01", b"YAA1"])
def test_apple_archive_refused_clearly(magic):
    with pytest.raises(UnsupportedError) as info:
        open_payload([magic + bytes(100)], where="vendor.pkg/Payload")
    text = str(info.value)
    assert "Apple Archive" in text and "pkgbuild --compression legacy" in text and "vendor.pkg/Payload" in text


def test_bad_payloads(members):
    data = members[0][4]
    with pytest.raises(FormatError, match="not gzip, pbzx or cpio"):
        open_payload([b"PK\x03\x04" + bytes(50)])
    with pytest.raises(FormatError, match="truncated"):
        open_payload(_chunks(data[:len(data) // 2])).read()
    damaged = bytearray(data)
    damaged[-6] ^= 0xFF  # CRC32 trailer
    with pytest.raises(FormatError):
        open_payload(_chunks(bytes(damaged))).read()


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "Library" / "Application Support" / "1E").mkdir(parents=True)
    (root / "Library" / "Application Support" / "1E" / "agent.conf").write_text("Switch=x\n" * 100)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(bytes(range(256)) * 50)
    (root / "bin" / "tool").chmod(0o755)
    return root


def test_write_gzip_payload(tmp_path):
    entries = scan_tree(_tree(tmp_path), mtime=1_700_000_000)
    buf = io.BytesIO()
    stats = write_payload(buf, entries)
    data = buf.getvalue()
    assert data[:3] == b"\x1f\x8b\x08" and data[3] == 0  # no FNAME/FEXTRA/FCOMMENT flags
    assert data[4:8] == bytes(4)  # mtime 0
    subprocess.run([require_tool("gzip"), "-t"], input=data, check=True)
    listed = cpio_list(_gunzip_tool(data))
    assert [r.name for r in listed] == [e.path for e in entries]
    assert stats.files == len(entries) == 7
    for e in entries:
        if e.kind == "file":
            assert stats.checksums[e.path] == tool_cksum(e.source)
    again = io.BytesIO()
    write_payload(again, entries)
    assert again.getvalue() == data
    bsdtar_extract(data, tmp_path / "x")
    assert (tmp_path / "x" / "bin" / "tool").read_bytes() == bytes(range(256)) * 50


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.one_of(st.binary(max_size=3000), st.sampled_from([b"", b"#!/bin/bash\n" * 300]),
                                 st.integers(1, 600).map(lambda n: bytes(range(256)) * n)),
                       max_size=12), data=st.data())
def test_gzip_member_is_what_gzipfile_writes(pieces, data):
    """The payload's gzip member is written with zlib directly; it must be byte for byte the
    member gzip.GzipFile(filename="", mtime=0, level 6) writes, however the input is chunked
    (stdlib's GzipFile is the reference: it is what this writer used before)."""
    import gzip

    from builder.formats.pkg.payload import GZIP_LEVEL, _Gzip

    whole = b"".join(pieces)
    ref = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=ref, compresslevel=GZIP_LEVEL, mtime=0) as gz:
        gz.write(whole)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(whole)), max_size=6)))
    out = io.BytesIO()
    sink = _Gzip(out)
    for start, end in zip([0, *cuts], [*cuts, len(whole)]):
        sink.write(whole[start:end])
    sink.close()
    assert out.getvalue() == ref.getvalue()


def test_write_pbzx_payload(tmp_path):
    entries = scan_tree(_tree(tmp_path), mtime=1)
    buf = io.BytesIO()
    write_payload(buf, entries, compression="pbzx")
    data = buf.getvalue()
    pos, raw = 12, b""
    while pos < len(data):  # independent decode: struct + xz tool
        usize, csize = struct.unpack_from(">QQ", data, pos)
        body = data[pos + 16:pos + 16 + csize]
        raw += body if usize == csize else subprocess.run(
            [require_tool("xz"), "-dc"], input=body, capture_output=True, check=True).stdout
        pos += 16 + csize
    assert [r.name for r in cpio_list(raw)] == [e.path for e in entries]
    assert open_payload(_chunks(data)).read() == raw


def test_install_kbytes_and_file_count_match_pkgbuild(members, tmp_path):
    """Rebuilding each fixture payload gives PackageInfo's installKBytes; numberOfFiles counts every
    entry incl. "." when pkgbuild had a real root (our trees always do) and omits a synthesized "."
    (BOM placeholder, --component packages)."""
    n = 0
    for label, info, bom, member, data in members:
        if member != "Payload":
            continue
        root = tmp_path / f"p{n}"
        bsdtar_extract(data, root)
        original = read_bom(bom)
        entries = apply_metadata(scan_tree(root, mtime=0), original)
        stats = write_payload(io.BytesIO(), entries)
        kbytes = int(re.search(r'installKBytes="(\d+)"', info).group(1))
        files = int(re.search(r'numberOfFiles="(\d+)"', info).group(1))
        if label.split(":")[0] in OLD_PKGBUILD:  # counted allocation blocks: more than the bytes
            assert stats.install_kbytes < kbytes, label
        else:
            assert stats.install_kbytes == kbytes, label
        synthesized_root = original[0].placeholder
        assert stats.files == files + (1 if synthesized_root else 0), label
        n += 1
    assert n == 4


def test_in_memory_scripts_payload():
    entries = entries_from_mapping({"postinstall": (b"#!/bin/sh\nexit 0\n", 0o755), "lib/helper.sh": b"x"},
                                   mtime=0)
    buf = io.BytesIO()
    write_payload(buf, entries)
    listed = cpio_list(_gunzip_tool(buf.getvalue()))
    assert [(r.name, r.perms) for r in listed] == [
        (".", "drwxr-xr-x"), ("./lib", "drwxr-xr-x"), ("./lib/helper.sh", "-rw-r--r--"),
        ("./postinstall", "-rwxr-xr-x")]


def _fixture_payloads() -> list[bytes]:
    import tempfile

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in fixture_packages():
            for comp in extract_package(pkg, Path(tmp) / pkg.stem):
                for member in ("Payload", "Scripts"):
                    if (comp / member).exists():
                        out.append((comp / member).read_bytes())
    return out


FIXTURE_PAYLOADS = _fixture_payloads()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(FIXTURE_PAYLOADS) - 1), cut=st.integers(0, 20_000),
       edits=st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 255)), max_size=6))
def test_mutated_payloads_only_raise_project_errors(which, cut, edits):
    data = bytearray(FIXTURE_PAYLOADS[which][:cut or None])
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    try:
        for _, reader in iter_cpio(open_payload(_chunks(bytes(data), 4096))):
            reader.read()
    except FleetpkgError:
        pass
