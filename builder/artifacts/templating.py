"""One Jinja2 environment for every template fleetpkg renders (shell scripts, XML, Markdown).

Strict about undefined names (a typo fails the build, not the Mac); no autoescaping, since
each output language has its own quoting: the filters below are how values reach it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Sequence

import jinja2

from .resources import templates_dir


def shquote(value: object) -> str:
    """shlex.quote's single quoting, applied always (shlex leaves `a` bare) so every value reads
    the same way; `$` and backquotes are escaped outside the quotes, so shellcheck (SC2016) does
    not take a literal `$(...)` in a path for an expansion the author forgot."""
    text = str(value)
    if text == "":
        return "''"
    if "'" not in text and "$" not in text and "`" not in text:
        return "'" + text + "'"  # nothing to escape, the usual case
    parts: list[str] = []
    run = ""
    for ch in text:
        if ch in "'$`":
            if run:
                parts.append("'" + run + "'")
                run = ""
            parts.append({"'": "\\'", "$": "\\$", "`": "\\`"}[ch])
        else:
            run += ch
    if run:
        parts.append("'" + run + "'")
    return "".join(parts)


def md_code(value: object) -> str:
    """Inline Markdown code that survives backticks in the value."""
    text = str(value)
    fence = "`"
    while fence in text:
        fence += "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def md_cell(value: object) -> str:
    """Text safe inside a Markdown table cell (no pipe or line break ends the cell)."""
    return " ".join(str(value).split()).replace("|", "\\|")


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(shquote=shquote, md_code=md_code, md_cell=md_cell)
    return env


def render(name: str, **values: object) -> str:
    return _environment().get_template(name).render(**values)


# Hole markers: private-use characters shquote leaves alone and no template or value of ours holds.
_HOLE = re.compile("\ue000([0-9]+)\ue001")


def hole(index: int) -> str:
    """The value to render in place of per-call value `index` when making a Stencil."""
    return f"\ue000{index}\ue001"


@dataclass(frozen=True)
class Stencil:
    """A template rendered once, with holes where per-call values go, each filled as is or
    shquoted: one render for what is the same on every call (a build's 1,000 identity scripts
    differ only in the hostname), instead of one per call."""

    pieces: tuple[str, ...]  # literal text around the holes: one more than there are holes
    holes: tuple[tuple[int, bool], ...]  # (value index, shquoted)

    @classmethod
    def from_rendered(cls, text: str, count: int) -> "Stencil":
        """`text` rendered with hole(i) for values 0..count-1: a quoted hole is how shquote
        renders it. Callers check the stencil against a real render (a hole that was literal text
        of the template, or sat between quotes of its own, would be filled wrongly)."""
        pieces, holes, at = [], [], 0
        for m in _HOLE.finditer(text):
            if int(m.group(1)) >= count:
                continue
            start, end = m.span()
            quoted = start > at and text[start - 1] == "'" and text[end:end + 1] == "'"
            if quoted:
                start, end = start - 1, end + 1
            pieces.append(text[at:start])
            holes.append((int(m.group(1)), quoted))
            at = end
        pieces.append(text[at:])
        return cls(tuple(pieces), tuple(holes))

    def fill(self, values: Sequence[str]) -> str:
        out = [self.pieces[0]]
        for (index, quoted), piece in zip(self.holes, self.pieces[1:]):
            out.append(shquote(values[index]) if quoted else values[index])
            out.append(piece)
        return "".join(out)
