"""Publishing a build: every artifact goes to a private temporary folder, then one rename.

An interrupted or failed build therefore leaves no `dist/<fleet>-<version>` entry at all; the
temporary folder sits beside the final one (same file system, so the rename is atomic), is
mode 0700 because it holds private keys, and is removed on any error or SIGTERM/SIGINT. A folder
left by a SIGKILL is recognised by its prefix and removed by the next build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator

from ..errors import BuildError

PARTIAL_PREFIX = ".fleetpkg-partial-"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


@dataclass(frozen=True)
class Artifact:
    path: str  # relative, "/"-separated
    kind: str  # e.g. "wrapper-pkg", "device-profile", "identity-pkg", "munki-pkginfo"
    sha256: str
    size: int
    secret: bool
    signed: str | None  # signer subject, or None when unsigned / not signable


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class Staging:
    """The build's temporary folder and the list of what was written into it."""

    def __init__(self, root: Path):
        self.root = root
        self._artifacts: dict[str, Artifact] = {}
        self._folders: set[Path] = set()  # created (or found) by path(): one mkdir per folder

    @staticmethod
    def _clean(rel: str) -> str:
        """`rel` in its one canonical "a/b" spelling; refuses absolute paths, ".." and ""."""
        clean = PurePosixPath(rel)
        if clean.is_absolute() or ".." in clean.parts or not clean.parts:
            raise BuildError(f"internal error: artifact path {rel!r} is not a plain relative path")
        return str(clean)

    def _resolve(self, rel: str) -> Path:
        return self.root / self._clean(rel)

    def path(self, rel: str) -> Path:
        """Where to write `rel`; parent folders are created."""
        out = self._resolve(rel)
        if out.parent not in self._folders:
            out.parent.mkdir(parents=True, exist_ok=True)
            self._folders.add(out.parent)
        return out

    def artifact(self, rel: str) -> Artifact | None:
        """The record of an already registered file."""
        return self._artifacts.get(self._clean(rel))

    def write(self, rel: str, data: bytes, *, kind: str, secret: bool = False,
              signed: str | None = None, executable: bool = False) -> Artifact:
        out = self.path(rel)
        mode = 0o600 if secret else (0o755 if executable else 0o644)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(out, mode)  # O_CREAT's mode is filtered by the umask
        return self.register(rel, kind=kind, secret=secret, signed=signed,
                             sha256=hashlib.sha256(data).hexdigest(), size=len(data))

    def register(self, rel: str, *, kind: str, secret: bool = False, signed: str | None = None,
                 sha256: str | None = None, size: int | None = None) -> Artifact:
        """Record a file already written at self.path(rel).

        A writer that had the bytes in hand (a worker process, write()) passes their sha256 and
        size, so the file is not read again; its size on disk must agree."""
        clean = self._clean(rel)
        out = self.root / clean
        try:
            st = out.stat()
        except FileNotFoundError:
            raise BuildError(f"internal error: {rel} was registered but never written") from None
        if secret and st.st_mode & 0o777 != 0o600:
            os.chmod(out, 0o600)
        if sha256 is None or size is None:
            sha256, size = sha256_file(out), st.st_size
        elif size != st.st_size:
            raise BuildError(f"internal error: {rel} is {st.st_size} bytes on disk, its writer "
                             f"reported {size}")
        art = Artifact(clean, kind, sha256, size, secret, signed)
        self._artifacts[art.path] = art
        return art

    @property
    def artifacts(self) -> list[Artifact]:
        return [self._artifacts[k] for k in sorted(self._artifacts)]

    def finish(self, meta: dict) -> None:
        """Write manifest.json and SHA256SUMS (sorted, so identical inputs give identical files)."""
        arts = self.artifacts
        manifest = dict(meta, artifacts=[dict(vars(a)) for a in arts])  # flat: what asdict() gives
        (self.root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        lines = [f"{a.sha256}  {a.path}\n" for a in arts]
        (self.root / SUMS).write_text("".join(lines))


def _remove_stale(parent: Path) -> None:
    for entry in parent.glob(PARTIAL_PREFIX + "*"):
        try:
            pid = int(entry.name.rsplit("-", 1)[-1])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staged_output(final: Path) -> Iterator[Staging]:
    """Yield a Staging; on clean exit rename it to `final` (replacing an older build)."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{final.name}-", dir=parent))
    tmp = tmp.rename(tmp.with_name(f"{tmp.name}-{os.getpid()}"))
    os.chmod(tmp, 0o700)

    def _on_signal(signum, frame):  # turn SIGTERM into an exception so cleanup runs
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _on_signal) if _main_thread() else None
    try:
        staging = Staging(tmp)
        yield staging
        os.chmod(tmp, 0o755)
        if final.exists():
            old = parent / f"{PARTIAL_PREFIX}old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def read_manifest(root: Path) -> dict:
    try:
        return json.loads((root / MANIFEST).read_text())
    except FileNotFoundError:
        raise BuildError("no manifest.json: not a fleetpkg build folder", where=str(root)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BuildError(f"manifest.json is not valid JSON ({exc})", where=str(root)) from None
