"""Intune files: Microsoft's limits enforced at build time, the profiles as unsigned XML, and the
pre-/post-install scripts run for real (bash, stub macOS commands) in an isolated root."""

from __future__ import annotations

import os
import plistlib
import re
import stat
import subprocess
import sys

import pytest

from builder.errors import BuildError
from builder.artifacts.targets import intune, write_targets
from tests.conftest import REPO, require_tool
from tests.scripts.macroot import MacRoot, mac_root  # noqa: F401  (fixture)
from tests.artifacts.targets.conftest import copy_demo_fleet
from tests.artifacts.targets.fakebuild import make_build
from tests.artifacts.test_scripts import NOT_ON_MACOS

SCRIPT_LIMIT = 15_360  # characters, Microsoft's documented limit (July 2024)
PROFILE_LIMIT = 1_000_000  # bytes
ROSETTA = "/Library/Apple/usr/libexec/oah/libRosettaRuntime"


# -- limits --------------------------------------------------------------------------------------

def test_script_limit_boundary():
    assert intune.check_script("preinstall.sh", "x" * SCRIPT_LIMIT) == "x" * SCRIPT_LIMIT
    # characters, not bytes: 15,360 two-byte characters still fit
    intune.check_script("preinstall.sh", "é" * SCRIPT_LIMIT)
    with pytest.raises(BuildError) as exc:
        intune.check_script("postinstall.sh", "x" * (SCRIPT_LIMIT + 1))
    text = str(exc.value)
    assert "postinstall.sh" in text and "15,361 characters" in text and "15,360" in text


def test_profile_limit_boundary():
    intune.check_profile("profiles/trust.mobileconfig", PROFILE_LIMIT)
    with pytest.raises(BuildError) as exc:
        intune.check_profile("profiles/trust.mobileconfig", PROFILE_LIMIT + 1)
    text = str(exc.value)
    assert "profiles/trust.mobileconfig" in text and "1,000,001 bytes" in text and "1,000,000" in text


def test_oversized_device_profile_stops_the_build_before_intune_writes_anything(tmp_path):
    info, stage = make_build(tmp_path / "stage", device_profile_pad=PROFILE_LIMIT)
    big = stage.path("profiles/devices/mac01.local.mobileconfig")
    assert big.stat().st_size > PROFILE_LIMIT
    with pytest.raises(BuildError) as exc:
        write_targets(info, stage)
    assert "profiles/devices/mac01.local.mobileconfig" in str(exc.value)
    assert f"{big.stat().st_size:,} bytes" in str(exc.value)
    assert not (tmp_path / "stage" / "intune").exists()
    assert not any(a.path.startswith("intune/") for a in stage.artifacts)


def test_oversized_script_is_a_build_error_naming_it(tmp_path, monkeypatch):
    info, stage = make_build(tmp_path / "stage")
    real = intune.render

    def fat(name, **values):
        text = real(name, **values)
        return text + "#" * SCRIPT_LIMIT if "preinstall" in name else text

    monkeypatch.setattr(intune, "render", fat)
    with pytest.raises(BuildError) as exc:
        write_targets(info, stage)
    assert "preinstall.sh" in str(exc.value) and "characters" in str(exc.value)


