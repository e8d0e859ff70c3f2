"""Work folders a command needs while it runs (a vendor package unpacked from its disk image, the
unsigned wrapper before it is signed): in the system's temporary folder, named with the process's
pid, so that what a build or check killed with SIGKILL leaves (no clean-up runs then; a vendor
package can be hundreds of MB) is found by name and removed by the next build or `fleetpkg clean`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

PREFIX = "fleetpkg-"
KINDS = ("build", "check", "vendor")


def pid_folder(prefix: str, parent: Path | None = None) -> Path:
    """A new private (0700) folder `<prefix><random>-<pid>` in `parent` (the system's temporary
    folder by default): the pid says, after a SIGKILL, whether its owner is still at work."""
    made = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    path = made.rename(made.with_name(f"{made.name}-{os.getpid()}"))
    os.chmod(path, 0o700)
    return path


def orphans(candidates) -> Iterator[Path]:
    """The pid_folder()s among `candidates` whose process is gone (never this one's; no symlink)."""
    for entry in candidates:
        try:
            pid = int(entry.name.rsplit("-", 1)[-1])
        except ValueError:
            continue
        if pid == os.getpid() or alive(pid) or entry.is_symlink() or not entry.is_dir():
            continue
        yield entry


@contextmanager
def scratch(kind: str) -> Iterator[Path]:
    """A pid_folder `fleetpkg-<kind>-<random>-<pid>`, removed when the block ends."""
    path = pid_folder(f"{PREFIX}{kind}-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_scratch(root: Path | None = None) -> list[tuple[str, int]]:
    """Remove the scratch folders in `root` (the system's temporary folder) whose process is gone,
    this user's only; (path, files) of each one removed."""
    root = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed = []
    for kind in KINDS:
        for entry in orphans(sorted(root.glob(f"{PREFIX}{kind}-*-*"))):
            try:
                if entry.lstat().st_uid != os.getuid():
                    continue
            except OSError:
                continue
            files = sum(len(names) for _folder, _dirs, names in os.walk(entry))
            shutil.rmtree(entry, ignore_errors=True)
            removed.append((str(entry), files))
    return removed


def describe_scratch(removed: list[tuple[str, int]]) -> list[str]:
    return [f"removed {path}, a work folder left by an interrupted fleetpkg ({files} file(s))"
            for path, files in removed]


def alive(pid: int) -> bool:
    """Whether process `pid` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
