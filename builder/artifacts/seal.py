"""Sealed builds: every secret artifact in one age-encrypted tar, `secrets.tar.age`, and back.

Writing (the build's parent process): workers hand the secret bytes back instead of writing
them; the parent keeps them in a SecretSpool, an unnamed temporary file (O_TMPFILE: it vanishes
with the process, even after SIGKILL) whose contents are AES-GCM-encrypted under a key that
exists only in this process's memory. So memory stays flat for any fleet size and no plaintext
key ever reaches the disk. At the end, write_archive streams a sorted, deterministic tar (stdlib
tarfile: mode 0600, uid/gid 0, mtime SOURCE_DATE_EPOCH) through age to the recipients. A copy
of a secret file (Jamf's or Intune's device profile, Munki's identity package) is a tar hard
link to the first name in sort order, as it is a hard link in an unsealed dist.

Reading (`fleetpkg unseal`): age decrypts in a thread into a pipe, the tar is read from the
pipe member by member into a private folder beside the destination; each member must be a
plain file or a hard link to an earlier member, listed as sealed in manifest.json, with the
manifest's size and sha256. Only when every sealed artifact arrived intact are the files
moved into place; any failure removes the private folder, so nothing is written.

Reading for a rebuild (`build --previous-identity`, builder/artifacts/previous.py): the same
decryption and the same checks, but spool_sealed keeps the members a rebuild may carry in a
shared SecretSpool (still ciphertext on disk) that the build's workers read through a SpoolView;
no plaintext is written anywhere.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import BuildError, FormatError

SEALED_NAME = "secrets.tar.age"
SEALED_KIND = "sealed-secrets"
MEMBER_MODE = 0o600
COPY_CHUNK = 1 << 16


class SecretSpool:
    """Secret files held by the parent until secrets.tar.age is written: encrypted on disk under
    an in-memory key, in an unnamed file; `links` are copies (name -> name of the original).

    shared=True (a rebuild's copy of the previous build's sealed secrets, which worker processes
    read through view()): a named file, mode 0600, in `folder` (the build's private staging
    folder, which a killed build's successor removes), removed by close(); still nothing but
    ciphertext, under a key no file holds."""

    def __init__(self, folder: Path, *, shared: bool = False):
        self._name = None
        if shared:
            fd, self._name = tempfile.mkstemp(prefix="spool-", dir=folder)
            self._file = os.fdopen(fd, "w+b")
        else:
            self._file = tempfile.TemporaryFile(dir=folder)  # O_TMPFILE where the kernel has it
        self._key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(self._key)
        self._end = 0
        self._blobs: dict[str, tuple[int, int, int]] = {}  # rel -> (offset, length, nonce number)
        self.links: dict[str, str] = {}

    def add(self, rel: str, data: bytes) -> None:
        if rel in self._blobs or rel in self.links:
            raise BuildError(f"internal error: secret {rel} is sealed twice")
        number = len(self._blobs)
        sealed = self._aead.encrypt(number.to_bytes(12, "big"), data, rel.encode())
        written = os.pwrite(self._file.fileno(), sealed, self._end)
        if written != len(sealed):
            raise BuildError("cannot write the build's sealed spool (disk full?)")
        self._blobs[rel] = (self._end, len(sealed), number)
        self._end += len(sealed)

    def link(self, rel: str, original: str) -> None:
        if rel in self._blobs or rel in self.links:
            raise BuildError(f"internal error: secret {rel} is sealed twice")
        if original not in self._blobs and original not in self.links:
            raise BuildError(f"internal error: {rel} copies {original}, which is not sealed")
        self.links[rel] = original

    def __contains__(self, rel: str) -> bool:
        return rel in self._blobs or rel in self.links

    def __len__(self) -> int:
        return len(self._blobs) + len(self.links)

    def names(self) -> list[str]:
        return sorted([*self._blobs, *self.links])

    def origin(self, rel: str) -> str:
        while rel in self.links:
            rel = self.links[rel]
        return rel

    def read(self, rel: str) -> bytes:
        return _open_blob(self._aead, self._file.fileno(), rel, self._blobs[rel])

    def view(self) -> "SpoolView":
        """What another process needs to read a shared spool (the key included: it travels only
        through the worker pool's pipe, like the profile signer's key)."""
        if self._name is None:
            raise BuildError("internal error: only a shared spool can be read by other processes")
        return SpoolView(self._name, self._key, dict(self._blobs), dict(self.links))

    def close(self) -> None:
        self._file.close()
        if self._name is not None:
            try:
                os.unlink(self._name)
            except FileNotFoundError:
                pass


def _open_blob(aead: AESGCM, fd: int, rel: str, entry: tuple[int, int, int]) -> bytes:
    offset, length, number = entry
    sealed = os.pread(fd, length, offset)
    if len(sealed) != length:
        raise BuildError(f"internal error: the spool holding {rel} was cut short")
    return aead.decrypt(number.to_bytes(12, "big"), sealed, rel.encode())


class SpoolView:
    """A shared SecretSpool as a worker process reads it: picklable, opened on first read. Its
    repr names neither the key nor the file."""

    def __init__(self, path: str, key: bytes, blobs: dict, links: dict):
        self._path, self._key, self._blobs, self._links = path, key, blobs, links
        self._fd: int | None = None
        self._aead: AESGCM | None = None

    def __getstate__(self) -> dict:
        return {"path": self._path, "key": self._key, "blobs": self._blobs, "links": self._links}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["key"], state["blobs"], state["links"])

    def __repr__(self) -> str:
        return f"SpoolView({len(self._blobs)} files, {len(self._links)} copies)"

    def __contains__(self, rel: str) -> bool:
        return rel in self._blobs or rel in self._links

    def read(self, rel: str) -> bytes:
        """The plain bytes of `rel` (a copy reads its original); KeyError when it is not held."""
        while rel in self._links:
            rel = self._links[rel]
        entry = self._blobs[rel]
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._aead = AESGCM(self._key)
        return _open_blob(self._aead, self._fd, rel, entry)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def tar_plan(spool: SecretSpool) -> Iterator[tuple[str, str | None, str]]:
    """(name, hard-link target or None, origin) in sorted name order: each group of copies is
    stored once, under its first name, and linked from the others."""
    first: dict[str, str] = {}
    for name in spool.names():
        origin = spool.origin(name)
        if origin in first:
            yield name, first[origin], origin
        else:
            first[origin] = name
            yield name, None, origin


class _TarSource(io.RawIOBase):
    """The tar's bytes, made one member at a time as age reads them (no thread, no whole copy)."""

    def __init__(self, spool: SecretSpool, mtime: int):
        self._spool = spool
        self._mtime = mtime
        self._plan = tar_plan(spool)
        self._pending = bytearray()
        self._tar = tarfile.open(fileobj=self, mode="w|", format=tarfile.PAX_FORMAT)
        self._done = False
        self.error: BaseException | None = None

    # tarfile writes here
    def write(self, data) -> int:
        self._pending += data
        return len(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            while len(self._pending) < len(buffer) and not self._done:
                self._advance()
            n = min(len(buffer), len(self._pending))
            buffer[:n] = self._pending[:n]
            del self._pending[:n]
            return n
        except BaseException as exc:  # pyrage reports only "read failed": keep the real cause
            self.error = exc
            raise

    def _advance(self) -> None:
        step = next(self._plan, None)
        if step is None:
            self._tar.close()
            self._done = True
            return
        name, link, origin = step
        info = tarfile.TarInfo(name)
        info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = MEMBER_MODE, self._mtime, 0, 0, "", ""
        if link is not None:
            info.type, info.linkname = tarfile.LNKTYPE, link
            self._tar.addfile(info)
        else:
            data = self._spool.read(origin)
            info.size = len(data)
            self._tar.addfile(info, io.BytesIO(data))


def write_archive(dest: Path, spool: SecretSpool, recipients: Sequence, mtime: int) -> tuple[str, int]:
    """Write secrets.tar.age; returns its (sha256, size)."""
    from ..formats.age import encrypt_stream

    source = _TarSource(spool, mtime)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "wb") as raw:
        out = _HashingWriter(raw)
        try:
            encrypt_stream(source, out, recipients)
        except FormatError:
            if source.error is not None:
                raise source.error from None
            raise
    os.chmod(dest, 0o644)  # encrypted: as public as the rest of the dist
    return out.digest.hexdigest(), out.size


class _HashingWriter(io.RawIOBase):
    def __init__(self, raw):
        self._raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self._raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)


