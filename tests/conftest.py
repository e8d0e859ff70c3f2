"""Shared test helpers: where the real-world fixtures live, and the external tools tests rely on."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FLEETPKG_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures"
SCHEMAS = SHARED / "schemas" / "device-management"


def require_tool(name: str) -> str:
    """Path of an external tool; its absence is a test failure (CI installs them all)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: run .ci/run or install it (see README)")
    return path


@pytest.fixture
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"shared fixtures not found at {FIXTURES} (set FLEETPKG_SHARED)"
    return FIXTURES
