"""Locate the templates/ and payloads/ folders in a source checkout and in an installed wheel.

The wheel carries them inside the package (builder/templates, builder/payloads); a checkout or
editable install has them beside the package at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parents[1]  # builder/


@cache
def _locate(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fleetpkg installation is incomplete: no {name}/ folder near {_PACKAGE}")


def templates_dir() -> Path:
    return _locate("templates")


def payloads_dir() -> Path:
    return _locate("payloads")
