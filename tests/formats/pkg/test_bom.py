"""BOM reader/writer and POSIX cksum, checked against coreutils cksum, GNU cpio, bsdtar and the
Apple-made Boms of the fixtures."""

from __future__ import annotations

import gzip
import io
import os
import random
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import FleetpkgError, FormatError, UnsupportedError
from builder.formats.pkg import bom as bommod
from builder.formats.pkg.bom import BomEntry, Cksum, cksum, read_bom, read_bom_vars, write_bom
from builder.formats.pkg.cpio import list_cpio
from builder.formats.pkg.tree import apply_metadata, entries_from_mapping, scan_tree
from tests.formats.pkg.pkgfixtures import (OLD_PKGBUILD, bsdtar_extract, cpio_list, extract_package,
                                   fixture_packages, perms_of, raw_bom_records, tool_cksum)

# ---------------------------------------------------------------------------------------------- cksum


@pytest.mark.parametrize("size", [0, 1, 3, 255, 256, 4095, 65537, (1 << 20) + 7, 3 << 20])
def test_cksum_matches_coreutils(tmp_path, size):
    data = random.Random(size).randbytes(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    expected = tool_cksum(path)
    assert cksum(data) == expected
    with open(path, "rb") as fh:
        assert cksum(fh) == expected
    crc = Cksum()
    for i in range(0, size, 7777):  # uneven chunking must not matter
        crc.update(data[i:i + 7777])
    assert crc.value() == expected


def test_cksum_known_values():
    assert cksum(b"") == 4294967295  # Apple's empty "Icon\r" entry (format doc §6.3)
    assert cksum(b"") == tool_cksum(b"")


@pytest.mark.parametrize("target", ["../lib/libfoo.dylib", "/Applications/1E Client.app",
                                    "Versions/Current/Resources", "x" * 300, "répertoire/é"])
def test_cksum_of_symlink_targets(target):
    assert cksum(target.encode()) == tool_cksum(target.encode())


# ------------------------------------------------------------------------------------ fixture Boms


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """(name, component dir, bsdtar-extracted payload dir, raw cpio bytes) per fixture component."""
    out = []
    for pkg in fixture_packages():
        base = tmp_path_factory.mktemp(pkg.stem)
        for comp in extract_package(pkg, base / "x"):
            raw = gzip.decompress((comp / "Payload").read_bytes())
            root = base / f"payload-{comp.name}"
            bsdtar_extract(raw, root)
            out.append((f"{pkg.name}:{comp.relative_to(base / 'x')}", comp, root, raw))
    assert len(out) == 4
    return out


def test_fixture_boms_read(components):
    for name, comp, _, _ in components:
        data = (comp / "Bom").read_bytes()
        entries = read_bom(data, where=name)
        variables = read_bom_vars(data)
        assert list(variables) == ["BomInfo", "Paths", "HLIndex", "VIndex", "Size64"], name
        assert variables["Paths"].block_size == 4096 and variables["VIndex"].block_size == 128
        assert variables["Paths"].path_count == len(entries)
        assert entries[0].path == "."
        keys = [(parent, path.rsplit("/", 1)[-1].encode()) for path, (parent, _) in raw_bom_records(data).items()]
        assert keys == sorted(keys), name  # Apple's leaf order: (parent id, name bytes)
        assert [e.path for e in entries] == list(raw_bom_records(data)), name


def test_fixture_boms_match_payload(components):
    """Paths, modes, owners, sizes and times as GNU cpio lists the Payload; checksums as `cksum`
    of the files bsdtar extracted. pkgbuild's placeholder records (flags 0x0001) carry no
    metadata: "." of a --component package and AppleDouble "._*" files."""
    for name, comp, root, raw in components:
        bom = {e.path: e for e in read_bom((comp / "Bom").read_bytes())}
        listed = {row.name: row for row in cpio_list(raw)}
        assert set(bom) == set(listed), name
        checked = 0
        for path, entry in bom.items():
            row = listed[path]
            if entry.placeholder:
                assert path == "." or path.rsplit("/", 1)[1].startswith("._"), (name, path)
                assert entry.size == 0 and (entry.checksum or 0) == 0
                continue
            assert perms_of(entry.mode) == row.perms, (name, path)
            assert (entry.uid, entry.gid) == (row.uid, row.gid), (name, path)
            disk = root / path
            if path != ".":  # the directory extracted into keeps its own time
                assert entry.mtime == int(os.lstat(disk).st_mtime), (name, path)
            if entry.type == "file":
                assert entry.size == row.size, (name, path)
                assert entry.checksum == tool_cksum(disk), (name, path)
                checked += 1
        assert checked == sum(1 for e in bom.values() if e.type == "file" and not e.placeholder)


def _key(entry: BomEntry):
    return (entry.path, entry.type, entry.mode, entry.uid, entry.gid, entry.size, entry.checksum,
            entry.link_target)


@pytest.mark.parametrize("reference", ["bom", "cpio"])
def test_fixture_round_trip(components, reference):
    """scan_tree of the extracted payload + the original owners/modes/times -> write_bom ->
    read_bom equals the original BOM (placeholders: same path and type, real values)."""
    for name, comp, root, raw in components:
        original = read_bom((comp / "Bom").read_bytes())
        ref = original if reference == "bom" else list_cpio(io.BytesIO(raw))
        tree = apply_metadata(scan_tree(root, mtime=0), ref)
        if reference == "cpio":  # cpio has no directory sizes; take them from the Bom
            tree = apply_metadata(tree, [e for e in original if e.type == "dir"])
        rebuilt = read_bom(write_bom(tree))
        if name.split(":")[0] in OLD_PKGBUILD:  # same records, today's path order (see OLD_PKGBUILD)
            assert sorted(e.path for e in rebuilt) == sorted(e.path for e in original), name
            assert [e.path for e in rebuilt] != [e.path for e in original]
            original, rebuilt = (sorted(x, key=lambda e: e.path) for x in (original, rebuilt))
        else:
            assert [e.path for e in rebuilt] == [e.path for e in original], name
        for old, new in zip(original, rebuilt):
            if old.placeholder:
                assert (new.path, new.type) == (old.path, old.type)
                continue
            assert _key(new) == _key(old), (name, old.path)
            assert new.mtime == old.mtime


def test_apple_style_records_are_byte_identical_to_pkgbuild(components):
    """For every entry pkgbuild wrote with plain flags 0x000f (not a Mach-O with arch info, not a
    placeholder), our PathInfo2 record bytes equal Apple's. (Path ids differ: pkgbuild numbers in
    filesystem order, we number breadth-first; both keep leaves in (parent id, name) order.)"""
    compared = 0
    for name, comp, root, _ in components:
        data = (comp / "Bom").read_bytes()
        original = read_bom(data)
        ours = write_bom(apply_metadata(scan_tree(root, mtime=0), original))
        apple_raw, our_raw = raw_bom_records(data), raw_bom_records(ours)
        for entry in original:
            if entry.flags != 0x000F:
                continue
            assert our_raw[entry.path][1] == apple_raw[entry.path][1], (name, entry.path)
            compared += 1
    assert compared >= 10


# ------------------------------------------------------------------------------------- structure


def _tree_with(n_files: int, tmp_path: Path) -> Path:
    root = tmp_path / "root"
    rnd = random.Random(n_files)
    for i in range(n_files):
        d = root / f"dir{i % 5}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"file{i:04d}").write_bytes(rnd.randbytes(rnd.randrange(0, 300)))
    os.symlink("../dir1/sub1/file0001", root / "dir0" / "link")
    os.chmod(root / "dir2", 0o775)
    return root


def _parse_layout(data: bytes):
    """Independent structural parse: header, vars, block table, free list, Paths leaves."""
    magic, version, nblocks, index_off, index_len, vars_off, vars_len = struct.unpack_from(">8s6I", data)
    assert (magic, version, vars_off) == (b"BOMStore", 1, 512)
    assert data[32:512] == bytes(480)
    assert index_off + index_len == len(data)  # index (block table + free list) ends the file
    count = struct.unpack_from(">I", data, index_off)[0]
    blocks = [struct.unpack_from(">II", data, index_off + 4 + 8 * i) for i in range(count)]
    assert blocks[0] == (0, 0) and nblocks == sum(1 for b in blocks if b[1])
    free_off = index_off + 4 + 8 * count
    assert data[free_off:] == bytes(20)  # n=0 plus two zero pairs, as mkbom
    nvars = struct.unpack_from(">I", data, vars_off)[0]
    pos, names = vars_off + 4, {}
    for _ in range(nvars):
        idx, nlen = struct.unpack_from(">IB", data, pos)
        names[data[pos + 5:pos + 5 + nlen].decode()] = idx
        pos += 5 + nlen
    assert pos == vars_off + vars_len
    return blocks, names


def test_layout_and_multi_leaf_order(tmp_path):
    root = _tree_with(700, tmp_path)
    entries = scan_tree(root, mtime=1_700_000_000)
    data = write_bom(entries)
    blocks, names = _parse_layout(data)
    assert list(names) == ["BomInfo", "Paths", "HLIndex", "VIndex", "Size64"]

    def block(i):
        off, length = blocks[i]
        return data[off:off + length]

    tree = block(names["Paths"])
    assert tree[:4] == b"tree" and len(tree) == 21
    _, child, block_size, path_count = struct.unpack_from(">4I", tree, 4)
    assert (block_size, path_count) == (4096, len(entries))
    branch = block(child)
    is_leaf, n, fwd, back = struct.unpack_from(">HHII", branch)
    assert (is_leaf, fwd, back) == (0, 0, 0) and n == 3 and len(branch) == 4096  # 716 entries
    leaves = [struct.unpack_from(">II", branch, 12 + 8 * i) for i in range(n)]
    keys, previous = [], 0
    for pos, (leaf, last_file) in enumerate(leaves):
        lb = block(leaf)
        is_leaf, count, fwd, back = struct.unpack_from(">HHII", lb)
        assert is_leaf == 1 and 0 < count <= 256 and len(lb) == 4096
        assert back == previous and fwd == (leaves[pos + 1][0] if pos + 1 < n else 0)
        previous = leaf
        pairs = [struct.unpack_from(">II", lb, 12 + 8 * i) for i in range(count)]
        assert pairs[-1][1] == last_file  # branch keys: last File block of each child
        for _, file_block in pairs:
            fb = block(file_block)
            keys.append((struct.unpack_from(">I", fb)[0], fb[4:-1]))
            assert fb[-1:] == b"\0" and b"/" not in fb[4:-1]  # basenames only
    assert keys == sorted(keys) and len(keys) == len(entries)
    for name in ("HLIndex", "Size64"):
        t = block(names[name])
        assert struct.unpack_from(">4I", t, 4)[2:] == (4096, 0)
    vindex = block(names["VIndex"])
    assert len(vindex) == 13 and struct.unpack_from(">I", vindex)[0] == 1
    vt = block(struct.unpack_from(">I", vindex, 4)[0])
    assert vt[:4] == b"tree" and struct.unpack_from(">I", vt, 12)[0] == 128
    assert len(block(struct.unpack_from(">I", vt, 8)[0])) == 128

    back = read_bom(data)
    assert [e.path for e in back] == _breadth_first([e.path for e in entries])
    by_path = {e.path: e for e in entries}
    assert {e.path for e in back} == set(by_path)
    for e in back:
        src = by_path[e.path]
        assert (e.mode, e.uid, e.gid, e.mtime) == (src.st_mode, 0, 0, 1_700_000_000)
        if e.type == "file":
            assert e.size == src.size and e.checksum == tool_cksum(src.source)
    link = next(e for e in back if e.type == "symlink")
    assert link.link_target == "../dir1/sub1/file0001"
    assert link.checksum == tool_cksum(b"../dir1/sub1/file0001") and link.size == 21


def _breadth_first(paths: list[str]) -> list[str]:
    """Expected leaf order: ids breadth-first from ".", children by name bytes, so (parent id, name)."""
    kids: dict[str, list[str]] = {}
    for p in paths:
        if p != ".":
            kids.setdefault(p.rsplit("/", 1)[0], []).append(p)
    order, queue = [], ["."]
    while queue:
        p = queue.pop(0)
        order.append(p)
        queue.extend(sorted(kids.get(p, []), key=lambda c: c.rsplit("/", 1)[1].encode()))
    return order


def test_multi_level_branches(tmp_path, monkeypatch):
    monkeypatch.setattr(bommod, "LEAF_CAPACITY", 4)
    files = {f"d{i % 3}/f{i:03d}": bytes([i % 256]) * i for i in range(100)}
    entries = entries_from_mapping(files, mtime=5)
    back = read_bom(write_bom(entries))
    assert sorted(e.path for e in back) == sorted(e.path for e in entries)
    for e in back:
        if e.type == "file":
            assert e.checksum == tool_cksum(files[e.path[2:]])


def test_bomutils_style_matches_mkbom_layout(tmp_path):
    """style="bomutils": flags 3, 31-byte records, exact-size nodes (what mkbom writes)."""
    root = _tree_with(20, tmp_path)
    data = write_bom(scan_tree(root, mtime=1), style="bomutils")
    _parse_layout(data)
    for path, (_, rec) in raw_bom_records(data).items():
        kind, one, flags = struct.unpack_from(">BBH", rec)
        assert (one, flags) == (1, 3)
        link_len = struct.unpack_from(">I", rec, 27)[0]
        assert len(rec) == 31 + link_len
    assert read_bom(data) == [
        BomEntry(e.path, e.type, e.mode, e.uid, e.gid, e.mtime, e.size, e.checksum, e.link_target, 3)
        for e in read_bom(write_bom(scan_tree(root, mtime=1)))]


def test_apple_style_record_shapes(tmp_path):
    root = _tree_with(3, tmp_path)
    records = raw_bom_records(write_bom(scan_tree(root, mtime=1)))
    for path, (_, rec) in records.items():
        kind, one, flags = struct.unpack_from(">BBH", rec)
        assert (one, flags) == (1, 0x000F)
        link_len = struct.unpack_from(">I", rec, 27)[0]
        assert len(rec) == {1: 35, 2: 31, 3: 31 + link_len + 8}[kind]
        assert rec[22] == 1


def test_deterministic(tmp_path):
    root = _tree_with(50, tmp_path)
    assert write_bom(scan_tree(root, mtime=9)) == write_bom(scan_tree(root, mtime=9))
    entries = scan_tree(root, mtime=9)
    sums = {e.path: tool_cksum(e.source) for e in entries if e.kind == "file"}
    sums.update({e.path: tool_cksum(e.link_target.encode()) for e in entries if e.kind == "symlink"})
    assert write_bom(entries, checksums=sums) == write_bom(entries)


def test_writer_refuses_bad_trees():
    good = entries_from_mapping({"a/b": b"x"}, mtime=0)
    with pytest.raises(FormatError):
        write_bom(good[1:])  # no "."
    with pytest.raises(FormatError):
        write_bom([good[0], good[2]])  # parent ./a missing
    from dataclasses import replace
    with pytest.raises(UnsupportedError):
        write_bom([good[0], good[1], replace(good[2], size=1 << 32, data=None)], checksums={"./a/b": 0})


# ----------------------------------------------------------------------------------- malformed


def _fixture_boms() -> list[bytes]:
    import tempfile

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for pkg in fixture_packages():
            for comp in extract_package(pkg, Path(tmp) / pkg.stem):
                out.append((comp / "Bom").read_bytes())
    return out


FIXTURE_BOMS = _fixture_boms()


def _reads_or_format_error(data: bytes) -> None:
    try:
        entries = read_bom(data)
        read_bom_vars(data)
    except FleetpkgError:
        return
    assert isinstance(entries, list)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(FIXTURE_BOMS) - 1), cut=st.integers(0, 40000))