def test_cli_reports_the_limit_in_one_line_and_leaves_no_build(demo_build, tmp_path):
    """The whole `fleetpkg build`, with the profile limit lowered so the demo's profiles exceed it."""
    fleet = copy_demo_fleet(demo_build, tmp_path / "fleet")
    code = ("import sys; import builder.artifacts.targets.intune as t; t.PROFILE_LIMIT = 3000; "
            "from builder.cli import main; main(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", code, "build", str(fleet / "fleet.toml"), "--jobs", "1"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("fleetpkg: error:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert ".mobileconfig" in errors[0] and "bytes" in errors[0] and "3,000" in errors[0]
    assert not (fleet / "dist").exists() or not any((fleet / "dist").iterdir())


# -- the demo build's intune/ ----------------------------------------------------------------------

def test_demo_intune_folder(demo_build):
    root = demo_build.root
    arts = demo_build.artifacts()
    intune_dir = root / "intune"
    wrapper = next(root.glob("*.pkg"))
    assert (intune_dir / wrapper.name).read_bytes() == wrapper.read_bytes()
    for name in ("preinstall.sh", "postinstall.sh"):
        path = intune_dir / name
        text = path.read_text()
        assert len(text) <= SCRIPT_LIMIT
        assert text.startswith("#!/bin/bash\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o755
        assert arts[f"intune/{name}"]["secret"] is False
    profiles = sorted((intune_dir / "profiles").rglob("*.mobileconfig"))
    assert [str(p.relative_to(intune_dir)) for p in profiles] == [
        "profiles/devices/MAC01.local.mobileconfig", "profiles/devices/MAC02.local.mobileconfig",
        "profiles/devices/mac03.local.mobileconfig", "profiles/login-items.mobileconfig",
        "profiles/trust.mobileconfig"]
    for path in profiles:
        data = path.read_bytes()
        assert len(data) <= PROFILE_LIMIT
        assert data.startswith(b"<?xml")  # unsigned XML, not CMS DER
        assert plistlib.loads(data)["PayloadType"] == "Configuration"
        original = root / "profiles" / path.relative_to(intune_dir / "profiles")
        assert data == original.read_bytes()
        rel = str(path.relative_to(root))
        secret = "devices" in rel
        assert arts[rel]["secret"] is secret
        assert stat.S_IMODE(path.stat().st_mode) == (0o600 if secret else 0o644)
    detection = (intune_dir / "detection.md").read_text()
    assert "com.example.fleetpkg-demo.configure" in detection and "5.1.0.12-1" in detection
    assert "com.1e.pkg.1E.Client" in detection
    assert "not yet confirmed" in detection


def test_demo_intune_scripts_are_shellcheck_clean(demo_build):
    shellcheck = require_tool("shellcheck")
    for name in ("preinstall.sh", "postinstall.sh"):
        script = demo_build.root / "intune" / name
        result = subprocess.run([shellcheck, "-s", "bash", "-S", "style", str(script)],
                                capture_output=True, text=True)
        assert result.returncode == 0 and result.stdout == "", result.stdout
        assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
        code = "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))
        for pattern, what in NOT_ON_MACOS.items():  # bash 3.2 + BSD tools
            assert not re.search(pattern, code), f"{name} uses {what}"


# -- the scripts running in an isolated root -----------------------------------------------------

SW_VERS = """#!/bin/bash
STUB_NAME=sw_vers
. /stubs/lib.sh
stub_record "$@"
[ "${1:-}" = "-productVersion" ] && cat /stubs/state/os_version
"""
DF = """#!/bin/bash
STUB_NAME=df
. /stubs/lib.sh
stub_record "$@"
echo "Filesystem 1024-blocks Used Available Capacity Mounted on"
echo "/dev/disk3s1s1 494384795 10000000 $(cat /stubs/state/free_kb) 3% /"
"""
AGENT_ENV = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "HOME": "/var/root", "USER": "root"}


def _prepared(root: MacRoot, *, os_version="14.5", free_kb=50_000_000, arm64=False) -> None:
    root.write("/usr/bin/sw_vers", SW_VERS, 0o755)
    root.write("/usr/bin/df", DF, 0o755)
    root.set_state("os_version", os_version + "\n")
    root.set_state("free_kb", str(free_kb))
    root.set_state("arm64", "1\n" if arm64 else None)


def _run(root: MacRoot, demo_build, name: str):
    text = (demo_build.root / "intune" / name).read_text()
    return root.run_script(text, name, [], folder="/private/tmp/intune", env=AGENT_ENV)


def test_preinstall_passes_on_a_supported_intel_mac(mac_root, demo_build):
    _prepared(mac_root)
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 0, result.stderr
    assert "macOS 14.5 (at least 11.0)" in result.stdout
    assert "Intel Mac: Rosetta 2 not needed" in result.stdout
    assert not mac_root.calls("softwareupdate")


def test_preinstall_refuses_an_older_macos(mac_root, demo_build):
    _prepared(mac_root, os_version="10.15.7")
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 1
    assert "macOS 10.15.7 is older than 11.0" in result.stderr


@pytest.mark.parametrize("version", ["11.0", "11", "12.7.6", "15.0.1", "26.0"])
def test_preinstall_accepts_versions_at_or_above_the_minimum(mac_root, demo_build, version):
    _prepared(mac_root, os_version=version)
    assert _run(mac_root, demo_build, "preinstall.sh").returncode == 0


def test_preinstall_refuses_too_little_free_space(mac_root, demo_build):
    _prepared(mac_root, free_kb=1000)
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 1
    assert "only 1000 KiB free on /" in result.stderr


def test_preinstall_installs_rosetta_on_apple_silicon(mac_root, demo_build):
    _prepared(mac_root, arm64=True)
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 0, result.stderr
    assert [c.args for c in mac_root.calls("softwareupdate")] == [("--install-rosetta", "--agree-to-license")]
    assert mac_root.exists(ROSETTA)
    assert "Rosetta 2 installed" in result.stdout


def test_preinstall_skips_the_install_when_rosetta_cannot_be_installed(mac_root, demo_build):
    _prepared(mac_root, arm64=True)
    mac_root.respond("softwareupdate", "--install-rosetta", err="No network", rc=1)
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 1
    assert "Rosetta 2 could not be installed (softwareupdate exited 1: No network)" in result.stderr


def test_preinstall_leaves_installed_rosetta_alone(mac_root, demo_build):
    _prepared(mac_root, arm64=True)
    mac_root.write(ROSETTA, b"")
    result = _run(mac_root, demo_build, "preinstall.sh")
    assert result.returncode == 0
    assert not mac_root.calls("softwareupdate")


DOCTOR = "/Library/Application Support/fleetpkg/demo/doctor"


@pytest.mark.parametrize("doctor_rc", [0, 1])
def test_postinstall_runs_the_health_check_and_returns_its_verdict(mac_root, demo_build, doctor_rc):
    mac_root.daemon_loaded("com.1e.pkg.1E.Client")
    mac_root.write(DOCTOR, f"#!/bin/bash\necho \"doctor ran with $# args\"\nexit {doctor_rc}\n", 0o755)
    result = _run(mac_root, demo_build, "postinstall.sh")
    assert result.returncode == doctor_rc
    assert "doctor ran with 0 args" in result.stdout
    assert ("healthy" if doctor_rc == 0 else "unhealthy") in result.stdout
    assert ("launchctl", ("print", "system/com.1e.pkg.1E.Client")) in [(c.tool, c.args) for c in mac_root.calls()]


def test_postinstall_without_the_wrapper_says_so(mac_root, demo_build):
    result = _run(mac_root, demo_build, "postinstall.sh")
    assert result.returncode == 2
    assert "is missing" in result.stdout


def test_intune_files_are_unchanged_by_environment(demo_build):
    """The scripts carry no build-time paths of the build machine."""
    for name in ("preinstall.sh", "postinstall.sh"):
        text = (demo_build.root / "intune" / name).read_text()
        assert str(demo_build.folder) not in text and os.environ.get("HOME", "/root") + "/" not in text
