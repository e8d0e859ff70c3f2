"""`fleetpkg verify` end to end: the Apple-signed fixture passes, damaged copies fail with the
failing check named, --json is one document, directories and profiles are dispatched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, REPO
from tests.formats.pkg.sigparts import signature_parts

APPLE = FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg"


def run(*args, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_apple_fixture_valid(tmp_path: Path):
    r = run("verify", APPLE, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    for line in ("TOC checksum:   ok", "RSA signature:  ok", "CMS signature:  ok",
                 "chain:          ok (ends at Apple Root CA)", "expired on 2023-12-13", ": valid"):
        assert line in r.stdout


def test_apple_fixture_json(tmp_path: Path):
    r = run("verify", APPLE, "--json", cwd=tmp_path)
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["ok"] and doc["anchored_at"] == "apple-root" and doc["rsa_ok"] and doc["cms_ok"]
    assert doc["problems"] == [] and len(doc["chain"]) == 3


@pytest.mark.parametrize("where, message", [
    ("toc", "problem: TOC checksum mismatch"),
    ("data", "problem: file data checksum mismatch in Installomator.pkg/Bom"),
    ("rsa", "problem: RSA signature invalid"),
    ("cms", "problem: CMS signature invalid"),
])
def test_damaged_copies_fail_naming_the_check(tmp_path: Path, where: str, message: str):
    p = signature_parts(APPLE)
    pos = {"toc": 200, "data": p["heap"] + p["first_data_offset"] + 1, "rsa": p["heap"] + 20 + 9,
           "cms": p["heap"] + 276 + 4000}[where]
    data = bytearray(APPLE.read_bytes())
    data[pos] ^= 0x10
    (tmp_path / "bad.pkg").write_bytes(bytes(data))
    r = run("verify", "bad.pkg", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert message in r.stdout and "bad.pkg: INVALID" in r.stdout
    assert "Traceback" not in r.stderr


def test_unsigned_and_untrusted(tmp_path: Path):
    r = run("verify", FIXTURES / "pkg" / "relic-dummy.pkg", cwd=tmp_path)
    assert r.returncode == 1 and "problem: package is not signed" in r.stdout


def test_bad_trust_root_and_missing_file(tmp_path: Path):
    (tmp_path / "root.pem").write_text("nope")
    r = run("verify", APPLE, "--trust-root", "root.pem", cwd=tmp_path)
    assert r.returncode == 2 and "root.pem" in r.stderr and "Traceback" not in r.stderr
    r = run("verify", "missing.pkg", cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_garbage_file_is_a_finding(tmp_path: Path):
    (tmp_path / "x.pkg").write_bytes(b"garbage" * 10)
    r = run("verify", "x.pkg", cwd=tmp_path)
    assert r.returncode == 1 and "problem: not a readable package" in r.stdout


def test_profile_and_directory_dispatch(tmp_path: Path):
    profile = FIXTURES / "mobileconfig" / "encrypted-dns-unsigned-adguard-default-https.mobileconfig"
    r = run("verify", profile, "--json", cwd=tmp_path)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr
    doc = json.loads(r.stdout)
    assert doc["signed"] is False and "problems" in doc
    empty = tmp_path / "dist"
    empty.mkdir()
    r = run("verify", empty, cwd=tmp_path)
    assert r.returncode == 1 and "problem:" in r.stdout and "Traceback" not in r.stderr
