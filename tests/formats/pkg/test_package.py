"""open_package and the builders, checked with bsdtar and GNU cpio on real fixtures and our output."""

from __future__ import annotations

import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from builder.errors import BuildError, ChecksumError, FormatError
from builder.formats.pkg.package import (DirectoryComponent, EmbedComponent, bom_entries, build_component,
                                 build_product, iter_payload, list_payload, list_scripts, open_package,
                                 script_names)
from builder.formats.pkg.product import Choice, Distribution, Line, PkgRef, parse_distribution
from builder.formats.pkg.xar import XarReader
from tests.conftest import FIXTURES, require_tool

PKG_DIR = FIXTURES / "pkg"
PKGS = sorted(p for p in PKG_DIR.glob("*.pkg") if p.name != "homebrew-container.pkg")


def bsdtar(*args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("bsdtar"), *map(str, args)], capture_output=True, check=True, **kw)


def member(pkg, name) -> bytes:
    return bsdtar("-xOf", pkg, name).stdout


def members(pkg) -> list[str]:
    return bsdtar("-tf", pkg).stdout.decode().split()


def cpio_list(gz_cpio: bytes, verbose: bool = False) -> list[str]:
    """`gunzip | cpio -it` (GNU cpio), one name per line."""
    raw = subprocess.run(["gunzip", "-c"], input=gz_cpio, capture_output=True, check=True).stdout
    args = [require_tool("cpio"), "-it"] + (["-vn"] if verbose else [])
    return subprocess.run(args, input=raw, capture_output=True, check=True).stdout.decode().splitlines()


def toc(path) -> ET.Element:
    """The xar TOC decoded independently: 28-byte header, then a zlib stream."""
    data = Path(path).read_bytes()
    assert data[:4] == b"xar!"
    clen = int.from_bytes(data[8:16], "big")
    return ET.fromstring(zlib.decompress(data[28:28 + clen]))


def toc_files(path) -> dict[str, ET.Element]:
    out = {}

    def walk(el, prefix):
        for f in el.findall("file"):
            name = prefix + f.findtext("name")
            out[name] = f
            walk(f, name + "/")
    walk(toc(path).find("toc"), "")
    return out


def prefixes(pkg) -> list[str]:
    return sorted(n[: -len("PackageInfo")] for n in members(pkg) if n.split("/")[-1] == "PackageInfo")


@pytest.mark.parametrize("pkg", PKGS, ids=lambda p: p.name)
def test_every_fixture_reads_like_bsdtar_says(pkg):
    names = members(pkg)
    with open_package(pkg) as package:
        assert package.kind == ("product" if "Distribution" in names else "component")
        assert package.toc_checksum == "sha1"
        assert package.signed == ("installomator" in pkg.name)
        assert sorted(c.archive_prefix for c in package.components) == prefixes(pkg)
        for comp in package.components:
            ref = ET.fromstring(member(pkg, comp.archive_prefix + "PackageInfo"))
            assert comp.info.identifier == ref.get("identifier")
            assert comp.info.version == ref.get("version")
            assert comp.has_payload == (comp.archive_prefix + "Payload" in names)
            assert comp.has_scripts == (comp.archive_prefix + "Scripts" in names)
            assert comp.has_bom == (comp.archive_prefix + "Bom" in names)
            payload = member(pkg, comp.archive_prefix + "Payload")
            assert comp.payload_format == "gzip-cpio"
            assert [e.name for e in list_payload(package, comp)] == cpio_list(payload)
            if comp.has_scripts:
                scripts = member(pkg, comp.archive_prefix + "Scripts")
                assert [e.name for e in list_scripts(package, comp)] == cpio_list(scripts)
            # every BOM path is a payload path (the BOM lists what Installer records)
            bom = bom_entries(package, comp)
            assert {e.path for e in bom} <= set(cpio_list(payload))
            assert bom[0].path == "."


def test_bom_counts_and_checksums_agree_with_payload():
    """BOM file checksums are POSIX cksum of the payload files: recompute them with `cksum`."""
    pkg = PKG_DIR / "relic-dummy.pkg"
    with open_package(pkg) as package:
        comp = package.components[0]
        files = {e.path: e for e in bom_entries(package, comp) if e.type == "file"}
        assert len(bom_entries(package, comp)) == 10
        contents = {}
        for entry, data in iter_payload(package, comp):
            if entry.name in files:
                contents[entry.name] = data.read()
    for path, entry in files.items():
        out = subprocess.run(["cksum"], input=contents[path], capture_output=True, check=True).stdout.split()
        assert (int(out[0]), int(out[1])) == (entry.checksum, entry.size), path


