"""examples/ci: the build step script runs here as the CI job would, against a `fleetpkg demo`
fleet whose secrets are moved into environment variables; the artifact is checked with
sha256sum -c (outside and inside the tarball), tar, the age CLI and the build's own JSON. The
step seals by default: the artifact holds no readable key. Run twice, the second release carries
every unchanged Mac's identity forward from the first, opened with the CI's own age key."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, age_key_pair, age_untar, require_tool

SCRIPT = REPO / "examples" / "ci" / "build-release.sh"
WORKFLOW = REPO / "examples" / "ci" / "github-actions-release.yml"
EPOCH = "1767225600"  # 2026-01-01


def _fleetpkg_shim(folder: Path) -> Path:
    """`fleetpkg` on PATH running this checkout, as `pip install` would provide it."""
    folder.mkdir(exist_ok=True)
    shim = folder / "fleetpkg"
    shim.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec "{sys.executable}" -m builder.cli "$@"\n')
    shim.chmod(0o755)
    return folder


def ci_fleet(demo_dir: Path) -> tuple[Path, dict[str, str]]:
    """Turn a `fleetpkg demo` folder into what a CI checkout holds: passwords in env variables
    instead of files, signing identities as base64 secrets instead of files."""
    toml = demo_dir / "fleet.toml"
    text = toml.read_text()
    secrets = {
        "FLEET_PFX_PASSWORD": (demo_dir / "secrets" / "pfx-password.txt").read_text().strip(),
        "INSTALLER_P12_PASSWORD": (demo_dir / "secrets" / "signing-password.txt").read_text().strip(),
        "PROFILE_P12_PASSWORD": (demo_dir / "secrets" / "signing-password.txt").read_text().strip(),
        "INSTALLER_IDENTITY_P12_BASE64": base64.b64encode((demo_dir / "signing" / "installer.p12").read_bytes()).decode(),
        "PROFILE_IDENTITY_P12_BASE64": base64.b64encode((demo_dir / "signing" / "profiles.p12").read_bytes()).decode(),
    }
    replacements = {
        'password_file = "secrets/pfx-password.txt"': 'password_env = "FLEET_PFX_PASSWORD"',
        'installer_password_file = "secrets/signing-password.txt"': 'installer_password_env = "INSTALLER_P12_PASSWORD"',
        'profile_password_file = "secrets/signing-password.txt"': 'profile_password_env = "PROFILE_P12_PASSWORD"',
    }
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    toml.write_text(text)
    shutil.rmtree(demo_dir / "secrets")
    (demo_dir / "signing" / "installer.p12").unlink()
    (demo_dir / "signing" / "profiles.p12").unlink()
    shutil.rmtree(demo_dir / "dist")
    return demo_dir, secrets


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A `fleetpkg demo` folder (the script is parametrised by folder, so any fleet works)."""
    folder = tmp_path_factory.mktemp("ci") / "demo"
    result = subprocess.run([sys.executable, "-m", "builder.cli", "demo", str(folder), "--jobs", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return folder


def _run(fleet: Path, out: Path, tmp_path: Path, env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    shim = _fleetpkg_shim(tmp_path / "bin")
    env = {"PATH": f"{shim}:/usr/local/bin:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "SOURCE_DATE_EPOCH": EPOCH, "FLEETPKG_JOBS": "1", **env_extra}
    return subprocess.run(["bash", str(SCRIPT), str(fleet), str(out)], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)


_age_key = age_key_pair


def test_build_step_makes_one_verified_sealed_artifact(demo_dir, tmp_path):
    sha256sum = require_tool("sha256sum")
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    key, recipient = _age_key(tmp_path)
    out = tmp_path / "out"
    github_output = tmp_path / "github_output"
    result = _run(fleet, out, tmp_path, {**secrets, "GITHUB_OUTPUT": str(github_output),
                                         "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
                                         "FLEETPKG_SEAL_TO": f"\n{recipient}\n"})
    assert result.returncode == 0, result.stderr
    assert "3 of 3 devices built" in result.stdout and "18 secret, sealed in secrets.tar.age" in result.stdout

    # no secret in the job's log; decoded identities gone from the checkout
    for value in secrets.values():
        assert value not in result.stdout + result.stderr
    assert not (fleet / "signing" / "installer.p12").exists()
    assert not (fleet / "signing" / "profiles.p12").exists()

    # the machine-readable result is fleetpkg's JSON
    doc = json.loads((out / "build.json").read_text())
    assert doc["ok"] is True and doc["fleet"] == "demo"
    name = Path(doc["output"]).name
    assert name == "demo-5.1.0.12-1"

    # one artifact folder: the tarball and its checksum, which sha256sum accepts
    release = out / "release"
    assert sorted(p.name for p in release.iterdir()) == [f"{name}.tar.gz", f"{name}.tar.gz.sha256"]
    check = subprocess.run([sha256sum, "-c", f"{name}.tar.gz.sha256"], cwd=release, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.strip() == f"{name}.tar.gz: OK"
    assert stat.S_IMODE((release / f"{name}.tar.gz").stat().st_mode) == 0o600

    outputs = dict(line.split("=", 1) for line in github_output.read_text().splitlines())
    assert outputs["name"] == name and outputs["tarball"] == str(release / f"{name}.tar.gz")

    # inside: the whole bundle, modes kept, matching its own SHA256SUMS
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run([require_tool("bsdtar"), "-xpf", str(release / f"{name}.tar.gz"), "-C", str(unpacked)], check=True)
    bundle = unpacked / name
    check = subprocess.run([sha256sum, "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [a["path"] for a in manifest["artifacts"]] == [a["path"] for a in doc["artifacts"]]
    assert manifest["sealed_to"] == [recipient]
    sealed = [a for a in manifest["artifacts"] if a["sealed"]]
    assert len(sealed) == 18 and all(a["secret"] for a in sealed)
    assert all(a["sealed"] for a in manifest["artifacts"] if a["secret"])
    assert len(check.stdout.splitlines()) == len(manifest["artifacts"]) - len(sealed)
    assert "secrets.tar.age: OK" in check.stdout
    for art in manifest["artifacts"]:
        path = bundle / art["path"]
        if art["sealed"]:
            assert not path.exists(), art["path"]  # no readable key in the artifact
        else:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 in (0o044, 0o055), art["path"]
    for part in ("munki", "jamf", "intune", "DEPLOY.md", "uninstall.sh"):
        assert (bundle / part).exists(), part
    assert any(a["signed"] for a in manifest["artifacts"] if a["kind"] == "wrapper-pkg")

    # the admin's key opens it with the age CLI: every secret file back, mode 0600, as the manifest says
    age = subprocess.Popen([require_tool("age"), "-d", "-i", str(key), "secrets.tar.age"], cwd=bundle,
                           stdout=subprocess.PIPE)
    subprocess.run([require_tool("tar"), "-x"], stdin=age.stdout, cwd=bundle, check=True)
    age.stdout.close()
    assert age.wait(timeout=60) == 0
    for art in sealed:
        data = (bundle / art["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"] and len(data) == art["size"], art["path"]
        assert stat.S_IMODE((bundle / art["path"]).stat().st_mode) == 0o600, art["path"]

    # reproducible packing: names sorted, owner 0, mtime = SOURCE_DATE_EPOCH
    with tarfile.open(release / f"{name}.tar.gz") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.mtime) for m in members} == {(0, 0, int(EPOCH))}


def _unpack(release: Path, dest: Path) -> Path:
    """The bundle inside a release folder (tarball checked against its .sha256 with sha256sum)."""
    (tarball,) = release.glob("*.tar.gz")
    check = subprocess.run([require_tool("sha256sum"), "-c", tarball.name + ".sha256"], cwd=release,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    dest.mkdir(parents=True)
    subprocess.run([require_tool("tar"), "-xzf", str(tarball), "-C", str(dest)], check=True)
    (bundle,) = dest.iterdir()
    return bundle


def _age_open(bundle: Path, key: Path, dest: Path) -> dict[str, bytes]:
    """secrets.tar.age opened with the age CLI and GNU tar: path -> bytes."""
    age_untar(bundle / "secrets.tar.age", key, dest)
    return {p.relative_to(dest).as_posix(): p.read_bytes() for p in sorted(dest.rglob("*")) if p.is_file()}


def test_a_second_release_carries_unchanged_macs_forward_with_the_ci_key(demo_dir, tmp_path):
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    (tmp_path / "admin").mkdir()
    (tmp_path / "ci").mkdir()
    admin_key, admin = _age_key(tmp_path / "admin")
    ci_key, ci = _age_key(tmp_path / "ci")
    ci_secret = ci_key.read_text()  # the whole file age-keygen wrote, as the secret store holds it
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    env = {**secrets, "FLEETPKG_SEAL_TO": admin, "FLEETPKG_CI_AGE_KEY": ci_secret, "TMPDIR": str(private_tmp)}
    first_out = tmp_path / "first"
    first = _run(fleet, first_out, tmp_path, {**env, "FLEETPKG_PREVIOUS": str(tmp_path / "previous")})  # none yet
    assert first.returncode == 0, first.stderr
    assert "no previous release" in first.stderr

    # the next release: a new build number, the previous release's folder as the artifact download holds it
    toml = fleet / "fleet.toml"
    toml.write_text(toml.read_text().replace("build = 1", "build = 2", 1))
    previous = tmp_path / "previous"
    shutil.copytree(first_out / "release", previous / "demo-5.1.0.12-1")
    second_out = tmp_path / "second"
    second = _run(fleet, second_out, tmp_path, {**env, "FLEETPKG_PREVIOUS": str(previous)})
    assert second.returncode == 0, second.stderr
    assert ("since demo-5.1.0.12-1: 0 added, 0 changed, 0 removed, 3 unchanged Mac(s), wrapper changed"
            in second.stdout), second.stdout
    assert "note:" not in second.stdout
    for result in (first, second):  # the CI key never reaches the log
        assert ci_secret.split("AGE-SECRET-KEY-")[1][:20] not in result.stdout + result.stderr
    assert list(private_tmp.iterdir()) == []  # its key file and the unpacked previous release are gone

    doc = json.loads((second_out / "build.json").read_text())
    changes = doc["changes"]
    assert changes["previous"] == "demo-5.1.0.12-1" and changes["reasons"] == {}
    assert changes["devices"]["unchanged"] == ["MAC01.local", "MAC02.local", "mac03.local"]
    old_bundle = _unpack(first_out / "release", tmp_path / "old")
    new_bundle = _unpack(second_out / "release", tmp_path / "new")
    manifest = json.loads((new_bundle / "manifest.json").read_text())
    assert manifest["sealed_to"] == [admin, ci]  # the admins' key, and the CI's own for the next release
    # the admin opens both with the age CLI: every device profile byte-identical, signed or not
    old = _age_open(old_bundle, admin_key, tmp_path / "old-secrets")
    new = _age_open(new_bundle, admin_key, tmp_path / "new-secrets")
    profiles = [rel for rel in new if "/devices/" in rel]
    assert len(profiles) == 3 * 5  # 3 Macs: profile, signed profile, 2 Jamf copies, 1 Intune copy
    assert all(new[rel] == old[rel] for rel in profiles)
    assert all(new[f"identity/{h}.pkg"] != old[f"identity/{h}.pkg"]  # the new version, around the same key
               for h in ("MAC01.local", "MAC02.local", "mac03.local"))


def test_a_damaged_previous_release_fails_the_step(demo_dir, tmp_path):
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    _key, admin = _age_key(tmp_path)
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "demo-5.1.0.12-0.tar.gz").write_bytes(b"not what its checksum says")
    (previous / "demo-5.1.0.12-0.tar.gz.sha256").write_text("0" * 64 + "  demo-5.1.0.12-0.tar.gz\n")
    out = tmp_path / "out"
    result = _run(fleet, out, tmp_path, {**secrets, "FLEETPKG_SEAL_TO": admin, "FLEETPKG_PREVIOUS": str(previous)})
    assert result.returncode == 2 and "does not match its .sha256" in result.stderr
    assert not (out / "release").exists() and not (out / "dist").exists()


def test_unsealed_only_when_asked_for_explicitly(demo_dir, tmp_path):
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    refused = _run(fleet, tmp_path / "refused", tmp_path, secrets)
    assert refused.returncode == 2 and "no seal recipient" in refused.stderr
    assert not (tmp_path / "refused" / "dist").exists()  # nothing was built
    assert not (fleet / "signing" / "installer.p12").exists()

    out = tmp_path / "out"
    result = _run(fleet, out, tmp_path, {**secrets, "FLEETPKG_UNSEALED": "1"})
    assert result.returncode == 0, result.stderr
    assert "18 secret, READABLE: not sealed" in result.stdout
    doc = json.loads((out / "build.json").read_text())
    name = Path(doc["output"]).name
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run([require_tool("bsdtar"), "-xpf", str(out / "release" / f"{name}.tar.gz"), "-C", str(unpacked)],
                   check=True)
    bundle = unpacked / name
    check = subprocess.run([require_tool("sha256sum"), "-c", "SHA256SUMS"], cwd=bundle, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert len(check.stdout.splitlines()) == len(manifest["artifacts"])
    for art in manifest["artifacts"]:  # the tarball keeps modes: private keys stay 0600
        mode = stat.S_IMODE((bundle / art["path"]).stat().st_mode)
        assert (mode == 0o600) == art["secret"], art["path"]
        assert not art["sealed"]


def test_a_bad_seal_recipient_fails_the_step_with_one_clear_line(demo_dir, tmp_path):
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    result = _run(fleet, tmp_path / "out", tmp_path, {**secrets, "FLEETPKG_SEAL_TO": "age1typo"})
    assert result.returncode == 2 and "--seal-to: 'age1typo' is not a valid age recipient" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "release").exists()


def test_a_missing_password_fails_the_step_with_one_clear_line(demo_dir, tmp_path):
    fleet, secrets = ci_fleet(Path(shutil.copytree(demo_dir, tmp_path / "fleet")))
    del secrets["FLEET_PFX_PASSWORD"]
    out = tmp_path / "out"
    result = _run(fleet, out, tmp_path, {**secrets, "FLEETPKG_SEAL_TO": _age_key(tmp_path)[1]})
    assert result.returncode == 2
    assert "FLEET_PFX_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "release").exists()
    assert not (fleet / "signing" / "installer.p12").exists()  # cleaned up on failure too


def test_script_is_shellcheck_clean():
    shellcheck = require_tool("shellcheck")
    result = subprocess.run([shellcheck, "-s", "bash", "-S", "style", str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
    assert os.access(SCRIPT, os.X_OK)


def test_workflow_runs_the_script_with_secrets_from_the_store():
    doc = yaml.safe_load(WORKFLOW.read_text())
    steps = doc["jobs"]["build"]["steps"]
    build = next(s for s in steps if "build-release.sh" in s.get("run", ""))
    script_text = SCRIPT.read_text()
    for name, value in build["env"].items():
        if name.startswith("FLEETPKG_"):
            continue
        assert value == "${{ secrets.%s }}" % name, name  # every secret comes from the store
        # read by the script itself, or by fleetpkg through fleet.toml's password_env
        assert name in script_text or name.endswith("_PASSWORD"), name
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact") and
                  "bundle" in s["name"])
    assert upload["with"]["path"].endswith("/release/")
    assert upload["with"]["name"] == "${{ steps.bundle.outputs.name }}"
    assert build["id"] == "bundle"
    install = next(s for s in steps if s.get("name") == "Install fleetpkg")
    assert "pip install" in install["run"]
    # carrying forward: the CI's key from the store, the previous release fetched before the build
    assert build["env"]["FLEETPKG_CI_AGE_KEY"] == "${{ secrets.FLEETPKG_CI_AGE_KEY }}"
    fetch = next(s for s in steps if s.get("name") == "Fetch the previous release")
    assert steps.index(fetch) < steps.index(build)
    assert build["env"]["FLEETPKG_PREVIOUS"] == "${{ runner.temp }}/previous" and '"$RUNNER_TEMP/previous"' in fetch["run"]
    assert "gh run download" in fetch["run"] and doc["permissions"]["actions"] == "read"
    assert any("age" in s.get("run", "").split() for s in steps[:steps.index(build)])  # age-keygen installed
    assert upload["with"]["retention-days"] >= 30  # the next release carries forward from this one
