"""Shared test helpers: where the real-world fixtures live, and the external tools tests rely on."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"  # real files made by other tools; provenance in its README.md
SCHEMAS = REPO / "tests" / "schemas" / "device-management"  # Apple's payload schemas (MIT)


def require_tool(name: str) -> str:
    """Path of an external tool; its absence is a test failure (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run .ci/run or install it (see README)")
    return path


def age_key_pair(folder: Path) -> tuple[Path, str]:
    """An admin's age key pair, made by age-keygen: (identity file, recipient)."""
    import subprocess

    key = folder / "admin.agekey"
    subprocess.run([require_tool("age-keygen"), "-o", str(key)], check=True, capture_output=True)
    recipient = subprocess.run([require_tool("age-keygen"), "-y", str(key)], check=True, capture_output=True,
                               text=True).stdout.strip()
    return key, recipient


def age_untar(archive: Path, identity: Path, dest: Path, tar_tool: str = "tar") -> Path:
    """`age -d -i KEY secrets.tar.age | tar -x` with Debian's age CLI and GNU tar (or bsdtar), as
    DEPLOY.md tells an admin; returns dest."""
    import subprocess

    dest.mkdir(parents=True)
    age = subprocess.Popen([require_tool("age"), "-d", "-i", str(identity), str(archive)], stdout=subprocess.PIPE)
    args = [require_tool(tar_tool), "-x", "-f", "-"] if tar_tool == "bsdtar" else [require_tool(tar_tool), "-x"]
    subprocess.run(args, stdin=age.stdout, cwd=dest, check=True)
    age.stdout.close()
    assert age.wait(timeout=60) == 0
    return dest
