"""Payload tree description: scanning, in-memory trees, metadata overlay, validation."""

from __future__ import annotations

import os
import stat

import pytest

from builder.errors import FormatError
from builder.formats.pkg.bom import BomEntry
from builder.formats.pkg.cpio import CpioEntry
from builder.formats.pkg.tree import (TreeEntry, apply_metadata, check_tree, entries_from_mapping,
                              normalize_path, scan_tree)


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "b" / "c").mkdir(parents=True)
    (r / "a b").mkdir()
    (r / "b" / "c" / "f").write_bytes(b"12345")
    (r / "b" / "x").write_bytes(b"")
    (r / "b" / "x").chmod(0o755)
    (r / "a").write_text("top")
    os.symlink("b/c/f", r / "link")
    (r / "a b").chmod(0o750)
    return r


def test_scan_tree(root, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    entries = scan_tree(root)
    assert [e.path for e in entries] == [".", "./a", "./a b", "./b", "./b/c", "./b/c/f", "./b/x", "./link"]
    by = {e.path: e for e in entries}
    assert all((e.uid, e.gid, e.mtime) == (0, 0, 1234567890) for e in entries)
    assert by["./a b"].kind == "dir" and by["./a b"].mode == 0o750
    assert by["./a b"].st_mode == stat.S_IFDIR | 0o750
    assert by["./b/x"].mode == 0o755 and by["./b/x"].size == 0 and by["./b/x"].source == root / "b" / "x"
    assert by["./b/c/f"].size == 5 and by["./b/c/f"].st_mode == 0o100000 | stat.S_IMODE(os.stat(root / "b/c/f").st_mode)
    link = by["./link"]
    assert (link.kind, link.link_target, link.size, link.source) == ("symlink", "b/c/f", 5, None)
    assert by["./b/c/f"].name == "f" and by["./b/c/f"].parent == "./b/c" and by["."].parent is None
    assert scan_tree(root, uid=0, gid=80, mtime=7)[3].gid == 80


def test_scan_tree_refuses_special_files(root):
    os.mkfifo(root / "fifo")
    with pytest.raises(FormatError, match="unsupported file type"):
        scan_tree(root, mtime=0)


def test_scan_tree_bad_root(tmp_path):
    with pytest.raises(FormatError):
        scan_tree(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FormatError, match="not a directory"):
        scan_tree(tmp_path / "file")


def test_entries_from_mapping():
    entries = entries_from_mapping({"postinstall": (b"#!/bin/sh\n", 0o755), "res/x/y.txt": b"hi",
                                    "./res/z": b""}, mtime=3)
    assert [e.path for e in entries] == [".", "./postinstall", "./res", "./res/x", "./res/x/y.txt", "./res/z"]
    by = {e.path: e for e in entries}
    assert by["./postinstall"].mode == 0o755 and by["./res/x/y.txt"].mode == 0o644
    assert by["./res/x"].kind == "dir" and by["./res/x/y.txt"].data == b"hi" and by["./res/x/y.txt"].size == 2
    check_tree(entries)
    for bad in ("../x", "/abs", "a/../../b", "a\0b"):
        with pytest.raises(FormatError):
            entries_from_mapping({bad: b""}, mtime=0)
    with pytest.raises(FormatError):
        entries_from_mapping({"a": b"", "a/b": b""}, mtime=0)


def test_normalize_path():
    assert normalize_path("a//b/") == "./a/b"
    assert normalize_path("./") == normalize_path("") == normalize_path(".") == "."
    assert normalize_path("postinstall") == "./postinstall" and normalize_path("é x") == "./é x"
    assert normalize_path("...") == "./..." and normalize_path(" ") == "./ "
    assert normalize_path("./a") == "./a" and normalize_path("./") == normalize_path("./.") == "."
    for bad in ("..", "a\x00", "\x00", "/a", "a/../b", "./..", "./a\x00"):
        with pytest.raises(FormatError):
            normalize_path(bad)


def test_apply_metadata_from_bom_and_cpio(root):
    entries = scan_tree(root, mtime=0)
    ref = [BomEntry(".", "dir", 0, 0, 0, 0, 0, None, flags=1),  # placeholder: ignored
           BomEntry("./b", "dir", 0o40775, 0, 80, 11, 96, None),
           BomEntry("./a", "file", 0o100600, 501, 20, 12, 3, 123)]
    out = {e.path: e for e in apply_metadata(entries, ref)}
    assert (out["."].mode, out["."].mtime) == (stat.S_IMODE(os.stat(root).st_mode), 0)
    assert (out["./b"].mode, out["./b"].gid, out["./b"].mtime, out["./b"].size) == (0o775, 80, 11, 96)
    assert (out["./a"].mode, out["./a"].uid, out["./a"].size) == (0o600, 501, 3)
    cp = [CpioEntry("a", 0o100640, 1, 2, 1, 99, 3)]
    assert apply_metadata(entries, cp)[1].mode == 0o640
    with pytest.raises(FormatError, match="type differs"):
        apply_metadata(entries, [CpioEntry("./a", 0o40755, 0, 0, 2, 0, 0)])


def test_check_tree():
    root = TreeEntry(".", "dir", 0o755, 0, 0, 0, 0)
    f = TreeEntry("./a/b", "file", 0o644, 0, 0, 0, 0, data=b"")
    with pytest.raises(FormatError, match="parent"):
        check_tree([root, f])
    with pytest.raises(FormatError, match="twice"):
        check_tree([root, root])
    with pytest.raises(FormatError):
        check_tree([TreeEntry("a", "file", 0o644, 0, 0, 0, 0, data=b""), root])
    with pytest.raises(FormatError, match="kind"):
        check_tree([root, TreeEntry("./x", "fifo", 0o644, 0, 0, 0, 0)])
