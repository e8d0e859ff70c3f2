"""Publishing a build: every artifact goes to a private temporary folder, then one rename.

An interrupted or failed build therefore leaves no `dist/<fleet>-<version>` entry at all; the
temporary folder sits beside the final one (same file system, so the rename is atomic), is
mode 0700 because it holds private keys, and is removed on any error or SIGTERM/SIGINT. A folder
left by a SIGKILL is recognised by its prefix and removed by the next build (or `fleetpkg clean`).

A sealed build (builder/artifacts/seal.py) keeps its secret artifacts out of the folder altogether:
they are held in the seal's encrypted spool and written only into secrets.tar.age; the manifest
still lists them, with `"sealed": true`.
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
from typing import Callable, Iterator

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
    sealed: bool = False  # only inside secrets.tar.age (sha256 and size are of the plaintext)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Seal:
    """Where a sealed build's secrets go: age recipients (pyrage objects) and their text."""

    recipients: tuple
    texts: tuple[str, ...]


class Staging:
    """The build's temporary folder and the list of what was written into it. With a Seal, secret
    artifacts never enter the folder: write(secret=True), hold() and link_sealed() keep them in
    an encrypted spool that finish() turns into secrets.tar.age."""

    def __init__(self, root: Path, seal: Seal | None = None):
        self.root = root
        self._artifacts: dict[str, Artifact] = {}
        self._folders: set[Path] = set()  # created (or found) by path(): one mkdir per folder
        self.seal = seal
        self._spool = None
        if seal is not None:
            from .seal import SecretSpool

            self._spool = SecretSpool(root)

    @property
    def sealed(self) -> bool:
        return self._spool is not None

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

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

    def hold(self, rel: str, data: bytes) -> None:
        """Keep a secret file's bytes for secrets.tar.age (sealed builds only); register() it too."""
        if self._spool is None:
            raise BuildError(f"internal error: {rel} handed over as bytes, but the build is not sealed")
        self._spool.add(self._clean(rel), data)

    def link_sealed(self, src_rel: str, dst_rel: str, *, kind: str, signed: str | None = None) -> Artifact:
        """A copy of a sealed artifact: a hard link inside secrets.tar.age."""
        src = self.artifact(src_rel)
        if self._spool is None or src is None or not src.sealed:
            raise BuildError(f"internal error: {src_rel} is not a sealed artifact")
        clean = self._clean(dst_rel)
        self._spool.link(clean, src.path)
        return self.register(clean, kind=kind, secret=True, signed=signed, sha256=src.sha256, size=src.size)

    def register(self, rel: str, *, kind: str, secret: bool = False, signed: str | None = None,
                 sha256: str | None = None, size: int | None = None) -> Artifact:
        """Record a file already written at self.path(rel), or held for the seal.

        A writer that had the bytes in hand (a worker process, write()) passes their sha256 and
        size, so the file is not read again; its size on disk must agree."""
        clean = self._clean(rel)
        if self._spool is not None and clean in self._spool:
            if not secret or sha256 is None or size is None:
                raise BuildError(f"internal error: sealed {rel} registered without its digest or as public")
            art = Artifact(clean, kind, sha256, size, True, signed, sealed=True)
            self._artifacts[art.path] = art
            return art
        if secret and self._spool is not None:
            raise BuildError(f"internal error: secret {rel} was written in plain in a sealed build")
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

    def sealed_summary(self) -> dict | None:
        """{"count", "recipients"} of a sealed build (for DEPLOY.md), else None."""
        if self.seal is None:
            return None
        return {"count": sum(1 for a in self._artifacts.values() if a.sealed), "recipients": list(self.seal.texts)}

    def finish(self, meta: dict) -> None:
        """Write secrets.tar.age (sealed builds), manifest.json and SHA256SUMS (sorted, so identical
        inputs give identical files; SHA256SUMS lists the files in the folder, so not sealed ones)."""
        if self._spool is not None:
            from ..repro import build_epoch
            from .seal import SEALED_KIND, SEALED_NAME, write_archive

            if not len(self._spool):
                raise BuildError("nothing to seal: this build holds no secret artifact",
                                 hint="leave out --seal-to and [secrets] recipients")
            sha256, size = write_archive(self.path(SEALED_NAME), self._spool, self.seal.recipients, build_epoch())
            self.register(SEALED_NAME, kind=SEALED_KIND, sha256=sha256, size=size)
            meta = dict(meta, sealed_to=list(self.seal.texts))
        arts = self.artifacts
        manifest = dict(meta, artifacts=[dict(vars(a)) for a in arts])  # flat: what asdict() gives
        (self.root / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        lines = [f"{a.sha256}  {a.path}\n" for a in arts if not a.sealed]
        (self.root / SUMS).write_text("".join(lines))


@dataclass(frozen=True)
class Leftover:
    """A folder an interrupted (SIGKILLed) build or unseal left behind, as it was removed."""

    name: str
    files: int
    secret_files: int  # mode 0600 files: what the build writes private keys as


def remove_stale(parent: Path) -> list[Leftover]:
    """Remove the partial folders in `parent` whose process is gone; returns what was removed."""
    removed = []
    for entry in sorted(parent.glob(PARTIAL_PREFIX + "*")):
        try:
            pid = int(entry.name.rsplit("-", 1)[-1])
        except ValueError:
            continue
        if pid == os.getpid() or _alive(pid) or entry.is_symlink() or not entry.is_dir():
            continue
        files = secret = 0
        for folder, _dirs, names in os.walk(entry):
            for name in names:
                files += 1
                try:
                    secret += (os.lstat(os.path.join(folder, name)).st_mode & 0o777) == 0o600
                except OSError:
                    pass
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(Leftover(entry.name, files, secret))
    return removed


def describe_removed(removed: list[Leftover]) -> list[str]:
    return [f"removed {r.name}, left by an interrupted build ({r.files} file(s), {r.secret_files} of them "
            f"secret)" for r in removed]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def staged_output(final: Path, *, seal: Seal | None = None,
                  log: Callable[[str], None] = lambda _m: None) -> Iterator[Staging]:
    """Yield a Staging; on clean exit rename it to `final` (replacing an older build)."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for line in describe_removed(remove_stale(parent)):
        log(line)
    tmp = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{final.name}-", dir=parent))
    tmp = tmp.rename(tmp.with_name(f"{tmp.name}-{os.getpid()}"))
    os.chmod(tmp, 0o700)

    def _on_signal(signum, frame):  # turn SIGTERM into an exception so cleanup runs
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _on_signal) if _main_thread() else None
    staging = None
    try:
        staging = Staging(tmp, seal)
        yield staging
        staging.close()
        os.chmod(tmp, 0o755)
        if final.exists():
            old = parent / f"{PARTIAL_PREFIX}old-{final.name}-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
    except BaseException:
        if staging is not None:
            staging.close()
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
