"""The progress bar: its line, its throttling, and end to end on a pseudo-terminal (shown for a
person at a terminal; never with --json or when stderr is not a TTY). Machine output stays clean:
--json on check/build/demo/inspect/verify prints exactly one JSON document on stdout, nothing else."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from builder.cli.progress import ProgressBar, format_line, wanted
from tests.conftest import REPO
from tests.fleetfactory import NOW, PASSWORD, make_fleet

AT = NOW.strftime("%Y-%m-%d")
BAR = re.compile(r"\[[#.]+\] \d+/\d+ devices ")


# -- the line ----------------------------------------------------------------------------------

def test_line_counts_rate_and_eta():
    line = format_line(250, 1000, 50.0, 5.0, "devices", 79)
    assert line.startswith("[") and "250/1000 devices 50/s ETA 0:15" in line
    bar = line[1:line.index("]")]
    assert len(bar) == 30 and bar.count("#") == 7  # 30 * 250 // 1000
    assert len(line) <= 79


def test_line_before_a_rate_and_when_done():
    assert format_line(0, 10, None, 1.0, "devices", 79).endswith("0/10 devices 0/s ETA --:--")
    done = format_line(10, 10, None, 125.0, "devices", 79)
    assert done.endswith("10/10 devices 0/s in 2:05") and "." not in done[1:done.index("]")]
    assert format_line(1, 3, 0.0001, 1.0, "devices", 79).endswith("ETA 5:33:20")


def test_line_fits_narrow_terminals():
    for width in (20, 30, 40, 60):
        assert len(format_line(4321, 10000, 812.4, 3.0, "devices", width)) <= width
    assert format_line(4321, 10000, 812.4, 3.0, "devices", 30).startswith("4321/10000")  # no room for a bar


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_redraws_are_throttled_but_the_last_step_always_shows():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar("devices", stream=out, width=79, min_interval=0.1, clock=clock)
    bar.update(1, 100)  # first update draws
    for i in range(2, 100):
        clock.now += 0.001  # 98 quick updates: throttled
        bar.update(i, 100)
    clock.now += 0.001
    bar.update(100, 100)  # the final one is drawn regardless
    bar.close()
    text = out.getvalue()
    draws = text.count("\r")
    assert draws == 2, text  # the first and the last
    assert text.endswith("\n") and "100/100 devices" in text
    # rate is measured from the first item: 99 items in 0.099 s
    assert "1,000/s" in text.split("\r")[-1]


def test_close_shows_a_throttled_last_step_and_freezes_the_finish():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar("devices", stream=out, width=79, clock=clock)
    for i in range(1, 51):  # a build that stops half-way (first unreadable .pfx)
        clock.now += 0.001
        bar.update(i, 100)
    bar.close()
    assert out.getvalue().split("\r")[-1].startswith("[" + "#" * 15 + "." * 15 + "] 50/100 devices")
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar("devices", stream=out, width=79, clock=clock)
    bar.update(1, 2)
    clock.now += 1
    bar.update(2, 2)
    clock.now += 60  # the wrapper is built after the devices; the bar's figures stay put
    bar.write("note: something")
    bar.close()
    assert out.getvalue().split("\r")[-1] == "[" + "#" * 30 + "] 2/2 devices 1/s in 0:01\x1b[K\n"


def test_write_prints_above_the_bar_and_redraws_it():
    out, clock = io.StringIO(), Clock()
    bar = ProgressBar("devices", stream=out, width=79, clock=clock)
    bar.write("before any bar")
    bar.update(1, 4)
    bar.write("warning: mac02: something")
    bar.close()
    lines = out.getvalue().split("\n")
    assert lines[0] == "before any bar"
    assert lines[1].endswith("\r\x1b[Kwarning: mac02: something")  # bar erased, message on its own line
    assert BAR.search(lines[2]) and lines[3] == ""


def test_close_without_updates_writes_nothing():
    out = io.StringIO()
    bar = ProgressBar("devices", stream=out, width=79)
    bar.close()
    bar.close()
    assert out.getvalue() == ""


def test_wanted_only_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    master, slave = pty.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            assert wanted(tty)
            assert not wanted(tty, as_json=True)
            assert not wanted(tty, quiet=True)
            monkeypatch.setenv("TERM", "dumb")
            assert not wanted(tty)
    finally:
        os.close(master)
        os.close(slave)
    monkeypatch.setenv("TERM", "xterm-256color")
    assert not wanted(io.StringIO())
    r, w = os.pipe()
    with open(w, "w") as pipe:
        assert not wanted(pipe)
    os.close(r)


# -- end to end with stderr on a pseudo-terminal -------------------------------------------------

def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), FLEET_PFX_PASSWORD=PASSWORD, TERM="xterm-256color")
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("COLUMNS", None)
    return env


def run_on_pty(*args: str, cwd: Path, stderr_tty: bool = True, timeout: float = 300) -> tuple[int, str, str]:
    """Run fleetpkg with stdout on a pipe and stderr on a pty (or a pipe); returns (rc, stdout, stderr)."""
    cmd = [sys.executable, "-m", "builder.cli", *args]
    if not stderr_tty:
        p = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout, p.stderr
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    proc = subprocess.Popen(cmd, cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave)
    os.close(slave)
    out, err = bytearray(), bytearray()
    open_fds = {proc.stdout.fileno(): out, master: err}
    try:
        while open_fds:
            ready, _, _ = select.select(list(open_fds), [], [], timeout)
            assert ready, "fleetpkg produced no output and did not exit"
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: every slave end is closed
                    chunk = b""
                if chunk:
                    open_fds[fd] += chunk
                else:
                    del open_fds[fd]
        rc = proc.wait(timeout=timeout)
    finally:
        os.close(master)
        proc.stdout.close()
    return rc, out.decode(), err.decode().replace("\r\n", "\n")  # the tty maps \n to \r\n


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return make_fleet(tmp_path_factory.mktemp("progress"), [f"mac{i:02d}.local" for i in range(12)])


def test_check_shows_the_bar_on_a_terminal(fleet):
    rc, out, err = run_on_pty("check", "fleet.toml", "--at", AT, "--jobs", "2", cwd=fleet.root)
    assert rc == 0, err
    assert BAR.search(err), err
    final = err.split("\r")[-1]
    assert final.startswith("[" + "#" * 30 + "] 12/12 devices ") and " in " in final and final.endswith("\x1b[K\n")
    assert "\r" not in out and "\x1b" not in out and "12 devices checked" in out  # the table is on stdout


def test_check_serial_shows_the_bar_too(fleet):
    rc, out, err = run_on_pty("check", "fleet.toml", "--at", AT, "--jobs", "1", cwd=fleet.root)
    assert rc == 0 and "12/12 devices" in err


def test_no_bar_with_json_or_without_a_terminal(fleet):
    rc, out, err = run_on_pty("check", "fleet.toml", "--at", AT, "--json", cwd=fleet.root)
    assert rc == 0 and err == ""
    assert len(json.loads(out)["devices"]) == 12
    rc, out, err = run_on_pty("check", "fleet.toml", "--at", AT, cwd=fleet.root, stderr_tty=False)
    assert rc == 0 and err == "" and "\r" not in out


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`fleetpkg demo` run with stderr on a terminal: the build's bar and its closing summary."""
    root = tmp_path_factory.mktemp("demo")
    rc, out, err = run_on_pty("demo", str(root / "demo"), cwd=root)
    assert rc == 0, err
    return root / "demo", out, err


