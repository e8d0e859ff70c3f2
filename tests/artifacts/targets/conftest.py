"""One `fleetpkg demo` build shared by the target tests (it takes a few seconds), plus helpers that
read a build with tools fleetpkg did not write (plistlib, bsdtar, the CLI's own JSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, require_tool


def fleetpkg(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=REPO, capture_output=True,
                            text=True, env=env, check=False, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"fleetpkg {' '.join(args)} exited {result.returncode}: {result.stderr}")
    return result


@dataclass(frozen=True)
class Build:
    folder: Path  # the demo fleet folder (fleet.toml, devices.csv, ...)
    root: Path  # dist/<fleet>-<version>/

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())

    def artifacts(self) -> dict[str, dict]:
        return {a["path"]: a for a in self.manifest["artifacts"]}


def find_build(folder: Path) -> Path:
    builds = sorted(p for p in (folder / "dist").iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(builds) == 1, builds
    return builds[0]


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory) -> Build:
    folder = tmp_path_factory.mktemp("targets") / "demo"
    fleetpkg("demo", str(folder), "--jobs", "1")
    return Build(folder, find_build(folder))


@pytest.fixture(scope="session")
def munki_identities_build(demo_build, tmp_path_factory) -> Build:
    """The demo fleet rebuilt with `[targets] munki = { ..., identities = true }`; `.folder` also
    holds build-stderr.txt, what the build said."""
    folder = copy_demo_fleet(demo_build, tmp_path_factory.mktemp("munki-identities") / "demo")
    toml = folder / "fleet.toml"
    text = toml.read_text()
    old = 'munki = { catalogs = ["testing"], name = "1E-Client" }'
    assert old in text
    toml.write_text(text.replace(old, 'munki = { catalogs = ["testing"], name = "1E-Client", identities = true }'))
    result = fleetpkg("build", str(toml), "--jobs", "1")
    (folder / "build-stderr.txt").write_text(result.stderr)
    return Build(folder, find_build(folder))


def inspect_json(path: Path) -> dict:
    return json.loads(fleetpkg("inspect", "--json", str(path)).stdout)


def expand_pkg(pkg: Path, dest: Path) -> Path:
    """Unpack a flat package with bsdtar, then every component's Payload (gzip cpio) beside it."""
    bsdtar = require_tool("bsdtar")
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run([bsdtar, "-xf", str(pkg), "-C", str(dest)], check=True)
    for payload in sorted(dest.rglob("Payload")):
        out = payload.parent / "Payload.d"
        out.mkdir()
        subprocess.run([bsdtar, "-xf", str(payload), "-C", str(out)], check=True)
    return dest


def copy_demo_fleet(build: Build, dest: Path) -> Path:
    """The demo fleet's inputs without its dist/, to rebuild with changes."""
    shutil.copytree(build.folder, dest, ignore=shutil.ignore_patterns("dist"))
    return dest
