"""`fleetpkg sign` end to end in a subprocess: identities from .p12 (password from env, file or
nothing) or PEM files, one-line errors for every bad input, no password in any output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import FIXTURES, REPO
from tests.formats.pkg.identity_factory import make_chain
from tests.formats.pkg.sigparts import signature_parts

PASSWORD = "Sign-me-Distinctive#7"
UNSIGNED = FIXTURES / "pkg" / "relic-dummy.pkg"


def run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO))
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def one_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetpkg: error: "), r.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    assert PASSWORD not in r.stderr


def test_sign_with_p12_password_env_then_verify(tmp_path: Path):
    chain = make_chain("A")
    p12 = chain.write_p12(tmp_path / "id.p12", PASSWORD.encode())
    root = chain.write_pem(tmp_path)["root"]
    r = run("sign", UNSIGNED, "-o", "out.pkg", "--identity", p12, "--password-env", "SIGN_PW",
            cwd=tmp_path, env={"SIGN_PW": PASSWORD})
    assert r.returncode == 0, r.stderr
    assert "signed out.pkg" in r.stdout and "RSA 2048" in r.stdout
    assert PASSWORD not in r.stdout + r.stderr
    v = run("verify", "out.pkg", "--trust-root", root, cwd=tmp_path)
    assert v.returncode == 0, v.stdout
    assert "out.pkg: valid" in v.stdout


def test_sign_with_password_file_and_pem_identity(tmp_path: Path):
    chain = make_chain("A")
    (tmp_path / "pw.txt").write_text(PASSWORD + "\n")
    p12 = chain.write_p12(tmp_path / "id.p12", PASSWORD.encode())
    assert run("sign", UNSIGNED, "-o", "a.pkg", "--identity", p12, "--password-file", "pw.txt",
               cwd=tmp_path).returncode == 0
    files = chain.write_pem(tmp_path, key_password=PASSWORD.encode())
    r = run("sign", UNSIGNED, "-o", "b.pkg", "--certificate", files["cert"], "--key", files["key"],
            "--chain", files["ca"], "--chain", files["root"], "--key-password-env", "KEY_PW",
            cwd=tmp_path, env={"KEY_PW": PASSWORD})
    assert r.returncode == 0, r.stderr
    # same identity, same input: same bytes whichever way the identity was loaded
    assert (tmp_path / "a.pkg").read_bytes() == (tmp_path / "b.pkg").read_bytes()
    assert signature_parts(tmp_path / "a.pkg")["rsa_slot"] == (20, 256)


def test_codesign_identity_warns(tmp_path: Path):
    p12 = make_chain("CS", eku="codesign").write_p12(tmp_path / "cs.p12", PASSWORD.encode())
    r = run("sign", UNSIGNED, "-o", "o.pkg", "--identity", p12, "--password-env", "PW",
            cwd=tmp_path, env={"PW": PASSWORD})
    assert r.returncode == 0
    assert "fleetpkg: warning:" in r.stderr and "Gatekeeper will not trust it" in r.stderr


def test_errors_are_one_line(tmp_path: Path):
    chain = make_chain("A")
    p12 = chain.write_p12(tmp_path / "id.p12", PASSWORD.encode())
    one_error(run("sign", UNSIGNED, "-o", "o.pkg", "--identity", p12, "--password-env", "PW",
                  cwd=tmp_path, env={"PW": "wrong"}), "id.p12", "wrong password")
    one_error(run("sign", UNSIGNED, "-o", "o.pkg", "--identity", p12, "--password-env", "UNSET_PW_VAR",
                  cwd=tmp_path), "UNSET_PW_VAR")
    # no password source and no terminal: the .p12 cannot be opened, and the hint says how
    one_error(run("sign", UNSIGNED, "-o", "o.pkg", "--identity", p12, cwd=tmp_path), "--password-env")
    one_error(run("sign", UNSIGNED, "-o", "o.pkg", cwd=tmp_path), "no signing identity")
    expired = make_chain("EX", expired=True).write_p12(tmp_path / "old.p12", PASSWORD.encode())
    one_error(run("sign", UNSIGNED, "-o", "o.pkg", "--identity", expired, "--password-env", "PW",
                  cwd=tmp_path, env={"PW": PASSWORD}), "old.p12", "expired on")
    (tmp_path / "notpkg.pkg").write_bytes(b"hello")
    one_error(run("sign", "notpkg.pkg", "-o", "o.pkg", "--identity", p12, "--password-env", "PW",
                  cwd=tmp_path, env={"PW": PASSWORD}), "notpkg.pkg")
    signed = tmp_path / "s.pkg"
    assert run("sign", UNSIGNED, "-o", signed, "--identity", p12, "--password-env", "PW", cwd=tmp_path,
               env={"PW": PASSWORD}).returncode == 0
    one_error(run("sign", signed, "-o", signed, "--identity", p12, "--password-env", "PW", cwd=tmp_path,
                  env={"PW": PASSWORD}), "overwrite the input")
    assert not (tmp_path / "o.pkg").exists()
