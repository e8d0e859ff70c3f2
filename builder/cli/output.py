"""Rendering results for people (tables) and machines (one JSON document on stdout)."""

from __future__ import annotations

import json
import sys
from typing import Any


class RawItems(list):
    """A top-level list whose items are JSON text already, exactly as the compact encoder would
    write them (keys sorted): a large build's 60,000 artifact rows are formatted directly."""


def emit_json(doc: Any, *, one_item_per_line: bool = False) -> None:
    """Write exactly one JSON document to stdout: sorted keys so output is stable.

    one_item_per_line: the top-level lists (a large build's artifacts and devices) get one
    compact item per line, written by json's C encoder (or given as RawItems); the indented form of
    json.dumps takes seconds for 80,000 artifacts."""
    if not one_item_per_line or not isinstance(doc, dict):
        sys.stdout.write(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n")
        return
    encode = json.JSONEncoder(sort_keys=True, default=str).encode
    out = []  # pieces written as they are (a large build's document is ~20 MB)
    for key in sorted(doc):
        value = doc[key]
        out += [",\n  " if out else "{\n  ", encode(key), ": "]
        if isinstance(value, list) and value:
            out += ["[\n    ", ",\n    ".join(value if type(value) is RawItems else map(encode, value)), "\n  ]"]
        else:
            out.append(json.dumps(value, indent=2, sort_keys=True, default=str).replace("\n", "\n  "))
    out.append("\n}\n" if out else "{\n\n}\n")
    sys.stdout.writelines(out)


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(str(c))) for w, c in zip(widths, row)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*(str(c) for c in row)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)