def test_truncated_boms(which, cut):
    data = FIXTURE_BOMS[which]
    if cut >= len(data):
        cut = len(data) - 1
    _reads_or_format_error(data[:cut])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, len(FIXTURE_BOMS) - 1),
       edits=st.lists(st.tuples(st.integers(0, 40000), st.integers(0, 255)), min_size=1, max_size=8))
def test_mutated_boms(which, edits):
    data = bytearray(FIXTURE_BOMS[which])
    for pos, value in edits:
        data[pos % len(data)] = value
    _reads_or_format_error(bytes(data))


def test_mutations_in_structure_fields():
    """Systematic: every byte of the header, vars, block table and tree nodes set to 0xff."""
    data = write_bom(entries_from_mapping({"a/b": b"x", "c": b""}, mtime=0))
    for pos in list(range(0, 40)) + list(range(512, len(data))):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        _reads_or_format_error(bytes(damaged))


def test_cycles_are_refused():
    data = bytearray(write_bom(entries_from_mapping({"a": b"x"}, mtime=0)))
    blocks, names = _parse_layout(bytes(data))
    off, _ = blocks[names["Paths"]]
    leaf = struct.unpack_from(">I", data, off + 8)[0]
    loff, _ = blocks[leaf]
    struct.pack_into(">HHII", data, loff, 0, 1, 0, 0)  # leaf -> branch pointing at itself
    struct.pack_into(">II", data, loff + 12, leaf, 0)
    with pytest.raises(FormatError, match="reachable twice"):
        read_bom(bytes(data))


def test_not_a_bom():
    with pytest.raises(FormatError, match="not a BOM"):
        read_bom(b"xar!" + bytes(600))
    with pytest.raises(FormatError):
        read_bom(b"")
