"""Locate the templates/ and payloads/ folders in a source checkout and in an installed wheel.

The wheel carries them inside the package (builder/templates, builder/payloads); a checkout or
editable install has them beside the package at the repository root.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_HERE = Path(__file__).resolve().parent


@cache
def _locate(name: str) -> Path:
    for candidate in (_HERE / name, _HERE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"fleetpkg installation is incomplete: no {name}/ folder near {_HERE}")


def templates_dir() -> Path:
    return _locate("templates")


def payloads_dir() -> Path:
    return _locate("payloads")
