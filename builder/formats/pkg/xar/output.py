"""Writing a xar out: the output is a temp file beside its destination, renamed over it only when
complete, and data already on disk is copied by the kernel (copy_file_range) where it can be."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from ....errors import BuildError, FormatError
from .model import CHUNK


def write_all(fd: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def copy_range(src_fd: int, dst_fd: int, offset: int, length: int) -> None:
    """Append src[offset:offset+length] to dst at its current position, in the kernel if possible."""
    end = offset + length
    if hasattr(os, "copy_file_range"):
        try:
            while offset < end:
                n = os.copy_file_range(src_fd, dst_fd, min(end - offset, 1 << 30), offset)
                if n == 0:
                    break
                offset += n
        except OSError:
            pass
    while offset < end:
        chunk = os.pread(src_fd, min(CHUNK, end - offset), offset)
        if not chunk:
            raise FormatError("source ended while copying xar data")
        write_all(dst_fd, chunk)
        offset += len(chunk)


class Output:
    """A temp file next to dest, renamed over it on commit and removed on abort."""

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)
        directory = self.dest.parent if str(self.dest.parent) else Path(".")
        try:
            self.fd, self.tmp = tempfile.mkstemp(dir=directory, prefix=f".{self.dest.name}.", suffix=".tmp")
        except OSError as exc:
            raise BuildError(f"cannot create output: {exc.strerror or exc}", where=str(self.dest)) from None

    def commit(self, mode: int = 0o644) -> None:
        os.fchmod(self.fd, mode)
        os.close(self.fd)
        self.fd = -1
        os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass
