"""Publishing a build: every artifact goes to a private temporary folder, then one rename.

An interrupted or failed build therefore leaves no `dist/<fleet>-<version>` entry at all; the
temporary folder sits beside the final one (same file system, so the rename is atomic), is
mode 0700 because it holds private keys, and is removed on any error or SIGTERM/SIGINT. A folder
left by a SIGKILL is recognised by its prefix and removed by the next build (or `fleetpkg clean`).

Rebuilding into the same folder keeps the older build there until the new one is complete; a
new build may hard-link files of the older one (carried-forward identities), so no file in a
staging folder is ever written through: create_file replaces, never truncates.

A sealed build (builder/artifacts/seal.py) keeps its secret artifacts out of the folder altogether:
they are held in the seal's encrypted spool and written only into secrets.tar.age; the manifest
still lists them, with `"sealed": true`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator, NamedTuple

from ..errors import BuildError
from ..scratch import alive, orphans, pid_folder

PARTIAL_PREFIX = ".fleetpkg-partial-"
REPLACED_PREFIX = ".fleetpkg-replaced-"  # an older build moved aside while the new one is moved in
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"


class Artifact(NamedTuple):
    """One file of a build (a large fleet's build has ~60,000: a tuple is made several times faster
    than a frozen dataclass, in the workers and in the parent that gathers them)."""

    path: str  # relative, "/"-separated
    kind: str  # e.g. "wrapper-pkg", "device-profile", "identity-pkg", "munki-pkginfo"
    sha256: str
    size: int
    secret: bool
    signed: str | None  # signer subject, or None when unsigned / not signable
    sealed: bool = False  # only inside secrets.tar.age (sha256 and size are of the plaintext)


def sha256_of(path: str | Path, small: int = 1 << 16) -> str:
    """sha256_file for many small files: one read() without a buffered file object."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.read(fd, small)
        if len(data) < small:
            return hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256(data)
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def sha256_file(path: Path) -> str:
    """A staged file's digest when its writer did not report one (tests count these reads)."""
    return sha256_of(path)


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
        self._sorted: list[Artifact] | None = None  # self.artifacts, until the next change
        self._folders: dict[str, str] = {}  # created (or found) by fspath(): one mkdir per folder
        # files of the previous build a write() may hard-link instead when its bytes are the same:
        # dist-relative path -> (file, sha256, size), all verified against that build's manifest
        self.reuse: dict[str, tuple[str, str, int]] = {}
        self.reuse_docs: dict[str, str] = {}  # path -> fingerprint of the document rendered there before
        self.docs: dict[str, str] = {}  # path -> fingerprint of the document write_doc rendered here
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
        if (rel and rel[0] not in "/." and rel[-1] not in "/." and "//" not in rel and "/." not in rel):
            return rel  # already canonical (the usual case, checked without pathlib)
        clean = PurePosixPath(rel)
        if clean.is_absolute() or ".." in clean.parts or not clean.parts:
            raise BuildError(f"internal error: artifact path {rel!r} is not a plain relative path")
        return str(clean)

    def path(self, rel: str) -> Path:
        """Where to write `rel`; parent folders are created."""
        return Path(self.fspath(rel))

    def fspath(self, rel: str) -> str:
        """path() as a string (for the per-file hot paths: no pathlib objects)."""
        folder, _, name = self._clean(rel).rpartition("/")
        parent = self._folders.get(folder)
        if parent is None:
            # folders below the staging folder, never the staging folder itself: a worker still
            # running after its build failed (and removed the folder) must not bring it back
            parent = os.fspath(self.root).rstrip("/")
            for part in folder.split("/") if folder else ():
                parent = f"{parent}/{part}"
                try:
                    os.mkdir(parent)
                except FileExistsError:
                    pass
            self._folders[folder] = parent
        return f"{parent}/{name}"

    artifact_path = _clean  # the spelling a path is recorded under

    def artifact(self, rel: str) -> Artifact | None:
        """The record of an already registered file."""
        return self._artifacts.get(self._clean(rel))

    def write(self, rel: str, data: bytes, *, kind: str, secret: bool = False,
              signed: str | None = None, executable: bool = False) -> Artifact:
        if secret and self._spool is not None:
            raise BuildError(f"internal error: secret {rel} was written in plain in a sealed build")
        out = self.fspath(rel)
        mode = 0o600 if secret else (0o755 if executable else 0o644)
        sha256 = hashlib.sha256(data).hexdigest()
        same = self.reuse.get(self._clean(rel))
        if same is not None and same[1:] == (sha256, len(data)) and not secret and mode == 0o644:
            try:
                return self.link(same[0], rel, kind=kind, secret=False, signed=signed, sha256=sha256, size=len(data))
            except OSError:
                pass  # the previous build's copy is gone: the bytes are in hand
        with os.fdopen(create_file(out, mode), "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), mode)  # O_CREAT's mode is filtered by the umask
        return self.record(Artifact(self._clean(rel), kind, sha256, len(data), secret, signed))

    def write_doc(self, rel: str, key: str, render, *, kind: str) -> Artifact:
        """write(rel, render()) of a document whose fingerprint is `key`; when the previous build
        rendered this very path from a document with the same fingerprint, a hard link to that
        file instead, without rendering (its bytes are what render() would give)."""
        clean = self._clean(rel)
        self.docs[clean] = key
        same = self.reuse.get(clean)
        if same is not None and self.reuse_docs.get(clean) == key:
            try:
                return self.link(same[0], clean, kind=kind, secret=False, signed=None, sha256=same[1], size=same[2])
            except OSError:
                pass  # the previous build's copy is gone: render it again
        return self.write(clean, render(), kind=kind)

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

        A writer that had the bytes in hand (a worker process) passes their sha256 and size, so
        the file is not read again; its size on disk must agree."""
        clean = self._clean(rel)
        if self._spool is not None and clean in self._spool:
            if not secret or sha256 is None or size is None:
                raise BuildError(f"internal error: sealed {rel} registered without its digest or as public")
            return self.record(Artifact(clean, kind, sha256, size, True, signed, sealed=True))
        if secret and self._spool is not None:
            raise BuildError(f"internal error: secret {rel} was written in plain in a sealed build")
        out = os.path.join(self.root, clean)
        try:
            st = os.stat(out)
        except FileNotFoundError:
            raise BuildError(f"internal error: {rel} was registered but never written") from None
        if secret and st.st_mode & 0o777 != 0o600:
            os.chmod(out, 0o600)
        if sha256 is None or size is None:
            sha256, size = sha256_file(Path(out)), st.st_size
        elif size != st.st_size:
            raise BuildError(f"internal error: {rel} is {st.st_size} bytes on disk, its writer "
                             f"reported {size}")
        return self.record(Artifact(clean, kind, sha256, size, secret, signed))

    def link(self, src: str | Path, rel: str, *, kind: str, secret: bool, signed: str | None, sha256: str,
             size: int) -> Artifact:
        """Carry a file of another build forward: a hard link (a copy across file systems), its
        digest taken from that build's verified manifest. The link is never written through."""
        out = self.fspath(rel)
        try:
            os.link(src, out)
            if secret and stat.S_IMODE(os.stat(out).st_mode) != 0o600:  # opened up since: not shared
                os.unlink(out)
                raise OSError(errno.EPERM, "a secret file readable by others", out)
        except FileExistsError:
            raise BuildError(f"internal error: {rel} was staged twice") from None
        except OSError:
            with _open_regular(src) as inp, os.fdopen(create_file(out, 0o600 if secret else 0o644), "wb") as dst:
                shutil.copyfileobj(inp, dst, 1 << 20)
                os.fchmod(dst.fileno(), 0o600 if secret else 0o644)
        return self.record(Artifact(self._clean(rel), kind, sha256, size, secret, signed))

    def record(self, art: Artifact) -> Artifact:
        """Add an artifact whose file its writer has already checked (same path spelling)."""
        self._artifacts[art.path] = art
        self._sorted = None
        return art

    def adopt(self, artifacts) -> None:
        """Add the records of files a worker process wrote and registered in its own Staging."""
        for art in artifacts:
            self._artifacts[art.path] = art
        self._sorted = None

    def drain(self) -> list[Artifact]:
        """The records registered so far, forgotten here (a worker hands them to the parent)."""
        out = list(self._artifacts.values())
        self._artifacts.clear()
        self._sorted = None
        return out

    @property
    def artifacts(self) -> list[Artifact]:
        """Every artifact, by path (sorted once per change: a large build asks for them three times)."""
        if self._sorted is None:
            self._sorted = [self._artifacts[k] for k in sorted(self._artifacts)]
        return list(self._sorted)

    def sealed_summary(self) -> dict | None:
        """{"count", "recipients"} of a sealed build (for DEPLOY.md), else None."""
        if self.seal is None:
            return None
        return {"count": sum(1 for a in self._artifacts.values() if a.sealed), "recipients": list(self.seal.texts)}

    def digests(self) -> dict[str, str]:
        """path -> sha256 of every artifact so far (unsorted)."""
        return {path: art.sha256 for path, art in self._artifacts.items()}

    def finish(self, meta: dict) -> None:
        """Write secrets.tar.age (sealed builds), manifest.json and SHA256SUMS (sorted, so identical
        inputs give identical files; SHA256SUMS lists the files in the folder, so not sealed ones).

        manifest.json holds one artifact (and one device record) per line: large fleets have
        ~8 artifacts per Mac, and the line-per-entry layout is written by json's C encoder."""
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
        write_manifest(self.root / MANIFEST, meta, arts)
        lines = [f"{a.sha256}  {a.path}\n" for a in arts if not a.sealed]
        (self.root / SUMS).write_text("".join(lines))


def write_manifest(path: Path, meta: dict, artifacts: list[Artifact]) -> None:
    """JSON, keys sorted: scalars and small values as usual, lists of objects one per line (each
    artifact as json would write the dict of its fields, sorted)."""
    encode = json.JSONEncoder(sort_keys=True, ensure_ascii=True).encode
    text = json.encoder.encode_basestring_ascii
    rows = [f'{{"kind": {text(a.kind)}, "path": {text(a.path)}, "secret": {"true" if a.secret else "false"}, '
            f'"sha256": {text(a.sha256)}, "signed": {"null" if a.signed is None else text(a.signed)}, '
            f'"sealed": {"true" if a.sealed else "false"}, "size": {int(a.size)}}}' for a in artifacts]
    out = []  # pieces written as they are: a large fleet's manifest is ~20 MB, not copied to concatenate
    for key, value in sorted(dict(meta, artifacts=None).items()):
        out += [",\n  " if out else "{\n  ", encode(key), ": "]
        if key == "artifacts":
            out += ["[\n    ", ",\n    ".join(rows), "\n  ]"] if rows else ["[]"]
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out += ["[\n    ", ",\n    ".join(map(encode, value)), "\n  ]"]
        else:
            out.append(encode(value))
    out.append("\n}\n")
    with path.open("w") as fh:
        fh.writelines(out)


def _open_regular(path: str | Path):
    """A regular file, open for reading; anything else (a FIFO would block the build) is an OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file", str(path))
    return os.fdopen(fd, "rb")


def create_file(path: str | Path, mode: int) -> int:
    """A new file's descriptor, open for writing. A file already at `path` is unlinked first, never
    truncated: it may be a hard link into the previous build, which must stay intact."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
    try:
        return os.open(path, flags, mode)
    except FileExistsError:
        os.unlink(path)
        return os.open(path, flags, mode)


@dataclass(frozen=True)
class Leftover:
    """A folder an interrupted (SIGKILLed) build or unseal left behind, as it was removed."""

    name: str
    files: int
    secret_files: int  # mode 0600 files: what the build writes private keys as


def remove_stale(parent: Path) -> list[Leftover]:
    """In a dist folder: remove the partial folders whose process is gone (returns what was
    removed), and put back a build that a killed publish had moved aside but not yet replaced
    (so killing a build at any moment leaves the previous one). A missing folder is fine."""
    removed = []
    if not parent.is_dir():
        return removed
    for entry in sorted(parent.glob(REPLACED_PREFIX + "*")):
        name, _, pid = entry.name[len(REPLACED_PREFIX):].rpartition("-")
        if not pid.isdigit() or int(pid) == os.getpid() or alive(int(pid)):
            continue
        if name and not (parent / name).exists():
            entry.rename(parent / name)
        else:
            shutil.rmtree(entry, ignore_errors=True)  # a superseded build: the new one is in place
    for entry in orphans(sorted(parent.glob(PARTIAL_PREFIX + "*"))):
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
    _remove_stale_records(parent)
    return removed


def _remove_stale_records(parent: Path) -> None:
    """Records of published builds (builder/artifacts/verified.py) whose build is gone, and
    unfinished ones whose writer is gone: no secret in them, so not reported."""
    from .verified import RECORD_PREFIX

    for entry in sorted(parent.glob(RECORD_PREFIX + "*")):
        name = entry.name[len(RECORD_PREFIX):]
        if name.endswith(".tmp"):
            pid = name[:-len(".tmp")].rpartition(".")[2]
            if not pid.isdigit() or alive(int(pid)):
                continue
        elif (parent / name).is_dir():
            continue
        try:
            entry.unlink()
        except OSError:
            pass


def describe_removed(removed: list[Leftover]) -> list[str]:
    return [f"removed {r.name}, left by an interrupted build ({r.files} file(s), {r.secret_files} of them "
            f"secret)" for r in removed]


@contextmanager
def staged_output(final: Path, *, seal: Seal | None = None,
                  log: Callable[[str], None] = lambda _m: None) -> Iterator[Staging]:
    """Yield a Staging; on clean exit rename it to `final` (replacing an older build).

    The older build at `final` stays whole until the new one is complete: it is moved aside and
    the new one moved in with SIGINT/SIGTERM held back, and a SIGKILL between the two renames is
    repaired by the next build (remove_stale)."""
    parent = final.parent
    parent.mkdir(parents=True, exist_ok=True)
    for line in describe_removed(remove_stale(parent)):
        log(line)
    tmp = pid_folder(f"{PARTIAL_PREFIX}{final.name}-", parent)

    def _on_signal(signum, frame):  # turn SIGTERM into an exception so cleanup runs
        raise KeyboardInterrupt(f"signal {signum}")

    main = _main_thread()
    previous = signal.signal(signal.SIGTERM, _on_signal) if main else None
    staging = None
    try:
        staging = Staging(tmp, seal)
        yield staging
        staging.close()
        os.chmod(tmp, 0o755)
        _publish(tmp, final, block_signals=main, files=len(staging._artifacts))
    except BaseException:
        if staging is not None:
            staging.close()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _publish(tmp: Path, final: Path, *, block_signals: bool, files: int = 0) -> None:
    held = {signal.SIGINT, signal.SIGTERM}
    if block_signals:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
    old = None
    try:
        if final.exists():
            old = final.with_name(f"{REPLACED_PREFIX}{final.name}-{os.getpid()}")
            final.rename(old)
        tmp.rename(final)
    except BaseException:
        if old is not None and not final.exists():
            old.rename(final)
        raise
    finally:
        if block_signals:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, held)
    _after_publish(final, old, files)