# -- unsealing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Unsealed:
    dest: Path
    files: tuple[str, ...]  # dist-relative paths restored, sorted


def sealed_artifacts(manifest: dict, where: str) -> dict[str, dict]:
    arts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(arts, list):
        raise BuildError("manifest.json has no artifact list", where=where)
    return {a["path"]: a for a in arts if isinstance(a, dict) and a.get("sealed") and isinstance(a.get("path"), str)}


def unseal(dist: Path, identity_files: Sequence[Path], out: Path | None = None) -> Unsealed:
    """Restore a sealed build's secret files into `out` (default: the build folder itself)."""
    from ..formats.age import load_identity_files
    from ..scratch import pid_folder
    from .dist import PARTIAL_PREFIX, read_manifest, sha256_file

    dist = Path(dist)
    if not dist.is_dir():
        raise BuildError("not a folder", where=str(dist))
    manifest = read_manifest(dist)
    sealed = sealed_artifacts(manifest, str(dist / "manifest.json"))
    archive = dist / SEALED_NAME
    if not sealed:
        raise BuildError("this build is not sealed: manifest.json lists no sealed artifact", where=str(dist))
    if not archive.is_file():
        raise BuildError(f"{SEALED_NAME} is missing", where=str(dist))
    listed = next((a for a in manifest["artifacts"] if isinstance(a, dict) and a.get("path") == SEALED_NAME), None)
    if listed is not None and listed.get("sha256") != sha256_file(archive):
        raise BuildError(f"{SEALED_NAME} is damaged: its sha256 differs from manifest.json", where=str(dist),
                         hint="copy it again from where the build was made")
    identities = load_identity_files(identity_files)
    if not identities:
        raise BuildError("no identity given", hint="pass --identity KEYFILE")

    dest = Path(out) if out is not None else dist
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    _check_destinations(dest, sealed)
    work = pid_folder(f"{PARTIAL_PREFIX}unseal-{dest.name}-", dest.parent)
    try:
        restored = _extract(archive, identities, work, sealed, str(archive))
        missing = lacking(sealed, restored)
        if missing:
            raise BuildError(missing, where=str(dist))
        for rel in sorted(restored):
            target = dest.joinpath(*PurePosixPath(rel).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(work.joinpath(*PurePosixPath(rel).parts), target)
    except BaseException:
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Unsealed(dest, tuple(sorted(restored)))


def _check_destinations(dest: Path, sealed: dict) -> None:
    """Refuse before anything is written when a restored file would land outside `dest` (a symbolic
    link on its way) or on a folder."""
    for rel in sealed:
        parts = _member_parts(rel)
        if parts is None:
            raise BuildError(f"manifest.json names an unsafe sealed path {rel!r}", where=str(dest))
        here = dest
        for i, part in enumerate(parts):
            here = here / part
            if here.is_symlink():
                raise BuildError(f"{rel}: {here} is a symbolic link; refusing to write through it", where=str(dest))
            if i < len(parts) - 1 and here.exists() and not here.is_dir():
                raise BuildError(f"{rel}: {here} is not a folder", where=str(dest))
        if here.is_dir():
            raise BuildError(f"{rel}: a folder is in the way", where=str(dest))


def _member_parts(name: str) -> tuple[str, ...] | None:
    """The parts of a safe relative member name, or None (absolute, '..', '.', empty, backslash)."""
    if not name or name.startswith("/") or "\\" in name or "\0" in name:
        return None
    parts = tuple(name.split("/"))
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


class _Escape(BuildError):
    """A member that must not be written: raised before any byte of it is."""


def lacking(sealed: dict[str, dict], found) -> str | None:
    """What is wrong when an archive did not hold every sealed artifact the manifest lists."""
    missing = sorted(set(sealed) - set(found))
    if not missing:
        return None
    return f"{SEALED_NAME} lacks {len(missing)} sealed artifact(s) manifest.json lists, e.g. {missing[0]}"


def _each_member(archive: Path, identities, where: str, visit) -> None:
    """Decrypt `archive` (age, in a thread, into a pipe) and hand each tar member to
    visit(tar, member) as it arrives: the plaintext exists only in the pipe and in memory."""
    from ..formats.age import decrypt_stream

    read_fd, write_fd = os.pipe()
    failure: list[BaseException] = []

    def pump() -> None:
        try:
            with open(archive, "rb") as src, os.fdopen(write_fd, "wb") as sink:
                decrypt_stream(src, sink, identities, where)
        except BaseException as exc:  # reported by the main thread
            failure.append(exc)

    thread = threading.Thread(target=pump, name="fleetpkg-unseal", daemon=True)
    thread.start()
    try:
        with os.fdopen(read_fd, "rb") as pipe:
            try:
                with tarfile.open(fileobj=pipe, mode="r|") as tar:
                    for member in tar:
                        visit(tar, member)
            except tarfile.TarError as exc:
                thread.join()
                if failure:
                    raise failure[0] from None
                raise BuildError(f"is damaged: not a readable tar inside ({exc})", where=where) from None
    finally:
        thread.join()
    if failure:
        raise failure[0]


def _extract(archive: Path, identities, work: Path, sealed: dict[str, dict], where: str) -> list[str]:
    restored: dict[str, tuple[str, int]] = {}  # rel -> (sha256, size)
    try:
        _each_member(archive, identities, where, lambda tar, member: _restore(tar, member, work, sealed, restored))
    except _Escape as exc:
        raise _Escape(f"{exc.message}; nothing was written", where=exc.where) from None
    return list(restored)


def _listed(member, sealed: dict[str, dict], seen: dict) -> dict:
    """manifest.json's record of a member about to be read, after the checks that need none of its
    bytes: a safe name, not seen before, listed as sealed, a hard link to an earlier member or a
    plain file of the listed size."""
    name = member.name
    if _member_parts(name) is None:
        raise _Escape(f"holds a member that would escape the folder: {name!r}", where=SEALED_NAME)
    if name in seen:
        raise _Escape(f"holds {name} twice", where=SEALED_NAME)
    art = sealed.get(name)
    if art is None:
        raise _Escape(f"holds {name}, which manifest.json does not list as sealed", where=SEALED_NAME)
    if member.islnk():
        if member.linkname not in seen:
            raise _Escape(f"{name} links to {member.linkname!r}, which is not an earlier member", where=SEALED_NAME)
    elif not member.isreg():
        raise _Escape(f"{name} is not a plain file (tar type {member.type!r})", where=SEALED_NAME)
    elif member.size != art.get("size"):
        raise _Escape(f"{name} is {member.size} bytes, manifest.json says {art.get('size')}", where=SEALED_NAME)
    return art


def _matches(name: str, art: dict, digest: str, size: int) -> None:
    if digest != art.get("sha256") or size != art.get("size"):
        raise _Escape(f"{name} does not match manifest.json (sha256 or size)", where=SEALED_NAME)


def _restore(tar, member, work: Path, sealed: dict[str, dict], restored: dict) -> None:
    name = member.name
    art = _listed(member, sealed, restored)
    path = work.joinpath(*_member_parts(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.islnk():
        os.link(work.joinpath(*PurePosixPath(member.linkname).parts), path)
        digest, size = restored[member.linkname]
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, MEMBER_MODE)
        hasher, size = hashlib.sha256(), 0
        with os.fdopen(fd, "wb") as fh, tar.extractfile(member) as src:
            while chunk := src.read(COPY_CHUNK):
                fh.write(chunk)
                hasher.update(chunk)
                size += len(chunk)
        digest = hasher.hexdigest()
    _matches(name, art, digest, size)
    os.chmod(path, MEMBER_MODE)
    restored[name] = (digest, size)


def spool_sealed(archive: Path, identities, sealed: dict[str, dict], spool: SecretSpool, keep: set[str],
                 where: str) -> dict[str, tuple[str, int]]:
    """Read a sealed build's secrets.tar.age into `spool` without writing any plaintext: each
    member is checked as unseal checks it (the manifest's sealed artifacts, `sealed`); only the
    plain files whose sha256 is in `keep` are held (one at a time in memory), and hard links to
    them kept as the spool's links. Returns every member's (sha256, size); raises on the first
    problem (NotARecipient when no identity opens it), and the caller discards the spool."""
    found: dict[str, tuple[str, int]] = {}

    def visit(tar, member) -> None:
        name = member.name
        art = _listed(member, sealed, found)
        if member.islnk():
            digest, size = found[member.linkname]
            _matches(name, art, digest, size)
            if member.linkname in spool:
                spool.link(name, member.linkname)
        else:
            with tar.extractfile(member) as src:
                data = src.read(member.size)
            digest, size = hashlib.sha256(data).hexdigest(), len(data)
            _matches(name, art, digest, size)
            if digest in keep:
                spool.add(name, data)
        found[name] = (digest, size)

    _each_member(archive, identities, where, visit)
    return found


__all__ = ["SEALED_KIND", "SEALED_NAME", "SecretSpool", "SpoolView", "Unsealed", "lacking", "sealed_artifacts",
           "spool_sealed", "tar_plan", "unseal", "write_archive"]
