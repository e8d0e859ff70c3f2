"""Vendor intake: zip and dmg containers, read from real images and archives made by other tools."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from builder.errors import BuildError, FleetpkgError, FormatError
from builder.fleet.intake import _DiskImage, resolve_vendor_package
from tests.conftest import FIXTURES, require_tool

VENDOR_PKG = FIXTURES / "pkg" / "relic-dummy.pkg"


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("image", ["container.dmg", "container-apfs.dmg"])
def test_reads_real_disk_images(tmp_path, image):
    disk = _DiskImage(FIXTURES / "dmg" / image)
    assert "/container" in disk.list_files()
    disk.extract("/container", tmp_path / "container")
    assert (tmp_path / "container").read_bytes() == b"#!/bin/sh\nexit 0\n"


@pytest.mark.parametrize("image", ["container.dmg", "container-apfs.dmg"])
def test_image_without_package_is_a_clear_error(tmp_path, image):
    with pytest.raises(BuildError, match="holds no .pkg"):
        resolve_vendor_package(FIXTURES / "dmg" / image, tmp_path)


def test_plain_pkg_is_used_in_place(tmp_path):
    source = resolve_vendor_package(VENDOR_PKG, tmp_path)
    assert source.package == VENDOR_PKG and source.scripts_dir is None


def make_vendor_tree(root: Path) -> Path:
    folder = root / "1e.client-macOS_v5.1.0.12"
    (folder / "scripts").mkdir(parents=True)
    shutil.copyfile(VENDOR_PKG, folder / "1e.client-macOS_v5.1.0.12.pkg")
    (folder / "scripts" / "install.sh").write_text("#!/bin/sh\necho vendor\n")
    (folder / "readme.txt").write_text("not a package\n")
    return folder


def test_zip_made_by_bsdtar(tmp_path):
    bsdtar = require_tool("bsdtar")
    make_vendor_tree(tmp_path / "src")
    archive = tmp_path / "vendor.zip"
    subprocess.run([bsdtar, "-a", "-cf", str(archive), "-C", str(tmp_path / "src"), "."], check=True)
    work = tmp_path / "work"
    source = resolve_vendor_package(archive, work)
    assert sha(source.package) == sha(VENDOR_PKG)
    assert source.package.is_relative_to(work)
    assert (source.scripts_dir / "install.sh").read_text() == "#!/bin/sh\necho vendor\n"
    assert not list(work.rglob("readme.txt"))  # only what is needed is extracted


def test_zip_holding_a_dmg_holding_the_pkg(tmp_path):
    import pydmg

    bsdtar = require_tool("bsdtar")
    make_vendor_tree(tmp_path / "src")
    image = tmp_path / "zipsrc" / "1e.client-macOS_v5.1.0.12.dmg"
    image.parent.mkdir()
    pydmg.create_dmg(str(tmp_path / "src"), str(image), "1E")
    archive = tmp_path / "vendor.zip"
    subprocess.run([bsdtar, "-a", "-cf", str(archive), "-C", str(image.parent), image.name], check=True)
    source = resolve_vendor_package(archive, tmp_path / "work")
    assert sha(source.package) == sha(VENDOR_PKG)
    assert "1e.client-macOS_v5.1.0.12.dmg" in source.origin
    assert (source.scripts_dir / "install.sh").exists()


def test_zip_without_package(tmp_path):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("readme.txt", "hello")
    with pytest.raises(BuildError, match="holds no .pkg or .dmg"):
        resolve_vendor_package(archive, tmp_path / "work")


def test_corrupt_zip(tmp_path):
    archive = tmp_path / "x.zip"
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.writestr("a.pkg", os.urandom(1000))
    archive.write_bytes(good.read_bytes()[:200])
    with pytest.raises(FleetpkgError):
        resolve_vendor_package(archive, tmp_path / "work")


@pytest.mark.parametrize("evil", ["../evil.pkg", "/abs/evil.pkg", "a/../../evil.pkg"])
def test_path_traversal_writes_nothing(tmp_path, evil):
    archive = tmp_path / "x.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/1e.client.pkg", b"xar!")
        zf.writestr(evil, b"xar!evil")
    work = tmp_path / "deep" / "work"
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(FormatError, match="outside|unsafe"):
        resolve_vendor_package(archive, work)
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_not_a_container(tmp_path):
    junk = tmp_path / "vendor.bin"
    junk.write_bytes(os.urandom(4096))
    with pytest.raises(FormatError, match="not a .pkg, .dmg or .zip"):
        resolve_vendor_package(junk, tmp_path / "work")
