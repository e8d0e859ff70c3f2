"""No key lingers: builds killed with SIGKILL at random points, the parent or one of its workers.

Each trial runs `fleetpkg build` on a 30-Mac fleet with signing identities, in its own session and
with its own TMPDIR, kills it, waits until every process of the build is gone, and scans the output
folder and the temp folder for secret files, found by content: a profile carrying a PKCS#12
payload, a raw PKCS#12, a package whose scripts carry a .p12 (listed with bsdtar), the devices'
or signers' private keys. Sealed: nothing secret anywhere, ever. Unsealed: only in the private
staging folder (0700) or the finished build, and `fleetpkg clean` or the next build removes the
staging folder and says so. Trials are bounded in number (8) and time (each waits at most 60 s).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.artifacts.targets.conftest import fleetpkg
from tests.artifacts.test_seal import make_keys
from tests.conftest import REPO, require_tool
from tests.fleetfactory import PASSWORD, make_fleet

HOSTS = [f"mac{i:02d}.local" for i in range(30)]
PARTIAL = ".fleetpkg-partial-"
# PFX ::= SEQUENCE { version 3, authSafe ContentInfo { id-data ... } }, definite lengths
RAW_PKCS12 = re.compile(rb"\x30\x82..\x02\x01\x03\x30\x82..\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01", re.S)
SEED = 20260101


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """A fleetfactory fleet of 30 Macs, signed with the demo's installer and profile identities."""
    base = tmp_path_factory.mktemp("kill")
    demo = base / "demo"
    fleetpkg("demo", str(demo), "--jobs", "1")
    now = dt.datetime.now(dt.timezone.utc)
    f = make_fleet(base / "fleet", HOSTS, not_before=now - dt.timedelta(days=1))
    shutil.copytree(demo / "signing", f.root / "signing")
    shutil.copytree(demo / "secrets", f.root / "secrets")
    with f.config.open("a") as fh:
        fh.write('\n[signing]\ninstaller_identity = "signing/installer.p12"\n'
                 'installer_password_file = "secrets/signing-password.txt"\n'
                 'profile_identity = "signing/profiles.p12"\n'
                 'profile_password_file = "secrets/signing-password.txt"\n')
    keys = make_keys(base / "keys")
    return f, keys, _key_needles(f.root)


def _key_needles(root: Path) -> list[bytes]:
    """Slices of every private key the build handles, raw and base64: the devices' and the signers'."""
    keys = []
    for pfx in sorted((root / "pfx").glob("*.pfx"))[:1]:  # fleetfactory gives every Mac one RSA key
        keys.append(pkcs12.load_key_and_certificates(pfx.read_bytes(), PASSWORD.encode())[0])
    signing_pw = (root / "secrets" / "signing-password.txt").read_text().strip().encode()
    for name in ("installer.p12", "profiles.p12"):
        keys.append(pkcs12.load_key_and_certificates((root / "signing" / name).read_bytes(), signing_pw)[0])
    needles = []
    for key in keys:
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        needles += [der[24:88], base64.b64encode(der)[32:96]]
    return needles


def secret_files(folders: list[Path], needles: list[bytes]) -> list[Path]:
    """Every file under `folders` that holds a private key in any form fleetpkg writes one."""
    bsdtar = require_tool("bsdtar")
    found = []
    for folder in folders:
        for path in sorted(folder.rglob("*")) if folder.exists() else ():
            if not path.is_file() or path.is_symlink():
                continue
            data = path.read_bytes()
            flat = re.sub(rb"\s+", b"", data)
            if (b"com.apple.security.pkcs12" in data or RAW_PKCS12.search(data)
                    or any(n in data or n in flat for n in needles)):
                found.append(path)
            elif data.startswith(b"xar!"):
                scripts = subprocess.run([bsdtar, "-xOf", str(path), "Scripts"], capture_output=True).stdout
                if scripts:
                    names = subprocess.run([bsdtar, "-tf", "-"], input=scripts, capture_output=True).stdout
                    if b".p12" in names or b"identity.pass" in names:
                        found.append(path)
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat_line = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat_line.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry))
    return kids


