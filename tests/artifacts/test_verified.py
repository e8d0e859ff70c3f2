"""The record of a published build's files (builder/artifacts/verified.py): the trust check hashes
only what changed since it was taken, and a record that does not vouch for the build is ignored.

The builds here are folders made by the test (files, manifest.json, SHA256SUMS written with
hashlib and json), not by fleetpkg; the record is taken RACY_NS after the last write, as the
build's background process takes it."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from builder.artifacts import previous, verified
from builder.artifacts.changes import MANIFEST_FORMAT
from builder.artifacts.dist import MANIFEST, SUMS, remove_stale, sha256_of

NAMES = [f"profiles/devices/mac{i:03d}.mobileconfig" for i in range(40)]


def _make_build(root: Path) -> list[tuple[str, str, int]]:
    items = []
    for i, rel in enumerate(NAMES):
        data = f"<plist>{i:03d}</plist>\n".encode() * 20
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        items.append((rel, hashlib.sha256(data).hexdigest(), len(data)))
    jamf = root / "jamf" / NAMES[0]  # a hard-linked copy, as the jamf/ and intune/ folders hold
    jamf.parent.mkdir(parents=True)
    os.link(root / NAMES[0], jamf)
    items.append((f"jamf/{NAMES[0]}", items[0][1], items[0][2]))
    items.sort()
    artifacts = [{"path": rel, "sha256": digest, "size": size, "sealed": False} for rel, digest, size in items]
    (root / MANIFEST).write_text(json.dumps({"fleet": "demo", "format": MANIFEST_FORMAT, "artifacts": artifacts}))
    (root / SUMS).write_text("".join(f"{digest}  {rel}\n" for rel, digest, _size in items))
    return items


def _settle() -> None:
    time.sleep(verified.RACY_NS / 1e9 * 1.5)


def _write_record(root: Path, items) -> bool:
    return verified.write_record(root, lambda: [(rel, digest) for rel, digest, _size in items], sha256_of)


@pytest.fixture
def build(tmp_path) -> tuple[Path, list]:
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    _settle()
    assert previous.record_build(root)  # as the build's detached tidy-up records it
    return root, items


def _known(root: Path, items) -> verified.Known | None:
    return verified.load_record(root, [rel for rel, _d, _s in items])


def _hashed(monkeypatch) -> list[str]:
    seen: list[str] = []
    sha256 = previous._sha256
    monkeypatch.setattr(previous, "_sha256", lambda path: seen.append(path) or sha256(path))
    return seen


def test_an_untouched_build_is_trusted_without_hashing(build, monkeypatch):
    root, items = build
    known = _known(root, items)
    assert known is not None
    seen = _hashed(monkeypatch)
    assert previous.check_files(root, items, known) == []
    assert seen == []
    assert previous.check_files(root, items) == [] and len(seen) == len(NAMES)  # without it: every inode


@pytest.mark.parametrize("how", ["same-size", "same-size-mtime-restored", "replaced", "renamed-over"])
def test_a_file_changed_after_the_record_is_hashed_and_caught(build, monkeypatch, how):
    root, items = build
    path = root / NAMES[7]
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[3] ^= 1
    if how.startswith("same-size"):
        with open(path, "r+b") as fh:  # written through: same inode, same size
            fh.write(bytes(data))
        if how.endswith("mtime-restored"):
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime cannot be set back
    elif how == "replaced":
        path.unlink()
        path.write_bytes(bytes(data))
    else:
        other = path.with_name("new")
        other.write_bytes(bytes(data))
        os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
        os.replace(other, path)
    known = _known(root, items)
    assert known is not None  # the manifest did not change: the record still speaks for the others
    seen = _hashed(monkeypatch)
    assert previous.check_files(root, items, known) == [f"{NAMES[7]} does not match its manifest.json digest"]
    assert seen == [f"{root}/{NAMES[7]}"]


@pytest.mark.parametrize("change", ["manifest", "sums", "record-truncated", "record-garbage", "record-other-build",
                                    "paths"])
def test_a_record_that_does_not_vouch_for_the_build_is_not_used(build, change):
    root, items = build
    record = verified.record_path(root)
    paths = [rel for rel, _d, _s in items]
    if change == "manifest":
        (root / MANIFEST).write_text((root / MANIFEST).read_text())  # rewritten, same bytes
    elif change == "sums":
        os.utime(root / SUMS)
    elif change == "record-truncated":
        record.write_bytes(record.read_bytes()[:-5])
    elif change == "record-garbage":
        record.write_bytes(os.urandom(300))
    elif change == "record-other-build":
        other = root.with_name("demo-5.1.0.12-2")
        os.rename(root, other)
        os.rename(record, verified.record_path(other))
        root = other
    else:
        paths = paths[1:] + paths[:1]
    assert verified.load_record(root, paths) is None


def test_files_written_just_before_the_record_are_left_to_hashing(tmp_path, monkeypatch):
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    _settle()
    (root / NAMES[3]).write_bytes((root / NAMES[3]).read_bytes())  # within RACY_NS of the record
    assert _write_record(root, items)
    known = _known(root, items)
    seen = _hashed(monkeypatch)
    assert previous.check_files(root, items, known) == [] and seen == [f"{root}/{NAMES[3]}"]


def test_no_record_vouches_for_a_manifest_written_just_before_it(tmp_path):
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    assert not _write_record(root, items)
    assert not verified.record_path(root).exists()


def test_records_of_builds_that_are_gone_are_removed(build):
    root, _items = build
    parent = root.parent
    orphan = parent / f"{verified.RECORD_PREFIX}demo-5.1.0.12-0"
    orphan.write_bytes(b"{}\n")
    unfinished = parent / f"{verified.RECORD_PREFIX}demo-5.1.0.12-1.999999999.tmp"  # no such process
    unfinished.write_bytes(b"")
    mine = parent / f"{verified.RECORD_PREFIX}demo-5.1.0.12-1.{os.getpid()}.tmp"  # being written
    mine.write_bytes(b"")
    assert remove_stale(parent) == []  # nothing secret to report
    assert sorted(p.name for p in parent.iterdir()) == sorted([root.name, verified.record_path(root).name, mine.name])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the detached tidy-up needs fork")
def test_a_large_build_is_recorded_by_a_detached_process_after_its_superseded_build_is_gone(tmp_path):
    from builder.artifacts import dist

    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    old = tmp_path / f"{dist.REPLACED_PREFIX}{root.name}-{os.getpid()}"
    _make_build(old)
    os.link(root / NAMES[1], old / "shared")  # unlinking it changes the ctime of root's file too
    dist._after_publish(root, old, dist.BACKGROUND_REMOVAL)
    deadline = time.monotonic() + 20
    while (old.exists() or not verified.record_path(root).exists()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old.exists()
    known = _known(root, items)
    assert known is not None
    assert all(known.matches(i, os.stat(root / rel)) for i, (rel, _d, _s) in enumerate(items))


_SLOW_TIDY = """
import shutil, sys, time
from pathlib import Path
from builder.artifacts import dist
rmtree = shutil.rmtree
shutil.rmtree = lambda path, *a, **k: (time.sleep(4), rmtree(path, *a, **k))
dist._after_publish(Path(sys.argv[1]), Path(sys.argv[2]), dist.BACKGROUND_REMOVAL)
print("published", flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the detached tidy-up needs fork")
def test_the_detached_tidy_up_does_not_hold_the_builds_output_open(tmp_path):
    """Whoever reads the build's output (a CI runner, `| tee`) sees it end when the build ends,
    not when the background removal of its superseded build does."""
    import subprocess
    import sys

    from tests.conftest import REPO

    root, old = tmp_path / "demo-1", tmp_path / "old"
    root.mkdir()
    old.mkdir()
    (old / "file").write_bytes(b"x")
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-c", _SLOW_TIDY, str(root), str(old)], capture_output=True,
                            text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert result.returncode == 0 and result.stdout == "published\n", result.stderr
    assert time.monotonic() - start < 3.5  # the removal sleeps 4 s first, in the detached process
    deadline = time.monotonic() + 30
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not old.exists()


def test_a_file_altered_before_the_record_is_taken_is_not_vouched_for(tmp_path, monkeypatch):
    """The record is taken after the build, by hashing: a file changed between publishing and the
    record (or one that never matched its manifest) is left for the trust check to hash."""
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    path = root / NAMES[5]
    data = bytearray(path.read_bytes())
    data[0] ^= 1
    path.write_bytes(bytes(data))
    _settle()
    assert previous.record_build(root)
    known = _known(root, items)
    position = [rel for rel, _d, _s in items].index(NAMES[5])
    assert known is not None and not known.matches(position, os.stat(path))
    seen = _hashed(monkeypatch)
    assert previous.check_files(root, items, known) == [f"{NAMES[5]} does not match its manifest.json digest"]
    assert seen == [f"{root}/{NAMES[5]}"]


@pytest.mark.parametrize("what", ["format", "sums"])
def test_a_build_that_does_not_hold_together_is_not_recorded(tmp_path, what):
    root = tmp_path / "demo-5.1.0.12-1"
    _make_build(root)
    if what == "format":
        doc = json.loads((root / MANIFEST).read_text())
        doc["format"] = MANIFEST_FORMAT - 1
        (root / MANIFEST).write_text(json.dumps(doc))
    else:
        (root / SUMS).write_text((root / SUMS).read_text().replace(NAMES[2], NAMES[2] + ".x"))
    _settle()
    assert not previous.record_build(root) and not verified.record_path(root).exists()


def test_no_record_when_the_manifest_changes_while_it_is_taken(tmp_path):
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    _settle()

    def listing():
        os.utime(root / MANIFEST)  # rewritten meanwhile
        return [(rel, digest) for rel, digest, _size in items]
    assert not verified.write_record(root, listing, sha256_of)
    assert not verified.record_path(root).exists()


@pytest.mark.parametrize("how", ["beside", "before"])
def test_a_trust_check_worker_killed_stops_the_build_with_one_line(tmp_path, monkeypatch, how):
    """The trust check's worker processes are watched as the device workers are: one killed gives
    the build's one-line error, not a hang or a traceback."""
    import multiprocessing
    import signal
    import threading

    from builder.artifacts import pipeline
    from builder.errors import BuildError

    if multiprocessing.get_start_method() != "fork":
        pytest.skip("the slowed check must be inherited by the workers")
    root = tmp_path / "demo-5.1.0.12-1"
    items = _make_build(root)
    sha256 = previous._sha256
    monkeypatch.setattr(previous, "_sha256", lambda path: (time.sleep(0.1), sha256(path))[1])

    def kill_a_worker(pool_of) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            procs = [p for p in (getattr(pool_of(), "_processes", None) or {}).values() if p.pid]
            if procs:
                time.sleep(0.2)
                os.kill(procs[0].pid, signal.SIGKILL)
                return
            time.sleep(0.01)

    start = time.monotonic()
    with pytest.raises(BuildError, match="a worker process died"):
        if how == "beside":
            late = pipeline._LateCheck(root, items, 3)
            kill_a_worker(lambda: late._pool)
            late.result()
        else:
            created = []
            real = pipeline.ProcessPoolExecutor

            def recording(*args, **kwargs):
                created.append(real(*args, **kwargs))
                return created[-1]
            monkeypatch.setattr(pipeline, "ProcessPoolExecutor", recording)
            monkeypatch.setattr(pipeline, "POOLED_CHECK_FILES", 1)
            threading.Thread(target=kill_a_worker, args=(lambda: created[0] if created else None,), daemon=True).start()
            pipeline.check_previous_files(root, items, 2)
    assert time.monotonic() - start < 30