def test_build_shows_the_bar_and_a_closing_summary(demo):
    folder, out, err = demo
    assert "3/3 devices" in err and BAR.search(err)
    for line in err.split("\n"):  # log lines and warnings never share a line with the bar
        visible = line.split("\r")[-1]
        if BAR.search(line) and not BAR.match(visible):
            raise AssertionError(f"bar and message on one line: {line!r}")
    assert "\r" not in out
    assert re.search(r"devices: 3 built, 0 skipped, 1 warning", out)
    assert re.search(r"artifacts: \d+ \(\d+ secret, mode 0600; \d+ signed\)", out)
    assert "wrapper: demo-1E-Client-" in out and "signed by" in out


def _one_document(text: str) -> object:
    doc, end = json.JSONDecoder().raw_decode(text)
    assert text[end:].strip() == "", f"more than one JSON document: {text[end:end + 80]!r}"
    return doc


def test_json_is_one_document_and_nothing_else(demo, tmp_path):
    folder, _, _ = demo
    (dist,) = (folder / "dist").iterdir()
    (wrapper,) = dist.glob("*.pkg")
    cases = [
        ("demo", str(tmp_path / "demo2"), "--json"),
        ("check", str(folder / "fleet.toml"), "--json"),
        ("build", str(folder / "fleet.toml"), "--json", "-o", str(tmp_path / "out")),
        ("inspect", str(wrapper), "--json"),
        ("verify", str(dist), "--json"),
    ]
    for args in cases:
        rc, out, err = run_on_pty(*args, cwd=tmp_path)
        assert rc in (0, 1), (args, rc, err)
        assert err == "", (args, err)  # stderr is a terminal here, and still no bar or chatter
        doc = _one_document(out)
        assert isinstance(doc, dict) and doc, args
