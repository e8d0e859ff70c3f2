"""A fresh clone tests on its own: no reader reaches outside the repository for fixtures or schemas,
every copied fixture has its provenance written down, and none is kept out of git."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from tests.conftest import FIXTURES, REPO, SCHEMAS

# Spelt in pieces so this file does not match itself.
OUTSIDE = re.compile("|".join([re.escape("../" + "shared"), "FLEETPKG_" + "SHARED",
                               "shared/" + "(?:fixtures|schemas|docs)"]).encode())
SCANNED = ["builder", "tests", "benchmarks", ".ci", "docs", "README.md"]


def _files(*roots):
    for root in roots:
        if root.is_file():
            yield root
        for path in sorted(root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                yield path


def test_nothing_reads_or_cites_a_directory_beside_the_repository():
    hits = [f"{path.relative_to(REPO)}: {m.group().decode()}"
            for path in _files(*(REPO / name for name in SCANNED))
            for m in [OUTSIDE.search(path.read_bytes())] if m]
    assert hits == []


@pytest.mark.parametrize("folder, readme", [(FIXTURES, FIXTURES / "README.md"),
                                            (SCHEMAS, SCHEMAS.parent / "README.md")])
def test_every_copied_file_has_its_origin_recorded(folder, readme):
    text = readme.read_text(encoding="utf-8")
    files = [p.relative_to(folder).as_posix() for p in _files(folder) if p != readme]
    assert len(files) > 5
    assert [f for f in files if f not in text] == []
    named = set(re.findall(r"^\| ((?:pkg|macho|dmg|mobileconfig|mdm/profiles)/[^ |]+) \|", text, re.M))
    assert named and sorted(named - set(files)) == []  # and the README names no file that is missing


def test_fixtures_are_not_git_ignored():
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout")
    paths = [str(p.relative_to(REPO)) for p in _files(FIXTURES, SCHEMAS.parent)]
    ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "--no-index", *paths],
                             capture_output=True, text=True)
    assert ignored.returncode == 1 and ignored.stdout == "", ignored.stdout + ignored.stderr
