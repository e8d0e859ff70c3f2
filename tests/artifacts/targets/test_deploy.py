"""DEPLOY.md and write_targets as a whole: the artifact table covers the manifest, the text says
what the issue requires, disabled targets write nothing."""

from __future__ import annotations

import re

import pytest

from builder.fleet.config import MunkiTarget, Targets
from builder.artifacts.targets import write_targets
from builder.artifacts.targets.deploy import artifact_rows
from tests.artifacts.targets.conftest import copy_demo_fleet, find_build, fleetpkg
from tests.artifacts.targets.fakebuild import make_build, with_targets

TABLE_ROW = re.compile(r"^\| `([^`]+)` \| (\d+) \| (.*) \| (no|\*\*yes\*\* \(0600\)) \| (.*) \|$")


def _table(text: str) -> dict[str, tuple[int, bool]]:
    rows = {}
    for line in text.splitlines():
        m = TABLE_ROW.match(line)
        if m:
            rows.setdefault(m.group(1), []).append((int(m.group(2)), m.group(4) != "no"))
    return rows


def test_demo_has_every_target_folder_and_deploy_md(demo_build):
    for name in ("munki", "jamf", "intune"):
        assert (demo_build.root / name).is_dir()
    assert (demo_build.root / "DEPLOY.md").is_file()
    assert demo_build.artifacts()["DEPLOY.md"]["kind"] == "deploy-notes"


def test_table_covers_every_artifact_of_the_manifest(demo_build):
    text = (demo_build.root / "DEPLOY.md").read_text()
    table = _table(text)
    manifest = demo_build.artifacts()
    hosts = ["MAC01.local", "MAC02.local", "mac03.local"]
    counted: dict[str, list] = {}
    for path, art in manifest.items():
        candidates = [path] + [path.replace(h, "<hostname>") for h in hosts if h in path]
        pattern = next((c for c in candidates if c in table), None)
        assert pattern is not None, f"{path} is not in DEPLOY.md's table"
        counted.setdefault(pattern, []).append(art)
    for pattern, arts in counted.items():
        assert sum(n for n, _ in table[pattern]) == len(arts), pattern
        assert any(secret for _, secret in table[pattern]) == any(a["secret"] for a in arts), pattern
    for final in ("DEPLOY.md", "manifest.json", "SHA256SUMS"):
        assert final in table


@pytest.mark.parametrize("needle", [
    'sudo "/Library/Application Support/fleetpkg/demo/doctor"',
    'sudo "/Library/Application Support/fleetpkg/demo/uninstall.sh"',
    "Privacy & Security › Profiles** on macOS 13–14",
    "General › Device Management** on macOS 15",
    "`AllowAllAppsAccess` = true",
    "**believed but not yet confirmed on a Mac**",
    "Since macOS 11 no script or package can mark a certificate as\n  trusted",
    "profiles/login-items.mobileconfig",
    "profiles/devices/<hostname>.signed.mobileconfig",
    "## Jamf Pro", "## Microsoft Intune", "## Munki", "## Manual install", "## Verify", "## Uninstall",
    "`Switch` = `tachyon.demo.invalid:4000`",
])
def test_deploy_md_says_what_the_admin_needs(demo_build, needle):
    assert needle in (demo_build.root / "DEPLOY.md").read_text()


def test_skipped_devices_are_listed(tmp_path):
    info, stage = make_build(tmp_path / "s", skipped=("bad-mac.local", "old-mac"))
    write_targets(info, stage)
    text = stage.path("DEPLOY.md").read_text()
    assert "**Skipped devices**" in text
    assert "- bad-mac.local\n- old-mac\n" in text


def test_no_skipped_section_when_none_were_skipped(demo_build):
    assert "Skipped devices" not in (demo_build.root / "DEPLOY.md").read_text()


