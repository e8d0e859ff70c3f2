"""Issue 2 "Done when": expand every fixture with bsdtar/GNU cpio, rebuild it with our writers, and
check the result with those same independent tools and against the original BOM.

Rebuild inputs: the files GNU cpio extracted, with owners/modes/times taken from the original
payload listing (and directory sizes from the original BOM, which records the build machine's
directory sizes no file carries), in the original payload order.
"""

from __future__ import annotations

import io
import stat
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder.formats.pkg.bom import read_bom
from builder.formats.pkg.cpio import list_cpio
from builder.formats.pkg.package import EmbedComponent, build_component, build_product
from builder.formats.pkg.product import parse_distribution
from builder.formats.pkg.tree import apply_metadata, scan_tree
from builder.formats.pkg.xar import XarReader
from tests.conftest import FIXTURES, require_tool

PKGS = sorted(p for p in (FIXTURES / "pkg").glob("*.pkg") if p.name != "homebrew-container.pkg")


def run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, check=True, **kw)


def gunzip(data: bytes) -> bytes:
    return run(["gunzip", "-c"], input=data).stdout


def cpio_t(gz: bytes, verbose=False) -> list[str]:
    return run([require_tool("cpio"), "-it", *(["-vn"] if verbose else [])], input=gunzip(gz)).stdout.decode().splitlines()


def without_nlink(lines: list[str]) -> list[str]:
    """`cpio -tvn` columns: mode nlink uid gid size date... name; nlink depends on the build disk."""
    return [" ".join(p for i, p in enumerate(line.split()) if i != 1) for line in lines]


def cpio_extract(gz: bytes, dest: Path) -> None:
    dest.mkdir(parents=True)
    run([require_tool("cpio"), "-idm", "--quiet", "--no-absolute-filenames"], input=gunzip(gz), cwd=dest)


def cksum(data: bytes) -> int:
    return int(run(["cksum"], input=data).stdout.split()[0])


def consistent(bom_entry, cpio_entry) -> bool:
    """Whether an original BOM record describes its payload item (Apple leaves a few that do not:
    a "." with mode 0, AppleDouble `._x` files recorded with size 0 and another mode)."""
    return (bom_entry.mode == cpio_entry.mode
            and (stat.S_ISDIR(cpio_entry.mode) or bom_entry.size == cpio_entry.size))


def rebuild_component(expanded: Path, work: Path, prefix: str, dest: Path):
    comp = expanded / prefix
    payload_gz = (comp / "Payload").read_bytes()
    original_cpio = list_cpio(io.BytesIO(gunzip(payload_gz)))
    assert [e.name for e in original_cpio] == cpio_t(payload_gz)  # reader agrees with GNU cpio
    original_bom = {e.path: e for e in read_bom((comp / "Bom").read_bytes())}
    root = work / "root"
    cpio_extract(payload_gz, root)
    scripts = None
    if (comp / "Scripts").exists():
        scripts = work / "scripts"
        cpio_extract((comp / "Scripts").read_bytes(), scripts)
    reference = [original_bom[e.name] if e.name in original_bom and consistent(original_bom[e.name], e) else e
                 for e in original_cpio]
    entries = {e.path: e for e in apply_metadata(scan_tree(root), reference)}
    ordered = [entries[e.name] for e in original_cpio]
    info = ET.fromstring((comp / "PackageInfo").read_bytes())
    built = build_component(dest, identifier=info.get("identifier"), version=info.get("version"), root=ordered,
                            scripts=scripts, install_location=info.get("install-location"))
    return built, original_cpio, original_bom


