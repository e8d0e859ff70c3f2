"""cpio odc writer and odc/newc/crc reader, checked against GNU cpio, bsdtar and fixture payloads."""

from __future__ import annotations

import gzip
import io
import os
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import ChecksumError, FleetpkgError, FormatError, UnsupportedError
from builder.formats.pkg.cpio import extract_cpio, iter_cpio, list_cpio, write_odc
from builder.formats.pkg.tree import entries_from_mapping, scan_tree
from tests.conftest import require_tool
from tests.formats.pkg.pkgfixtures import (bsdtar_extract, cpio_list, extract_package, fixture_packages,
                                   gnu_extract, perms_of)

MTIME = 1_650_000_000


def _make_tree(root: Path) -> Path:
    (root / "Applications" / "1E Client.app" / "Contents" / "MacOS").mkdir(parents=True)
    (root / "Library" / "LaunchDaemons").mkdir(parents=True)
    (root / "empty-dir").mkdir()
    exe = root / "Applications" / "1E Client.app" / "Contents" / "MacOS" / "tachyon"
    exe.write_bytes(os.urandom(70_000))
    exe.chmod(0o755)
    (root / "Library" / "LaunchDaemons" / "com.1e.client.plist").write_text("<plist/>\n")
    (root / "empty").write_bytes(b"")
    (root / "répertoire é.txt").write_text("unicode name\n")
    (root / "setuid-tool").write_bytes(b"#!/bin/sh\n")
    (root / "setuid-tool").chmod(0o4755)
    (root / "private").write_bytes(b"secret")
    (root / "private").chmod(0o600)
    os.symlink("Applications/1E Client.app", root / "link-to-app")
    os.symlink("/etc/hosts", root / "absolute-link")
    (root / "empty-dir").chmod(0o700)
    return root


def _odc_members(data: bytes) -> list[dict]:
    """Independent strict odc parse for checking the writer's bytes."""
    out, pos = [], 0
    while True:
        head = data[pos:pos + 76]
        assert head[:6] == b"070707", pos
        f = {"dev": head[6:12], "ino": head[12:18], "mode": head[18:24], "uid": head[24:30],
             "gid": head[30:36], "nlink": head[36:42], "rdev": head[42:48], "mtime": head[48:59],
             "namesize": head[59:65], "filesize": head[65:76]}
        v = {k: int(x, 8) for k, x in f.items()}
        name = data[pos + 76:pos + 76 + v["namesize"]]
        assert name.endswith(b"\0") and b"\0" not in name[:-1]
        v["name"] = name[:-1].decode()
        start = pos + 76 + v["namesize"]
        v["data"] = data[start:start + v["filesize"]]
        pos = start + v["filesize"]
        out.append(v)
        if v["name"] == "TRAILER!!!":
            assert pos % 512 == 0 or data[pos:].strip(b"\0") == b""
            assert len(data) % 512 == 0 and data[pos:] == bytes(len(data) - pos)
            return out


@pytest.fixture
def tree(tmp_path):
    return _make_tree(tmp_path / "root")


def _write(entries) -> bytes:
    buf = io.BytesIO()
    write_odc(buf, entries)
    return buf.getvalue()


def test_written_archive_lists_identically_in_gnu_cpio(tree):
    entries = scan_tree(tree, uid=0, gid=80, mtime=MTIME)
    data = _write(entries)
    listed = cpio_list(data)
    assert [row.name for row in listed] == [e.path for e in entries]
    for row, entry in zip(listed, entries):
        assert row.perms == perms_of(entry.st_mode), entry.path
        assert (row.uid, row.gid) == (0, 80)
        if entry.kind == "file":
            assert row.size == entry.size
        if entry.kind == "symlink":
            assert row.link_target == entry.link_target and row.size == len(entry.link_target.encode())
    # strict odc: 76-byte headers, name size incl. NUL, no padding, unique inodes, trailer
    members = _odc_members(data)
    assert members[-1] == {**members[-1], "name": "TRAILER!!!", "nlink": 1, "filesize": 0, "namesize": 11}
    inodes = [m["ino"] for m in members[:-1]]
    assert len(set(inodes)) == len(inodes) and all(m["mtime"] == MTIME for m in members[:-1])
    for m, e in zip(members, entries):
        if e.kind == "file":
            assert m["nlink"] == 1 and m["data"] == e.source.read_bytes()
    assert _write(entries) == data  # deterministic