def test_disabled_targets_write_nothing(tmp_path):
    info, stage = make_build(tmp_path / "off", targets=Targets(None, False, False, False))
    before = {a.path for a in stage.artifacts}
    write_targets(info, stage)
    assert {a.path for a in stage.artifacts} - before == {"DEPLOY.md"}
    for name in ("munki", "jamf", "intune"):
        assert not (tmp_path / "off" / name).exists()
    text = stage.path("DEPLOY.md").read_text()
    for heading in ("## Jamf Pro", "## Microsoft Intune", "## Munki"):
        assert heading not in text
    assert "## Manual install" in text and "identity/<hostname>.pkg" not in text


@pytest.mark.parametrize("target", ["munki", "jamf", "intune"])
def test_each_target_alone(tmp_path, target):
    info, stage = make_build(tmp_path / target)
    off = {"munki": None, "jamf": False, "intune": False}
    info = with_targets(info, **{k: v for k, v in off.items() if k != target})
    write_targets(info, stage)
    written = {a.path.split("/", 1)[0] for a in stage.artifacts if "/" in a.path}
    assert target in written
    assert not written & (set(off) - {target})


def test_cli_build_with_every_target_off(demo_build, tmp_path):
    fleet = copy_demo_fleet(demo_build, tmp_path / "fleet")
    toml = fleet / "fleet.toml"
    text = toml.read_text()
    targets = text.index("[targets]")
    toml.write_text(text[:targets] + "[targets]\nmunki = false\njamf = false\nintune = false\nmanual = false\n")
    fleetpkg("build", str(toml), "--jobs", "1")
    root = find_build(fleet)
    for name in ("munki", "jamf", "intune", "identity"):
        assert not (root / name).exists(), name
    assert (root / "DEPLOY.md").is_file()


def test_rows_fold_per_device_files(tmp_path):
    info, stage = make_build(tmp_path / "r", hosts=(("mac01", None), ("mac01.local", None), ("web-7", "C1")),
                             targets=Targets(MunkiTarget(("production", "testing"), "1E-Client", identities=True)))
    write_targets(info, stage)
    rows = {(r.pattern, r.kind): r for r in artifact_rows(stage.artifacts, info)}
    assert rows[("profiles/devices/<hostname>.mobileconfig", "device-profile")].count == 3
    assert rows[("munki/pkgsinfo/acme-prod/identity/1E-Client-identity-<hostname>-5.1.0.12-3.plist",
                 "munki-identity-pkginfo")].count == 3
    assert rows[("munki/pkgs/acme-prod/identity/<hostname>-5.1.0.12-3.pkg", "munki-identity-pkg")].secret


def test_same_build_gives_byte_identical_target_files(tmp_path):
    outputs = []
    for n in ("a", "b"):
        info, stage = make_build(tmp_path / n, signed=True)
        write_targets(info, stage)
        outputs.append({a.path: stage.path(a.path).read_bytes() for a in stage.artifacts})
    assert outputs[0] == outputs[1]
    assert any(p.startswith("munki/pkgsinfo/") for p in outputs[0])


def test_fleetpkg_verify_accepts_the_demo_build_with_its_targets(demo_build):
    result = fleetpkg("verify", str(demo_build.root), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("valid")


def test_logout_need_reaches_deploy_md_and_munki(tmp_path):
    """A vendor component asking for a logout (fleetpkg inspect says which): DEPLOY.md says so in words,
    Munki's pkginfo carries it as RestartAction (read back with plistlib)."""
    import plistlib
    from dataclasses import replace

    info, stage = make_build(tmp_path / "r")
    receipts = tuple(replace(r, on_conclusion="RequireLogout") if r.identifier == "com.1e.pkg.1E.Client" else r
                     for r in info.receipts)
    info = replace(info, receipts=receipts)
    write_targets(info, stage)
    text = stage.path("DEPLOY.md").read_text()
    assert "**Each Mac must log out after installing the wrapper**" in text
    assert "(`RequireLogout`, from `com.1e.pkg.1E.Client`)" in text
    pkginfo = next(a.path for a in stage.artifacts if a.kind == "munki-pkginfo")
    assert plistlib.loads(stage.path(pkginfo).read_bytes())["RestartAction"] == "RequireLogout"
