"""One Jinja2 environment for every template fleetpkg renders (shell scripts, XML, Markdown).

Strict about undefined names (a typo fails the build, not the Mac); no autoescaping, since
each output language has its own quoting: the filters below are how values reach it.
"""

from __future__ import annotations

from functools import cache

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
