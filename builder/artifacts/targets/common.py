"""Helpers every target shares: copying staged artifacts and rendering the targets-* templates."""

from __future__ import annotations

import os
import shutil
import stat

from ...errors import BuildError
from ..dist import Artifact, create_file

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
    src = stage.fspath(src_rel)
    try:
        st = os.stat(src)
    except FileNotFoundError:
        raise BuildError(f"internal error: {src_rel} was not staged before the targets ran") from None
    dst = stage.fspath(dst_rel)
    mode = 0o600 if secret else (0o755 if executable else 0o644)
    if stat.S_IMODE(st.st_mode) == mode:
        try:
            os.link(src, dst)
        except OSError:
            pass  # already there, or file systems without hard links: copy below
        else:  # the same inode: the source's recorded digest is the copy's
            if known is not None:
                return stage.record(Artifact(stage.artifact_path(dst_rel), kind, known.sha256, known.size,
                                             secret, signed))
            return stage.register(dst_rel, kind=kind, secret=secret, signed=signed)
    with os.fdopen(create_file(dst, mode), "wb") as out, open(src, "rb") as inp:
        shutil.copyfileobj(inp, out, COPY_CHUNK)
        os.fchmod(out.fileno(), mode)
    return stage.register(dst_rel, kind=kind, secret=secret, signed=signed,
                          sha256=known.sha256 if known else None, size=known.size if known else None)


def text_file(stage, rel: str, text: str, *, kind: str, executable: bool = False):
    return stage.write(rel, text.encode("utf-8"), kind=kind, executable=executable)


def signed_label(signer: str | None) -> str:
    return f"signed ({signer})" if signer else "unsigned"


def change_lists(info) -> dict:
    """Host names by what the admin does with their identity profile, for the targets' texts:
    upload (new Macs), replace (new identity), delete (Macs no longer in the build), keep (count)."""
    upload = [d.hostname for d in info.devices if d.change in (None, "added")]
    replace = [(d.hostname, d.reasons) for d in info.devices if d.change == "changed"]
    keep = sum(1 for d in info.devices if d.change == "unchanged")
    delete = [host for host, _serial in info.changes.removed] if info.changes else []
    return {"upload": sorted(upload), "replace": sorted(replace), "delete": sorted(delete), "keep": keep}