def _wait_group_gone(pgid: int, limit: float = 60.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    raise AssertionError(f"processes of the killed build were still running after {limit} s")


def _start(fleet, out: Path, tmp: Path, sealed: bool):
    f, keys, _ = fleet
    args = [sys.executable, "-m", "builder.cli", "build", str(f.config), "-o", str(out), "--jobs", "2", "-q"]
    if sealed:
        args += ["--seal-to", keys.age_recipient]
    env = dict(os.environ, FLEET_PFX_PASSWORD=PASSWORD, TMPDIR=str(tmp), PYTHONPATH=str(REPO),
               SOURCE_DATE_EPOCH="1767225600")
    return subprocess.Popen(args, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def full_build(fleet, tmp_path_factory) -> tuple[Path, Path, float]:
    """One whole unsealed build: (output, TMPDIR, seconds it took); kills are timed against it."""
    base = tmp_path_factory.mktemp("full")
    out, tmp = base / "out", base / "tmp"
    tmp.mkdir()
    start = time.monotonic()
    proc = _start(fleet, out, tmp, sealed=False)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return out, tmp, time.monotonic() - start


def test_the_detector_finds_every_secret_file_of_a_finished_build(fleet, full_build):
    """Positive control: in a finished unsealed build it finds exactly the files marked secret."""
    _, _, needles = fleet
    out, tmp, _ = full_build
    (build,) = out.iterdir()
    marked = {a["path"] for a in json.loads((build / "manifest.json").read_text())["artifacts"] if a["secret"]}
    found = {p.relative_to(build).as_posix() for p in secret_files([build], needles)}
    assert len(marked) == 30 * 6 and found == marked
    assert secret_files([tmp], needles) == []


@pytest.mark.parametrize("trial", range(8))
def test_sigkill_at_a_random_point_leaves_no_key_about(fleet, full_build, tmp_path, trial):
    rng = random.Random(SEED + trial)
    sealed = trial % 2 == 0
    victim = "worker" if trial % 4 in (1, 2) else "parent"
    _, _, needles = fleet
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    tmp.mkdir()
    where = f"trial {trial} (seed {SEED + trial}, {'sealed' if sealed else 'unsealed'}, SIGKILL to the {victim})"
    proc = _start(fleet, out, tmp, sealed)
    time.sleep(rng.uniform(0.35, 0.95) * full_build[2])  # mostly while the devices are being built
    target = proc.pid
    if victim == "worker":  # the first worker alive from that moment on (none: the build finished)
        deadline = time.monotonic() + 30
        kids = _children(proc.pid)
        while not kids and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
            kids = _children(proc.pid)
        target = rng.choice(kids) if kids else None
    if target is not None:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass  # it had already finished
    _, err = proc.communicate(timeout=120)
    _wait_group_gone(proc.pid)

    finished = [p for p in out.iterdir() if not p.name.startswith(".")] if out.exists() else []
    partial = [p for p in out.iterdir() if p.name.startswith(PARTIAL)] if out.exists() else []
    found = secret_files([out, tmp], needles)
    if victim == "worker" and proc.returncode != 0:
        # the parent saw its worker die: one clear line, and the staging folder removed at once
        assert proc.returncode == 2 and "a worker process died" in err and "Traceback" not in err, where
        assert partial == [] and finished == [], where
    if sealed:
        assert found == [], f"{where}: {found}"
    else:
        for path in found:
            assert any(path.is_relative_to(p) for p in partial + finished), f"{where}: {path}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, f"{where}: {path}"
        for folder in partial:
            assert stat.S_IMODE(folder.stat().st_mode) == 0o700, where

    if partial:  # a SIGKILLed parent cannot clean up: `clean` (odd trials) or the next build (even) does
        if trial % 4 < 2:
            result = fleetpkg("clean", str(out))
            said = result.stdout
        else:
            result = fleetpkg("build", str(fleet[0].config), "-o", str(out), "--jobs", "2",
                              env=dict(os.environ, FLEET_PFX_PASSWORD=PASSWORD, TMPDIR=str(tmp)))
            said = result.stderr
            finished = [p for p in out.iterdir() if not p.name.startswith(".")]
        for folder in partial:
            assert f"removed {folder.name}, left by an interrupted build" in said, f"{where}: {said}"
            assert not folder.exists(), where
        left = secret_files([out, tmp], needles)
        assert all(any(p.is_relative_to(f) for f in finished) for p in left), f"{where}: {left}"
    assert not [p for p in out.iterdir() if p.name.startswith(PARTIAL)] if out.exists() else True, where


def test_clean_leaves_running_builds_and_other_folders_alone(tmp_path):
    out = tmp_path / "out"
    (out / "demo-1").mkdir(parents=True)
    running = out / f"{PARTIAL}demo-2-abc-{os.getpid()}"
    running.mkdir()
    result = fleetpkg("clean", str(out))
    assert result.stdout == f"{out}: nothing left over by interrupted builds\n"
    assert running.is_dir() and (out / "demo-1").is_dir()
    missing = fleetpkg("clean", str(tmp_path / "nope"), check=False)
    assert missing.returncode == 2 and "no such folder" in missing.stderr
