"""Publishing: all-or-nothing output, secrets mode 0600, manifest and SHA256SUMS checked by sha256sum."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from builder.artifacts.dist import PARTIAL_PREFIX, staged_output
from tests.conftest import REPO, require_tool


def test_publish_writes_manifest_and_sums(tmp_path):
    final = tmp_path / "dist" / "demo-1.0-1"
    with staged_output(final) as stage:
        stage.write("b.txt", b"bee\n", kind="doc")
        stage.write("sub/key.mobileconfig", b"secret\n", kind="device-profile", secret=True)
        stage.finish({"fleet": "demo"})
    assert sorted(os.listdir(final.parent)) == ["demo-1.0-1"]
    assert oct((final / "sub" / "key.mobileconfig").stat().st_mode & 0o777) == "0o600"
    manifest = json.loads((final / "manifest.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == ["b.txt", "sub/key.mobileconfig"]
    assert [a["secret"] for a in manifest["artifacts"]] == [False, True]
    sha256sum = require_tool("sha256sum")
    result = subprocess.run([sha256sum, "-c", "SHA256SUMS"], cwd=final, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    (final / "b.txt").write_text("changed\n")
    assert subprocess.run([sha256sum, "-c", "SHA256SUMS"], cwd=final, capture_output=True).returncode != 0


def test_register_takes_the_writers_digest_without_reading(tmp_path, monkeypatch):
    """A worker that wrote the bytes reports their sha256 and size; the parent then reads
    nothing, yet a size that disagrees with the disk, or a missing file, is refused."""
    import hashlib

    from builder.artifacts import dist
    from builder.errors import BuildError

    final = tmp_path / "dist" / "demo-1.0-1"
    data = b"<plist>secret</plist>\n"
    digest = hashlib.sha256(data).hexdigest()
    with staged_output(final) as stage:
        out = stage.path("profiles/devices/mac.mobileconfig")
        out.write_bytes(data)
        out.chmod(0o644)
        monkeypatch.setattr(dist, "sha256_file", None)  # reading a file to hash it now fails
        art = stage.register("profiles/devices/mac.mobileconfig", kind="device-profile", secret=True,
                             sha256=digest, size=len(data))
        assert (art.sha256, art.size, art.secret) == (digest, len(data), True)
        assert out.stat().st_mode & 0o777 == 0o600  # secrets are 0600 whoever wrote them
        with pytest.raises(BuildError, match="reported 5"):
            stage.register("profiles/devices/mac.mobileconfig", kind="device-profile", sha256=digest, size=5)
        with pytest.raises(BuildError, match="never written"):
            stage.register("profiles/devices/other.mobileconfig", kind="device-profile", sha256=digest,
                           size=len(data))
        monkeypatch.undo()
        stage.finish({"fleet": "demo"})
    sums = subprocess.run([require_tool("sha256sum"), "-c", "SHA256SUMS"], cwd=final, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr


def test_failure_leaves_nothing(tmp_path):
    final = tmp_path / "dist" / "demo-1.0-1"
    with pytest.raises(RuntimeError):
        with staged_output(final) as stage:
            stage.write("a.txt", b"a", kind="doc")
            raise RuntimeError("boom")
    assert os.listdir(final.parent) == []


def test_failure_keeps_previous_build(tmp_path):
    final = tmp_path / "dist" / "x"
    with staged_output(final) as stage:
        stage.write("a.txt", b"old", kind="doc")
        stage.finish({})
    with pytest.raises(RuntimeError):
        with staged_output(final) as stage:
            stage.write("a.txt", b"new", kind="doc")
            raise RuntimeError("boom")
    assert (final / "a.txt").read_bytes() == b"old"
    assert sorted(os.listdir(final.parent)) == ["x"]


def test_rejects_escaping_paths(tmp_path):
    with pytest.raises(Exception, match="relative"):
        with staged_output(tmp_path / "x") as stage:
            stage.write("../evil", b"", kind="doc")
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_killed_build_leaves_no_entry(tmp_path, sig):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from builder.artifacts.dist import staged_output
        with staged_output(Path({str(tmp_path / 'dist' / 'x')!r})) as stage:
            stage.write("a.txt", b"a" * 1000, kind="doc")
            print("staged", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    assert any(n.startswith(PARTIAL_PREFIX) for n in os.listdir(tmp_path / "dist"))
    proc.send_signal(sig)
    proc.wait(timeout=20)
    assert os.listdir(tmp_path / "dist") == []


def test_sigkill_leftover_is_removed_by_next_build(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from builder.artifacts.dist import staged_output
        with staged_output(Path({str(tmp_path / 'dist' / 'x')!r})) as stage:
            print("staged", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "staged"
    proc.kill()
    proc.wait(timeout=20)
    assert os.listdir(tmp_path / "dist") != []  # SIGKILL cannot be cleaned up by the victim
    with staged_output(tmp_path / "dist" / "x") as stage:
        stage.finish({})
    assert os.listdir(tmp_path / "dist") == ["x"]


def test_staging_never_writes_through_a_hard_link(tmp_path):
    """A rebuild hard-links files of the previous build; writing the same name again replaces the
    link instead of truncating the previous build's file."""
    from builder.artifacts.dist import Staging

    old = tmp_path / "old.mobileconfig"
    old.write_bytes(b"previous build\n")
    old.chmod(0o600)
    (tmp_path / "stage").mkdir()
    stage = Staging(tmp_path / "stage")
    art = stage.link(old, "profiles/devices/mac.mobileconfig", kind="device-profile", secret=True, signed=None,
                     sha256="0" * 64, size=15)
    assert art.sha256 == "0" * 64 and stage.path(art.path).stat().st_ino == old.stat().st_ino
    stage.write("profiles/devices/mac.mobileconfig", b"new\n", kind="device-profile", secret=True)
    assert old.read_bytes() == b"previous build\n"
    assert stage.path("profiles/devices/mac.mobileconfig").read_bytes() == b"new\n"


