"""Work folders in the system's temporary folder (builder/scratch.py): named with their process's
pid, removed when the command ends, and found and removed after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from builder import scratch
from tests.conftest import REPO


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


def test_a_work_folder_is_private_named_with_its_pid_and_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    with scratch.scratch("build") as path:
        assert path.parent == tmp_path and path.name.startswith("fleetpkg-build-")
        assert path.name.endswith(f"-{os.getpid()}") and path.stat().st_mode & 0o777 == 0o700
        (path / "vendor.pkg").write_bytes(b"x")
    assert not path.exists()


def test_only_the_folders_of_processes_that_are_gone_are_removed(tmp_path):
    dead = _dead_pid()
    left = tmp_path / f"fleetpkg-build-abc123-{dead}"
    (left / "vendor").mkdir(parents=True)
    (left / "vendor" / "client.pkg").write_bytes(b"pkg")
    (left / "wrapper-unsigned.pkg").write_bytes(b"pkg")
    running = tmp_path / f"fleetpkg-check-def456-{os.getpid()}"
    running.mkdir()
    other = tmp_path / f"something-build-ghi789-{dead}"
    other.mkdir()
    link = tmp_path / f"fleetpkg-vendor-jkl012-{dead}"
    link.symlink_to(other)
    removed = scratch.remove_stale_scratch(tmp_path)
    assert removed == [(str(left), 2)]
    assert scratch.describe_scratch(removed) == [
        f"removed {left}, a work folder left by an interrupted fleetpkg (2 file(s))"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([running.name, other.name, link.name])


def test_a_build_killed_with_sigkill_leaves_a_work_folder_that_clean_removes(tmp_path):
    """A real build, killed while it runs: its work folder stays in TMPDIR (nothing can run on
    SIGKILL), and `fleetpkg clean` (as the next build does) removes it and says so."""
    from builder.fleet.demo import write_demo

    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    config = write_demo(tmp_path / "demo")
    build = subprocess.Popen([sys.executable, "-m", "builder.cli", "build", str(config), "-o", str(tmp_path / "out"),
                              "--jobs", "1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "tmp").glob("fleetpkg-build-*")) and time.monotonic() < deadline:
        if build.poll() is not None:
            break
        time.sleep(0.005)
    build.send_signal(signal.SIGKILL)
    build.wait()
    left = list((tmp_path / "tmp").glob("fleetpkg-build-*"))
    assert left, "the build ended before its work folder could be seen"
    (tmp_path / "out").mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-m", "builder.cli", "clean", str(tmp_path / "out")], env=env,
                            capture_output=True, text=True, check=True)
    assert f"removed {left[0]}, a work folder left by an interrupted fleetpkg" in result.stdout
    assert not list((tmp_path / "tmp").glob("fleetpkg-build-*"))
