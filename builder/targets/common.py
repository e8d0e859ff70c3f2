"""Helpers every target shares: copying staged artifacts and rendering the targets-* templates."""

from __future__ import annotations

import os
import shutil
from functools import cache

import jinja2

from ..errors import BuildError
from ..resources import templates_dir
from ..scripts import shquote

COPY_CHUNK = 1 << 20


def copy_artifact(stage, src_rel: str, dst_rel: str, *, kind: str, secret: bool = False,
                  signed: str | None = None, executable: bool = False):
    """Put one staged file at another place in the build: a hard link when the modes agree
    (a 200 MB wrapper is needed by every target, and disk and tarballs should hold it once),
    else a streamed copy.

    Secret copies are created 0600 before a byte is written, so a private key is never readable
    by others even for a moment."""
    src = stage.path(src_rel)
    if not src.is_file():
        raise BuildError(f"internal error: {src_rel} was not staged before the targets ran")
    dst = stage.path(dst_rel)
    mode = 0o600 if secret else (0o755 if executable else 0o644)
    if (src.stat().st_mode & 0o777) == mode and not dst.exists():
        try:
            os.link(src, dst)
            return stage.register(dst_rel, kind=kind, secret=secret, signed=signed)
        except OSError:
            pass  # file systems without hard links: copy below
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out, COPY_CHUNK)
    os.chmod(dst, mode)
    return stage.register(dst_rel, kind=kind, secret=secret, signed=signed)


def text_file(stage, rel: str, text: str, *, kind: str, executable: bool = False):
    return stage.write(rel, text.encode("utf-8"), kind=kind, executable=executable)


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
    env.filters["shquote"] = shquote
    env.filters["md_code"] = md_code
    env.filters["md_cell"] = md_cell
    return env


def render(name: str, **values: object) -> str:
    return _environment().get_template(name).render(**values)


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


def signed_label(signer: str | None) -> str:
    return f"signed ({signer})" if signer else "unsigned"