def test_rebuild_into_the_same_folder_keeps_the_old_one_until_published(tmp_path):
    final = tmp_path / "dist" / "x"
    with staged_output(final) as stage:
        stage.write("a.txt", b"old", kind="doc")
        stage.finish({})
    with staged_output(final) as stage:
        stage.write("a.txt", b"new", kind="doc")
        assert (final / "a.txt").read_bytes() == b"old"  # still there while the new one is staged
        stage.finish({})
    assert (final / "a.txt").read_bytes() == b"new"
    assert os.listdir(final.parent) == ["x"]


def test_remove_stale_puts_back_a_build_a_killed_publish_moved_aside(tmp_path):
    from builder.artifacts.dist import REPLACED_PREFIX, remove_stale

    dist = tmp_path / "dist"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    aside = dist / f"{REPLACED_PREFIX}demo-1.0-1-{dead}"
    aside.mkdir(parents=True)
    (aside / "manifest.json").write_text("{}")
    remove_stale(dist)
    assert os.listdir(dist) == ["demo-1.0-1"]
    # when the new build did get published, the one moved aside is removed instead
    aside.mkdir()
    remove_stale(dist)
    assert os.listdir(dist) == ["demo-1.0-1"] and (dist / "demo-1.0-1" / "manifest.json").exists()


def test_a_file_of_the_previous_build_that_cannot_be_linked(tmp_path, monkeypatch):
    """Linked across file systems, only a regular file is copied (a FIFO would block the build);
    a write that would have reused a previous file that is gone writes its bytes instead."""
    import errno
    import hashlib

    from builder.artifacts import dist

    old = tmp_path / "old"
    old.mkdir()
    os.mkfifo(old / "fifo")
    (old / "plain").write_bytes(b"plain\n")
    real_link = os.link

    def cross_device(src, dst, *args, **kwargs):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    with staged_output(tmp_path / "dist" / "demo-1") as stage:
        monkeypatch.setattr(dist.os, "link", cross_device)
        with pytest.raises(OSError, match="not a regular file"):
            stage.link(old / "fifo", "fifo", kind="doc", secret=False, signed=None, sha256="0" * 64, size=0)
        assert not stage.path("fifo").exists()
        stage.link(old / "plain", "plain", kind="doc", secret=False, signed=None,
                   sha256=hashlib.sha256(b"plain\n").hexdigest(), size=6)  # copied
        monkeypatch.setattr(dist.os, "link", real_link)
        stage.reuse = {"gone.txt": (str(old / "gone.txt"), hashlib.sha256(b"bytes\n").hexdigest(), 6)}
        stage.write("gone.txt", b"bytes\n", kind="doc")
        stage.reuse_docs = {"doc.txt": "key"}
        stage.reuse["doc.txt"] = (str(old / "gone-doc.txt"), "1" * 64, 4)
        stage.write_doc("doc.txt", "key", lambda: b"doc\n", kind="doc")
        stage.finish({"fleet": "demo"})
    final = tmp_path / "dist" / "demo-1"
    assert (final / "plain").read_bytes() == b"plain\n" and (final / "gone.txt").read_bytes() == b"bytes\n"
    assert (final / "doc.txt").read_bytes() == b"doc\n"
    sums = subprocess.run([require_tool("sha256sum"), "-c", "SHA256SUMS"], cwd=final, capture_output=True)
    assert sums.returncode == 0, sums.stdout