def test_header_fields_match_gnu_cpio_odc(tree):
    """Same tree through GNU `cpio -o -H odc --owner 0:80`: identical mode/uid/gid/nlink/mtime/size/
    data per member (GNU stores names without "./" and real dev/inode numbers)."""
    for p in [tree, *tree.rglob("*")]:
        os.utime(p, (MTIME, MTIME), follow_symlinks=False)
    entries = scan_tree(tree, uid=0, gid=80, mtime=MTIME)
    names = "\n".join(e.path for e in entries) + "\n"
    gnu = subprocess.run([require_tool("cpio"), "-o", "-H", "odc", "--quiet", "--owner", "0:80"],
                         input=names.encode(), cwd=tree, capture_output=True, check=True).stdout
    ours, theirs = _odc_members(_write(entries)), _odc_members(gnu)
    assert len(ours) == len(theirs) and len(_write(entries)) % 512 == 0
    for a, b in zip(ours, theirs):
        for field in ("mode", "uid", "gid", "nlink", "mtime", "filesize", "data", "rdev"):
            assert a[field] == b[field], (a["name"], field)
        assert a["name"].removeprefix("./") == b["name"].removeprefix("./") or a["name"] == "."


def test_written_archive_extracts_byte_identical(tree, tmp_path):
    entries = scan_tree(tree, mtime=MTIME)
    for name, extract in (("gnu", gnu_extract), ("bsdtar", bsdtar_extract)):
        out = tmp_path / name
        extract(_write(entries), out)
        for e in entries:
            path = out / e.path
            st_ = os.lstat(path)
            if e.kind == "file":
                assert path.read_bytes() == e.source.read_bytes(), (name, e.path)
                assert stat.S_IMODE(st_.st_mode) == e.mode and int(st_.st_mtime) == MTIME
            elif e.kind == "symlink":
                assert os.readlink(path) == e.link_target
            else:
                assert stat.S_ISDIR(st_.st_mode)


@pytest.mark.parametrize("fmt", ["odc", "newc", "crc"])
def test_reads_gnu_cpio_archives(tree, fmt):
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    data = subprocess.run([require_tool("cpio"), "-o", "-H", fmt, "--quiet"], input=names, cwd=tree,
                          capture_output=True, check=True).stdout
    seen = []
    for entry, reader in iter_cpio(io.BytesIO(data)):
        disk = tree / entry.name
        st_ = os.lstat(disk)
        assert entry.mode == st_.st_mode and entry.size == (st_.st_size if not stat.S_ISDIR(st_.st_mode) else 0)
        assert (entry.uid, entry.gid, entry.mtime) == (st_.st_uid, st_.st_gid, int(st_.st_mtime))
        if entry.kind == "file":
            assert b"".join(reader.chunks(1000)) == disk.read_bytes()
        elif entry.kind == "symlink":
            assert entry.link_target == os.readlink(disk) and reader.read() == os.readlink(disk).encode()
        seen.append(os.path.normpath(entry.name))
    expected = sorted(os.path.normpath(n) for n in names.decode().split("\n") if n)
    assert sorted(seen) == expected


def test_partial_reads_skip_the_rest(tree):
    names = subprocess.run(["find", "."], cwd=tree, capture_output=True, check=True).stdout
    data = subprocess.run([require_tool("cpio"), "-o", "-H", "newc", "--quiet"], input=names, cwd=tree,
                          capture_output=True, check=True).stdout
    seen = []
    for entry, reader in iter_cpio(io.BytesIO(data)):
        head = reader.read(3)  # leave most of each member unread
        if entry.kind == "file":
            assert head == (tree / entry.name).read_bytes()[:3]
        seen.append(entry.name)
    assert seen == [e.name for e in list_cpio(io.BytesIO(data))]
    assert len(seen) == len(names.splitlines())


