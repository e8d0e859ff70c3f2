"""What a published build's files looked like on disk when they were known to be right: the trust
check's shortcut (git's index does the same for its work tree).

A rebuild must know that the previous build's files are still what its manifest says before it
carries any of them forward. Hashing them all (~390 MB for 10,000 Macs) costs more than the rest of
an unchanged rebuild, so a large build (builder/artifacts/dist.py, BACKGROUND_REMOVAL files or
more; a small one is hashed faster than recorded) is checked once more after it is published, by
a detached process nobody waits for: every listed file hashed against its manifest (which must
agree with SHA256SUMS) between two stats that must agree, and the inode, mtime and ctime of each
file that matched recorded beside its folder (with those of manifest.json and SHA256SUMS, which
must not change meanwhile). A file whose stat still matches its record has not been written,
replaced, renamed over or touched since it was hashed (any of those changes its ctime, which no
user can set back), so the trust check hashes only the files that do not match; a record that is
missing, damaged, of another build, or written before its manifest changed is not used at all,
and every file is hashed as before.

The record is not part of the build (it would change its bytes from run to run): a hidden file
`.fleetpkg-verified-<build>` in the output folder, no secret in it (inode numbers and times), removed
with its build by `fleetpkg clean` and the next build's clean-up. A file changed within RACY_NS of
the record being taken is not recorded (timestamps come from a clock that ticks coarsely).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from array import array
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from .dist import MANIFEST, SUMS

RECORD_PREFIX = ".fleetpkg-verified-"
RECORD_FORMAT = 1
RACY_NS = 50_000_000  # a change this close to the record's time may share its timestamp tick
UNKNOWN = -1


class Known(NamedTuple):
    """The record's view of each listed file, by the item's position: (inode, mtime_ns, ctime_ns)
    at 3*position.., UNKNOWN where the file was not recorded; all on device `dev`."""

    dev: int
    stats: array

    def matches(self, position: int, st: os.stat_result) -> bool:
        i = 3 * position
        s = self.stats
        return (s[i] == st.st_ino and s[i + 1] == st.st_mtime_ns and s[i + 2] == st.st_ctime_ns
                and st.st_dev == self.dev)


def record_path(build: Path) -> Path:
    return build.parent / f"{RECORD_PREFIX}{build.name}"


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _heads(build: Path) -> list[os.stat_result]:
    """The stat of the build's manifest.json and SHA256SUMS, which the record vouches for."""
    return [os.stat(os.path.join(build, name)) for name in (MANIFEST, SUMS)]


def _paths_digest(paths: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(paths).encode("utf-8", "surrogateescape")).hexdigest()


def write_record(build: Path, read_listing: Callable[[], Sequence[tuple[str, str]] | None],
                 hasher: Callable[[str], str]) -> bool:
    """Record the stat of the build's listed files that hold what its manifest says, hashing each
    (one inode once) between two stats that must agree, and of its manifest and sums files, which
    must not change while the record is taken. `read_listing` reads the manifest's (path, sha256)
    pairs in its order (None: not a build to record). False, and no record, when that cannot be
    done; a file that does not match, or changed within RACY_NS of the start, is left unrecorded
    (the next trust check hashes it)."""
    started = time.time_ns()
    limit = started - RACY_NS
    base = os.fspath(build)
    try:
        heads = _heads(build)
        if any(st.st_ctime_ns >= limit for st in heads):
            return False
        listing = read_listing()
        if listing is None:
            return False
        paths = [rel for rel, _digest in listing]
        stats = array("q", [UNKNOWN]) * (3 * len(paths))
        hashed: dict[tuple[int, int], str] = {}
        for position, (rel, digest) in enumerate(listing):
            i = 3 * position
            path = f"{base}/{rel}"
            try:
                before = os.stat(path)
                if before.st_ctime_ns >= limit or before.st_dev != heads[0].st_dev:
                    continue
                key = (before.st_dev, before.st_ino)
                if key not in hashed:
                    hashed[key] = hasher(path)
                if hashed[key] != digest or _stat_key(os.stat(path)) != _stat_key(before):
                    continue
            except OSError:
                continue
            stats[i], stats[i + 1], stats[i + 2] = before.st_ino, before.st_mtime_ns, before.st_ctime_ns
        if list(map(_stat_key, _heads(build))) != list(map(_stat_key, heads)):
            return False
        header = {"format": RECORD_FORMAT, "build": build.name, "dev": heads[0].st_dev, "count": len(paths),
                  "paths": _paths_digest(paths), "manifest": _stat_key(heads[0]), "sums": _stat_key(heads[1]),
                  "recorded_ns": started}
        final = record_path(build)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(json.dumps(header, sort_keys=True).encode() + b"\n")
            stats.tofile(fh)
        os.replace(tmp, final)
        return True
    except OSError:
        return False


def load_record(build: Path, paths: Sequence[str]) -> Known | None:
    """The record of `build` when it vouches for these very files (its manifest and sums files
    unchanged since it was taken, the same list of paths); None otherwise."""
    try:
        with open(record_path(build), "rb") as fh:
            header = json.loads(fh.readline())
            stats = array("q")
            stats.frombytes(fh.read())
        heads = _heads(build)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    try:
        limit = header["recorded_ns"] - RACY_NS
        fresh = all(_stat_key(st) == header[key] and st.st_ctime_ns < limit
                    for st, key in zip(heads, ("manifest", "sums")))
        usable = (header["format"] == RECORD_FORMAT and header["build"] == build.name and fresh
                  and header["count"] == len(paths) and len(stats) == 3 * len(paths)
                  and header["dev"] == heads[0].st_dev and header["paths"] == _paths_digest(paths))
    except (KeyError, TypeError):
        return None
    return Known(header["dev"], stats) if usable else None