def test_script_names_of_payload_free_fixture():
    with open_package(PKG_DIR / "rtrouton-Fix_Zoom_Vulnerability.pkg") as package:
        comp = package.components[0]
        assert script_names(package, comp) == ["._postinstall", "postinstall"]
        assert comp.info.script_names == ("postinstall",)


def test_not_an_installer_package():
    with pytest.raises(FormatError) as exc:
        open_package(PKG_DIR / "homebrew-container.pkg")
    assert "not an installer package" in str(exc.value) and "homebrew-container.pkg" in str(exc.value)


def test_damaged_member_is_a_checksum_error(tmp_path):
    pkg = PKG_DIR / "macops-KeychainMinder-1.0.pkg"
    data = bytearray(pkg.read_bytes())
    files = toc_files(pkg)
    heap = 28 + int.from_bytes(data[8:16], "big")
    payload_at = heap + int(files["Payload"].findtext("data/offset"))
    data[payload_at + 100] ^= 0xFF
    bad = tmp_path / "bad.pkg"
    bad.write_bytes(bytes(data))
    with open_package(bad) as package:  # opening reads the TOC and small members only
        with pytest.raises(ChecksumError) as exc:
            list_payload(package, package.components[0])
    assert "Payload" in str(exc.value)


# ---- builders ------------------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "root"
    (root / "Library/Application Support/ACME").mkdir(parents=True)
    (root / "Library/Application Support/ACME/conf.txt").write_bytes(b"Switch=x\n")
    tool = root / "Library/Application Support/ACME/tool"
    tool.write_bytes(os.urandom(5000))
    tool.chmod(0o755)
    (root / "Library/Application Support/ACME/latest").symlink_to("tool")
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "postinstall").write_bytes(b"#!/bin/sh\nexit 0\n")
    (scripts / "postinstall").chmod(0o644)  # forced to 0755 by the builder
    (scripts / "helper.sh").write_bytes(b"echo helper\n")
    return root, scripts