def test_crc_mismatch_is_a_checksum_error(tmp_path):
    (tmp_path / "f").write_bytes(b"hello crc")
    data = bytearray(subprocess.run([require_tool("cpio"), "-o", "-H", "crc", "--quiet"], input=b"f\n",
                                    cwd=tmp_path, capture_output=True, check=True).stdout)
    pos = data.index(b"hello crc")
    data[pos] ^= 1
    with pytest.raises(ChecksumError):
        list_cpio(io.BytesIO(bytes(data)))


def test_fixture_payloads_read_and_extract_like_bsdtar(tmp_path):
    n = special = 0
    for pkg in fixture_packages():
        for comp in extract_package(pkg, tmp_path / pkg.stem):
            for member in ("Payload", "Scripts"):
                if not (comp / member).exists():
                    continue
                raw = gzip.decompress((comp / member).read_bytes())
                listed = cpio_list(raw)
                ours = list_cpio(io.BytesIO(raw))
                assert [e.name for e in ours] == [r.name for r in listed]
                for e, r in zip(ours, listed):
                    assert (perms_of(e.mode), e.uid, e.gid, e.nlink) == (r.perms, r.uid, r.gid, r.nlink)
                    assert e.size == r.size
                mine, ref = tmp_path / f"{n}-ours", tmp_path / f"{n}-bsdtar"
                extract_cpio(io.BytesIO(raw), mine)
                bsdtar_extract(raw, ref)
                theirs = _snapshot(ref)
                # extract_cpio leaves out setuid/setgid/sticky on purpose; bsdtar -p keeps them
                assert _snapshot(mine) == _without_special_bits(theirs), (pkg.name, member)
                special += theirs != _without_special_bits(theirs)
                n += 1
    assert n == 6
    assert special == 1  # KeychainMinder's ./Library is drwxrwxr-t: the dropped bit is exercised


def _without_special_bits(snapshot: dict) -> dict:
    return {k: (v[0], v[1] & 0o777, *v[2:]) if v[0] in ("file", "dir") else v for k, v in snapshot.items()}


def _snapshot(root: Path) -> dict:
    out = {}
    for p in sorted(root.rglob("*")):
        st_ = os.lstat(p)
        if stat.S_ISREG(st_.st_mode):
            out[str(p.relative_to(root))] = ("file", stat.S_IMODE(st_.st_mode), int(st_.st_mtime), p.read_bytes())
        elif stat.S_ISLNK(st_.st_mode):
            out[str(p.relative_to(root))] = ("link", os.readlink(p))
        else:
            out[str(p.relative_to(root))] = ("dir", stat.S_IMODE(st_.st_mode))
    return out


# ------------------------------------------------------------------------------- hostile input


def _odc(name: bytes, data: bytes = b"", mode: int = 0o100644) -> bytes:
    """A hand-written odc member (not via write_odc)."""
    return (b"070707" + b"%06o" % 0 + b"%06o" % 1 + b"%06o" % mode + b"000000" * 2 + b"000001"
            + b"000000" + b"%011o" % 0 + b"%06o" % (len(name) + 1) + b"%011o" % len(data)
            + name + b"\0" + data)


TRAILER = _odc(b"TRAILER!!!", mode=0)


@pytest.mark.parametrize("name", [b"../evil", b"./a/../../evil", b"/tmp/evil-abs", b"a/../../evil"])
def test_extract_refuses_escaping_names(tmp_path, name):
    archive = _odc(b".", mode=0o40755) + _odc(name, b"x") + TRAILER
    assert [e.name for e in list_cpio(io.BytesIO(archive))][1] == name.decode()  # listing is fine
    with pytest.raises(FormatError):
        extract_cpio(io.BytesIO(archive), tmp_path / "out")
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil-abs").exists()


def test_gnu_made_dotdot_archive_refused(tmp_path):
    (tmp_path / "outside").write_text("x")
    (tmp_path / "in").mkdir()
    data = subprocess.run([require_tool("cpio"), "-o", "-H", "odc", "--quiet"], input=b"../outside\n",
                          cwd=tmp_path / "in", capture_output=True, check=True).stdout
    assert list_cpio(io.BytesIO(data))[0].name == "../outside"
    with pytest.raises(FormatError, match=r"\.\."):
        extract_cpio(io.BytesIO(data), tmp_path / "dest" / "deeper")


