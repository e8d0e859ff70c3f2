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