def test_build_component_is_valid_and_deterministic(tmp_path, tree, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    root, scripts = tree
    a = build_component(tmp_path / "a.pkg", identifier="com.acme.conf", version="1.2", root=root, scripts=scripts,
                        install_location="/")
    b = build_component(tmp_path / "b.pkg", identifier="com.acme.conf", version="1.2", root=root, scripts=scripts,
                        install_location="/")
    assert a.path.read_bytes() == b.path.read_bytes()
    assert sorted(members(a.path)) == ["Bom", "PackageInfo", "Payload", "Scripts"]
    out = tmp_path / "x"
    out.mkdir()
    bsdtar("-xf", a.path, "-C", out)  # verifies every member checksum
    listing = cpio_list(member(a.path, "Payload"), verbose=True)
    names = cpio_list(member(a.path, "Payload"))
    assert names == [".", "./Library", "./Library/Application Support", "./Library/Application Support/ACME",
                     "./Library/Application Support/ACME/conf.txt", "./Library/Application Support/ACME/latest",
                     "./Library/Application Support/ACME/tool"]
    assert all(line.split()[2:4] == ["0", "0"] for line in listing)  # root:wheel, never the build user
    script_listing = cpio_list(member(a.path, "Scripts"), verbose=True)
    modes = {line.split()[-1]: line.split()[0] for line in script_listing}
    assert modes["./postinstall"] == "-rwxr-xr-x" and modes["./helper.sh"] == "-rw-r--r--"
    info = ET.fromstring(member(a.path, "PackageInfo"))
    assert info.get("identifier") == "com.acme.conf" and info.get("install-location") == "/"
    assert info.find("payload").get("numberOfFiles") == "7"
    assert [s.tag for s in info.find("scripts")] == ["postinstall"]
    enc = {name: f.find("data/encoding").get("style") for name, f in toc_files(a.path).items()}
    assert enc == {"Bom": "application/x-gzip", "PackageInfo": "application/x-gzip",
                   "Payload": "application/octet-stream", "Scripts": "application/octet-stream"}
    assert toc(a.path).find("toc/creation-time").text == "2023-11-14T22:13:20"
    with open_package(a.path) as package:
        comp = package.components[0]
        bom = {e.path: e for e in bom_entries(package, comp)}
        assert set(bom) == set(names)
        tool_crc = subprocess.run(["cksum"], input=(root / "Library/Application Support/ACME/tool").read_bytes(),
                                  capture_output=True, check=True).stdout.split()[0]
        assert bom["./Library/Application Support/ACME/tool"].checksum == int(tool_crc)
        assert bom["./Library/Application Support/ACME/latest"].link_target == "tool"


def test_payload_free_component(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build_component(tmp_path / "p.pkg", identifier="com.acme.prepare", version="1", root=None,
                            scripts={"preinstall": b"#!/bin/sh\n", "postinstall": b"#!/bin/sh\n"},
                            install_location=None)
    assert sorted(members(built.path)) == ["Bom", "PackageInfo", "Payload", "Scripts"]
    assert cpio_list(member(built.path, "Payload")) == ["."]
    assert cpio_list(member(built.path, "Scripts"), verbose=True)[1].startswith("-rwxr-xr-x")
    info = ET.fromstring(member(built.path, "PackageInfo"))
    assert info.get("install-location") is None
    assert info.find("payload").attrib == {"numberOfFiles": "1", "installKBytes": "0"}
    assert [s.tag for s in info.find("scripts")] == ["preinstall", "postinstall"]


def test_in_memory_component_is_byte_identical_to_the_streamed_one(tmp_path, tmp_path_factory, monkeypatch):
    """Inputs held in memory (a mapping, TreeEntry data, payload-free) build without temporary
    files and give the very bytes the streamed path (temp Payload/Scripts files) gives."""
    import tempfile as tempfile_module

    from builder.formats.pkg import package as package_module
    from builder.formats.pkg.tree import entries_from_mapping

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    secret = os.urandom(3000)
    scripts = {"preinstall": b"#!/bin/sh\nexit 0\n", "postinstall": (b"#!/bin/sh\n", 0o700),
               "mac.p12": (secret, 0o600), "lib/ca-1.cer": os.urandom(900)}
    root = entries_from_mapping({"Library/ACME/conf.txt": b"Switch=x\n", "Library/ACME/tool": (b"\x7fELF" * 500, 0o755)})
    cases = {"payload-free": dict(root=None, scripts=scripts),
             "mapping payload": dict(root=root, scripts=scripts),
             "no scripts": dict(root=root, scripts=None)}
    for name, kwargs in cases.items():
        monkeypatch.setattr(package_module, "IN_MEMORY_MAX", -1)  # force the streamed path
        streamed = build_component(tmp_path / "s.pkg", identifier="com.acme.x", version="1", **kwargs)
        monkeypatch.undo()
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        monkeypatch.setattr(tempfile_module, "TemporaryDirectory", None)  # no temp folder ...
        monkeypatch.setattr(tempfile_module, "TemporaryFile", None)  # ... nor spool file
        made = build_component(tmp_path / "m.pkg", identifier="com.acme.x", version="1", mode=0o600, **kwargs)
        monkeypatch.undo()
        monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
        assert made.path.read_bytes() == streamed.path.read_bytes(), name
        assert made.info == streamed.info
        assert made.path.stat().st_mode & 0o777 == 0o600 and streamed.path.stat().st_mode & 0o777 == 0o644
        assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pkg", "s.pkg"]
        expected = ["Bom", "PackageInfo", "Payload"] + (["Scripts"] if kwargs["scripts"] else [])
        assert sorted(members(made.path)) == expected
        out = tmp_path_factory.mktemp("extracted")
        bsdtar("-xf", made.path, "-C", out)  # verifies every member checksum
        if kwargs["scripts"]:
            modes = {line.split()[-1]: line.split()[0]
                     for line in cpio_list(member(made.path, "Scripts"), verbose=True)}
            assert modes["./mac.p12"] == "-rw-------" and modes["./postinstall"] == "-rwxr-xr-x"
            assert (out / "Scripts").read_bytes() == member(streamed.path, "Scripts")


def test_payload_free_needs_scripts(tmp_path):
    with pytest.raises(BuildError):
        build_component(tmp_path / "p.pkg", identifier="a", version="1", root=None, scripts=None)
    with pytest.raises(BuildError):
        build_component(tmp_path / "p.pkg", identifier="a", version="1", root=None, scripts={"readme": b"x"})
    assert not (tmp_path / "p.pkg").exists()


def _dist(refs: list[tuple[str, str, str]]) -> Distribution:
    return Distribution(
        title="Wrapper", options=(("customize", "never"), ("require-scripts", "false"),
                                  ("hostArchitectures", "x86_64,arm64")),
        choices_outline=(Line("default", tuple(Line(i) for i, _, _ in refs)),),
        choices=(Choice("default"),) + tuple(Choice(i, (("visible", "false"),), (PkgRef(i),)) for i, _, _ in refs),
        pkg_refs=tuple(PkgRef(i, v, 0, "Root", "none", f"#{n}") for i, v, n in refs),
        product=(("id", "com.acme.wrapper"), ("version", "1")))


@pytest.mark.parametrize("pkg", PKGS, ids=lambda p: p.name)
def test_product_embeds_fixture_component_byte_for_byte(tmp_path, pkg, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    prefix = prefixes(pkg)[0]
    info = ET.fromstring(member(pkg, prefix + "PackageInfo"))
    ours = build_component(tmp_path / "ours.pkg", identifier="com.acme.configure", version="1", root=None,
                           scripts={"postinstall": b"#!/bin/sh\n"})
    dest = tmp_path / "wrapper.pkg"
    with XarReader(pkg) as vendor, XarReader(ours.path) as mine:
        build_product(dest, distribution=_dist([(info.get("identifier"), info.get("version"), "vendor.pkg"),
                                                ("com.acme.configure", "1", "ours.pkg")]),
                      components=[EmbedComponent(vendor, prefix, "vendor.pkg"), EmbedComponent(mine, "", "ours.pkg")])
    out = tmp_path / "x"
    out.mkdir()
    bsdtar("-xf", dest, "-C", out)
    original, wrapped = toc_files(pkg), toc_files(dest)
    for name in ("Bom", "Payload", "Scripts", "PackageInfo"):
        if prefix + name not in original:
            assert f"vendor.pkg/{name}" not in wrapped
            continue
        assert (hashlib.sha256(member(dest, f"vendor.pkg/{name}")).hexdigest()
                == hashlib.sha256(member(pkg, prefix + name)).hexdigest())
        # stored bytes unchanged: same encoding and same archived checksum as in the vendor's TOC
        for tag in ("data/encoding", "data/archived-checksum", "data/length"):
            a, b = original[prefix + name].find(tag), wrapped[f"vendor.pkg/{name}"].find(tag)
            assert (a.attrib, a.text) == (b.attrib, b.text)
    dist = parse_distribution(member(dest, "Distribution"))
    assert [r.path for r in dist.components()] == ["#vendor.pkg", "#ours.pkg"]
    with open_package(dest) as package:
        assert [c.archive_prefix for c in package.components] == ["vendor.pkg/", "ours.pkg/"]
        assert package.components[0].info.identifier == info.get("identifier")


def test_product_from_expanded_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    pkg = PKG_DIR / "macops-KeychainMinder-1.0.pkg"
    expanded = tmp_path / "expanded"
    expanded.mkdir()
    bsdtar("-xf", pkg, "-C", expanded)
    dest = tmp_path / "w.pkg"
    build_product(dest, distribution=_dist([("com.google.corp.KeychainMinder", "1.0", "minder.pkg")]),
                  components=[DirectoryComponent(expanded, "minder.pkg")])
    for name in ("Bom", "Payload", "Scripts", "PackageInfo"):
        assert member(dest, f"minder.pkg/{name}") == member(pkg, name)
    enc = {n: f.find("data/encoding").get("style") for n, f in toc_files(dest).items() if f.find("data") is not None}
    assert enc["minder.pkg/Payload"] == enc["minder.pkg/Scripts"] == "application/octet-stream"
    assert enc["minder.pkg/Bom"] == enc["Distribution"] == "application/x-gzip"


def test_product_refuses_dangling_pkg_refs(tmp_path):
    pkg = PKG_DIR / "macops-KeychainMinder-1.0.pkg"
    with XarReader(pkg) as vendor:
        with pytest.raises(BuildError, match="Distribution references"):
            build_product(tmp_path / "w.pkg", distribution=_dist([("a", "1", "a.pkg")]),
                          components=[EmbedComponent(vendor, "", "b.pkg")])
        with pytest.raises(BuildError, match="NAME.pkg"):
            build_product(tmp_path / "w.pkg", distribution=_dist([("a", "1", "a.pkg")]),
                          components=[EmbedComponent(vendor, "", "../a.pkg")])
    assert not (tmp_path / "w.pkg").exists()


# ---- hostile input -------------------------------------------------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from builder.errors import FleetpkgError  # noqa: E402
from builder.formats.pkg.inspect import describe_package  # noqa: E402

FIXTURE_BYTES = {p.name: p.read_bytes() for p in sorted(PKG_DIR.glob("*.pkg"))}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(sorted(FIXTURE_BYTES)), cut=st.integers(min_value=0, max_value=40_000),
       flips=st.lists(st.tuples(st.integers(min_value=0, max_value=40_000), st.integers(1, 255)), max_size=4))
def test_mutated_fixtures_only_raise_our_errors(tmp_path, name, cut, flips):
    data = bytearray(FIXTURE_BYTES[name][:cut] if cut < len(FIXTURE_BYTES[name]) else FIXTURE_BYTES[name])
    for pos, xor in flips:
        if pos < len(data):
            data[pos] ^= xor
    path = tmp_path / "m.pkg"
    path.write_bytes(bytes(data))
    try:
        doc = describe_package(path)
        with open_package(path) as package:
            for comp in package.components:
                list_payload(package, comp)
                list_scripts(package, comp)
    except FleetpkgError as exc:
        assert "\n" not in str(exc)
    else:
        assert doc["kind"] in ("product", "component")


def test_pkg_ref_cannot_escape_the_archive(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build_component(tmp_path / "c.pkg", identifier="a", version="1", root=None,
                            scripts={"postinstall": b"#!/bin/sh\n"})
    from builder.formats.pkg.xar import XarWriter
    evil = (b'<installer-gui-script minSpecVersion="1"><pkg-ref id="a" version="1">#../c.pkg</pkg-ref>'
            b'</installer-gui-script>')
    with XarReader(built.path) as src, XarWriter(tmp_path / "evil.pkg") as w:
        w.add_directory("a.pkg", mode=0o700)
        for entry in src.entries:
            w.add_stored("a.pkg/" + entry.path, src, entry)
        w.add_bytes("Distribution", evil, compress=True)
    with pytest.raises(FormatError, match="not a component in this archive"):
        open_package(tmp_path / "evil.pkg")


def test_percent_encoded_pkg_ref(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    built = build_component(tmp_path / "c.pkg", identifier="a", version="1", root=None,
                            scripts={"postinstall": b"#!/bin/sh\n"})
    dist = _dist([("a", "1", "My App.pkg")])
    dist = Distribution(**{**dist.__dict__, "pkg_refs": (PkgRef("a", "1", 0, "Root", "none", "#My%20App.pkg"),)})
    with XarReader(built.path) as src:
        build_product(tmp_path / "p.pkg", distribution=dist, components=[EmbedComponent(src, "", "My App.pkg")])
    with open_package(tmp_path / "p.pkg") as package:
        assert [c.archive_prefix for c in package.components] == ["My App.pkg/"]


def test_product_with_new_and_tuple_components(tmp_path, monkeypatch, tree):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    from builder.formats.pkg.package import NewComponent
    root, scripts = tree
    vendor = PKG_DIR / "macops-KeychainMinder-1.0.pkg"
    dist = _dist([("com.google.corp.KeychainMinder", "1.0", "vendor.pkg"), ("com.acme.conf", "1", "conf.pkg")])
    with XarReader(vendor) as reader:
        build_product(tmp_path / "a.pkg", distribution=dist, components=[
            (reader, "", "vendor.pkg"),
            NewComponent("conf.pkg", "com.acme.conf", "1", root=root, scripts=scripts)])
        build_product(tmp_path / "b.pkg", distribution=dist, components=[
            (reader, "", "vendor.pkg"),
            NewComponent("conf.pkg", "com.acme.conf", "1", root=root, scripts=scripts)])
    assert (tmp_path / "a.pkg").read_bytes() == (tmp_path / "b.pkg").read_bytes()
    out = tmp_path / "x"
    out.mkdir()
    bsdtar("-xf", tmp_path / "a.pkg", "-C", out)
    assert "./Library/Application Support/ACME/tool" in cpio_list(member(tmp_path / "a.pkg", "conf.pkg/Payload"))
    for name in ("Payload", "Scripts"):
        assert member(tmp_path / "a.pkg", f"vendor.pkg/{name}") == member(vendor, name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkg", "b.pkg", "root", "scripts", "x"]  # no temp left