def test_nul_in_name_refused(tmp_path):
    archive = _odc(b"./a\0b", b"x") + TRAILER
    with pytest.raises(FormatError, match="NUL"):
        extract_cpio(io.BytesIO(archive), tmp_path / "out")


def test_no_write_through_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = (_odc(b".", mode=0o40755) + _odc(b"./link", str(outside).encode(), mode=0o120755)
               + _odc(b"./link/pwned", b"x") + TRAILER)
    with pytest.raises(FormatError, match="non-directory"):
        extract_cpio(io.BytesIO(archive), tmp_path / "dest")
    assert list(outside.iterdir()) == []
    # a symlink replaced by a later file is unlinked, never followed
    archive = _odc(b"./f", str(outside / "target").encode(), mode=0o120777) + _odc(b"./f", b"data") + TRAILER
    extract_cpio(io.BytesIO(archive), tmp_path / "dest2")
    assert (tmp_path / "dest2" / "f").read_bytes() == b"data" and not (outside / "target").exists()


def test_device_nodes_refused(tmp_path):
    archive = _odc(b"./dev", mode=0o020644) + TRAILER
    with pytest.raises(UnsupportedError):
        extract_cpio(io.BytesIO(archive), tmp_path / "out")


def test_malformed_headers():
    with pytest.raises(FormatError, match="not a cpio"):
        list_cpio(io.BytesIO(b"garbage!" * 20))
    with pytest.raises(UnsupportedError):
        list_cpio(io.BytesIO(b"\xc7\x71" + bytes(30)))
    bad = bytearray(_odc(b"./a", b"x") + TRAILER)
    bad[20] = ord("9")  # not octal
    with pytest.raises(FormatError, match="octal"):
        list_cpio(io.BytesIO(bytes(bad)))
    with pytest.raises(FormatError, match="truncated"):
        list_cpio(io.BytesIO(_odc(b"./a", b"x")))  # no trailer


def test_every_truncation_is_a_format_error(tree):
    data = _write(scan_tree(tree, mtime=MTIME))
    end = data.index(b"TRAILER!!!") + 11
    for cut in list(range(0, 400)) + list(range(400, end, 97)):
        with pytest.raises(FormatError):
            for _, reader in iter_cpio(io.BytesIO(data[:cut])):
                reader.read()


@pytest.mark.parametrize("field,kw", [("uid", dict(uid=1 << 20)), ("gid", dict(gid=8 ** 6)),
                                      ("mtime", dict(mtime=8 ** 11)), ("uid", dict(uid=-1))])
def test_writer_refuses_unrepresentable(field, kw):
    entries = entries_from_mapping({"a": b"x"}, **{"mtime": 0, **kw})
    with pytest.raises(UnsupportedError, match=f": {field} -?[0-9]+ does not fit a cpio odc header"):
        _write(entries)


def test_writer_takes_the_largest_representable_values():
    entries = entries_from_mapping({"a": b"x"}, uid=8 ** 6 - 1, gid=8 ** 6 - 1, mtime=8 ** 11 - 1)
    head = _write(entries)[76 + 2:76 + 2 + 76]  # the second header: ./a
    assert head[24:36] == b"777777777777" and head[48:59] == b"77777777777"


def _fixture_cpios() -> list[bytes]:
    import tempfile

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in fixture_packages():
            for comp in extract_package(pkg, Path(tmp) / pkg.stem):
                out.append(gzip.decompress((comp / "Payload").read_bytes()))
    return out


FIXTURE_CPIOS = _fixture_cpios()


def _consume(data: bytes) -> None:
    try:
        for _, reader in iter_cpio(io.BytesIO(data)):
            reader.read()
    except FleetpkgError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(FIXTURE_CPIOS) - 1), cut=st.integers(0, 200_000),
       edits=st.lists(st.tuples(st.integers(0, 200_000), st.integers(0, 255)), max_size=6))
def test_mutated_fixture_cpio_only_raises_project_errors(which, cut, edits):
    data = bytearray(FIXTURE_CPIOS[which][:cut or None])
    for pos, value in edits:
        if data:
            data[pos % len(data)] = value
    _consume(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_after_magic(tail):
    _consume(b"070707" + tail)
    _consume(b"070701" + tail)
