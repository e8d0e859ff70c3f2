"""Helpers every target shares: copying staged artifacts and rendering the targets-* templates."""

from __future__ import annotations

import os
import shutil

from ...errors import BuildError

COPY_CHUNK = 1 << 20


def copy_artifact(stage, src_rel: str, dst_rel: str, *, kind: str, secret: bool = False,
                  signed: str | None = None, executable: bool = False):
    """Put one staged file at another place in the build: a hard link when the modes agree
    (a 200 MB wrapper is needed by every target, and disk and tarballs should hold it once),
    else a streamed copy.

    Secret copies are created 0600 before a byte is written, so a private key is never readable
    by others even for a moment. In a sealed build a secret's copy is a link inside the seal."""
    known = stage.artifact(src_rel)
    if known is not None and known.sealed:
        if not secret:
            raise BuildError(f"internal error: {dst_rel} would be a public copy of the secret {src_rel}")
        return stage.link_sealed(src_rel, dst_rel, kind=kind, signed=signed)
    src = stage.path(src_rel)
    if not src.is_file():
        raise BuildError(f"internal error: {src_rel} was not staged before the targets ran")
    dst = stage.path(dst_rel)
    mode = 0o600 if secret else (0o755 if executable else 0o644)
    if (src.stat().st_mode & 0o777) == mode and not dst.exists():
        try:
            os.link(src, dst)
        except OSError:
            pass  # file systems without hard links: copy below
        else:  # the same inode: the source's recorded digest is the copy's
            return stage.register(dst_rel, kind=kind, secret=secret, signed=signed,
                                  sha256=known.sha256 if known else None, size=known.size if known else None)
    fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
        shutil.copyfileobj(inp, out, COPY_CHUNK)
    os.chmod(dst, mode)
    return stage.register(dst_rel, kind=kind, secret=secret, signed=signed)


def text_file(stage, rel: str, text: str, *, kind: str, executable: bool = False):
    return stage.write(rel, text.encode("utf-8"), kind=kind, executable=executable)


def signed_label(signer: str | None) -> str:
    return f"signed ({signer})" if signer else "unsigned"