def check_component(pkg: Path, member_prefix: str, original: Path, original_prefix: str, original_cpio,
                    original_bom, tmp: Path):
    def member(path, name):
        return run([require_tool("bsdtar"), "-xOf", path, name]).stdout

    new_payload = member(pkg, member_prefix + "Payload")
    old_payload = member(original, original_prefix + "Payload")
    assert cpio_t(new_payload) == cpio_t(old_payload)
    assert without_nlink(cpio_t(new_payload, True)) == without_nlink(cpio_t(old_payload, True))
    names = set(run([require_tool("bsdtar"), "-tf", original]).stdout.decode().split())
    if original_prefix + "Scripts" in names:
        new_s, old_s = member(pkg, member_prefix + "Scripts"), member(original, original_prefix + "Scripts")
        assert sorted(cpio_t(new_s)) == sorted(cpio_t(old_s))
        modes = lambda gz: sorted((line.split()[-1], line.split()[0]) for line in cpio_t(gz, True))  # noqa: E731
        assert modes(new_s) == modes(old_s)
    new_bom = {e.path: e for e in read_bom(member(pkg, member_prefix + "Bom"))}
    assert set(new_bom) == set(original_bom)
    contents = {}
    extracted = tmp / "check-root"
    cpio_extract(new_payload, extracted)
    by_name = {e.name: e for e in original_cpio}
    for path, old in original_bom.items():
        new = new_bom[path]
        if consistent(old, by_name[path]):
            assert (new.path, new.mode, new.uid, new.gid, new.size, new.checksum) == \
                   (old.path, old.mode, old.uid, old.gid, old.size, old.checksum), path
        else:  # the original record contradicts its own payload: ours must describe the payload
            item = by_name[path]
            assert (new.mode, new.uid, new.gid) == (item.mode, item.uid, item.gid), path
            if stat.S_ISREG(item.mode):
                contents[path] = (extracted / path).read_bytes()
                assert (new.size, new.checksum) == (item.size, cksum(contents[path])), path


@pytest.mark.parametrize("fixture", PKGS, ids=lambda p: p.name)
def test_expand_rebuild_roundtrip(tmp_path, fixture, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    bsdtar = require_tool("bsdtar")
    expanded = tmp_path / "expanded"
    expanded.mkdir()
    run([bsdtar, "-xf", fixture, "-C", expanded])
    is_product = (expanded / "Distribution").exists()
    prefixes = sorted(str(p.parent.relative_to(expanded)) + "/" for p in expanded.glob("*/PackageInfo")) \
        if is_product else [""]
    rebuilt = {}
    for i, prefix in enumerate(prefixes):
        work = tmp_path / f"work{i}"
        built, original_cpio, original_bom = rebuild_component(expanded, work, prefix, tmp_path / f"c{i}.pkg")
        rebuilt[prefix] = (built, original_cpio, original_bom)
    if is_product:
        dist = parse_distribution((expanded / "Distribution").read_bytes())
        readers = [XarReader(rebuilt[p][0].path) for p in prefixes]
        try:
            out = tmp_path / "rebuilt.pkg"
            build_product(out, distribution=dist,
                          components=[EmbedComponent(r, "", p.rstrip("/")) for r, p in zip(readers, prefixes)])
        finally:
            for r in readers:
                r.close()
        targets = [(out, p, p) for p in prefixes]
        assert parse_distribution(run([bsdtar, "-xOf", out, "Distribution"]).stdout) == dist
    else:
        targets = [(rebuilt[""][0].path, "", "")]
    for pkg, member_prefix, original_prefix in targets:
        run([bsdtar, "-tf", pkg])
        dest = tmp_path / f"extract-{pkg.name}"
        dest.mkdir(exist_ok=True)
        run([bsdtar, "-xf", pkg, "-C", dest])  # verifies TOC and every member checksum
        _, original_cpio, original_bom = rebuilt[original_prefix]
        check_component(pkg, member_prefix, fixture, original_prefix, original_cpio, original_bom,
                        tmp_path / f"check-{member_prefix.strip('/') or 'root'}")
        info = ET.fromstring(run([bsdtar, "-xOf", pkg, member_prefix + "PackageInfo"]).stdout)
        ref = ET.fromstring(run([bsdtar, "-xOf", fixture, original_prefix + "PackageInfo"]).stdout)
        for attribute in ("identifier", "version", "install-location"):
            assert info.get(attribute) == ref.get(attribute)


def test_rebuild_is_deterministic(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    fixture = FIXTURES / "pkg" / "macops-KeychainMinder-1.0.pkg"
    expanded = tmp_path / "e"
    expanded.mkdir()
    run([require_tool("bsdtar"), "-xf", fixture, "-C", expanded])
    a = rebuild_component(expanded, tmp_path / "w1", "", tmp_path / "a.pkg")[0]
    b = rebuild_component(expanded, tmp_path / "w2", "", tmp_path / "b.pkg")[0]
    assert a.path.read_bytes() == b.path.read_bytes()
