"""Jamf Pro folder: copies byte-identical to the build's artifacts, signed copies verified by
openssl, the scoping CSV read back with the csv module, the extension attribute run for real."""

from __future__ import annotations

import csv
import stat
import subprocess

from builder.artifacts.targets import write_targets
from tests.conftest import require_tool
from tests.scripts.macroot import mac_root  # noqa: F401  (fixture)
from tests.artifacts.targets.conftest import inspect_json
from tests.artifacts.targets.fakebuild import make_build


def test_wrapper_and_profiles_are_exact_copies(demo_build):
    root, arts = demo_build.root, demo_build.artifacts()
    wrapper = next(root.glob("*.pkg"))
    copy = root / "jamf" / wrapper.name
    assert copy.read_bytes() == wrapper.read_bytes()
    assert arts[f"jamf/{wrapper.name}"]["signed"] == arts[wrapper.name]["signed"] is not None
    assert inspect_json(copy)["signed"] is True
    for path in sorted((root / "jamf" / "profiles").rglob("*.mobileconfig")):
        original = root / "profiles" / path.relative_to(root / "jamf" / "profiles")
        assert path.read_bytes() == original.read_bytes(), path
        rel, orig_rel = str(path.relative_to(root)), str(original.relative_to(root))
        assert arts[rel]["secret"] == arts[orig_rel]["secret"]
        assert arts[rel]["signed"] == arts[orig_rel]["signed"]
        assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE(original.stat().st_mode)


def test_signed_copies_verify_and_hold_the_unsigned_xml(demo_build, tmp_path):
    openssl = require_tool("openssl")
    signed = sorted((demo_build.root / "jamf" / "profiles").rglob("*.signed.mobileconfig"))
    assert len(signed) == 2 + 3
    for path in signed:
        out = tmp_path / "content.xml"
        result = subprocess.run([openssl, "cms", "-verify", "-noverify", "-inform", "DER", "-in", str(path),
                                 "-out", str(out)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        unsigned = path.with_name(path.name.replace(".signed.mobileconfig", ".mobileconfig"))
        assert out.read_bytes() == unsigned.read_bytes()


def test_scoping_csv_names_each_device_and_its_profile(demo_build):
    jamf = demo_build.root / "jamf"
    with open(jamf / "scoping.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["hostname", "serial", "profile", "action"]
    with open(demo_build.folder / "devices.csv", newline="") as fh:
        devices = list(csv.DictReader(fh))
    assert [(r[0], r[1]) for r in rows[1:]] == [(d["hostname"], d["serial"]) for d in devices]
    for hostname, _serial, profile, action in rows[1:]:
        assert (jamf / profile).is_file()
        assert profile == f"profiles/devices/{hostname}.mobileconfig"
        assert action == "upload"  # a first build: every profile is new to Jamf
    assert (jamf / "scoping.csv").read_bytes().count(b"\r") == 0


def test_extension_attribute_prints_one_result_line(demo_build, mac_root):
    script = demo_build.root / "jamf" / "extension-attribute.sh"
    assert stat.S_IMODE(script.stat().st_mode) == 0o755
    shellcheck = require_tool("shellcheck")
    assert subprocess.run([shellcheck, "-s", "bash", "-S", "style", str(script)]).returncode == 0
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin"}
    result = mac_root.run_script(script.read_text(), "ea.sh", [], folder="/private/tmp/jamf", env=env)
    assert result.returncode == 0 and result.stdout == "<result>not installed</result>\n"
    mac_root.write("/Library/Application Support/fleetpkg/demo/doctor",
                   '#!/bin/bash\n[ "$1" = --jamf-ea ] && echo "<result>unhealthy: daemon down</result>"\nexit 1\n',
                   0o755)
    result = mac_root.run_script(script.read_text(), "ea.sh", [], folder="/private/tmp/jamf", env=env)
    assert result.stdout == "<result>unhealthy: daemon down</result>\n"


def test_readme_tells_which_rendering_and_which_signature(demo_build, tmp_path):
    signed_readme = (demo_build.root / "jamf" / "README.md").read_text()
    assert "Signed by `CN=Developer ID Installer" in signed_readme
    assert "not usable" not in signed_readme
    assert "*.signed.mobileconfig" in signed_readme and "unsigned XML" in signed_readme
    assert "PreStage" in signed_readme and "InstallEnterpriseApplication" in signed_readme

    info, stage = make_build(tmp_path / "unsigned", signed=False)
    write_targets(info, stage)
    text = stage.path("jamf/README.md").read_text()
    assert "**Unsigned**" in text and text.count("not usable: sign the wrapper") == 2
    assert "no signed profiles" in text
    assert not list((tmp_path / "unsigned" / "jamf" / "profiles").rglob("*.signed.mobileconfig"))