BACKGROUND_REMOVAL = 5000  # files: a build this large is tidied up after in the background


def _after_publish(final: Path, old: Path | None, files: int) -> None:
    """Remove the superseded build (if any). A build of many files (a large fleet) is then also
    checked against its manifest and its files' stat recorded (builder/artifacts/verified.py: the
    next build's trust check hashes only what changed since), and a detached process does both,
    so the build returns as soon as the new one is published: unlinking ~8 files per Mac is seconds of file-system work and nothing
    waits for it. Whatever it leaves (it was killed) is removed by the next build's
    remove_stale(); a missing record only makes the next trust check hash every file."""
    from .verified import RACY_NS

    if files < BACKGROUND_REMOVAL or not hasattr(os, "fork"):  # hashing a small build costs less than a record
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return

    def tidy() -> None:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)  # first: unlinking changes the carried files' ctime
        from .previous import record_build

        time.sleep(RACY_NS / 1e9)  # so that the build's last writes are older than the record
        record_build(final)

    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked processes
        try:
            if os.fork() == 0:  # the grandchild, re-parented to init: nobody has to reap it
                os.setsid()
                _detach_files()
                tidy()
        finally:
            os._exit(0)
    os.waitpid(child, 0)


def _detach_files() -> None:
    """The detached process lets go of every file its build had open: standard output and error
    (a pipe to a CI runner, `| tee`, or a test) would otherwise stay open until it is done, and
    whoever reads them would wait for the tidy-up as if it were the build."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, max(null + 1, _open_max()))


def _open_max() -> int:
    try:
        return min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (ValueError, OSError):
        return 1024


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
