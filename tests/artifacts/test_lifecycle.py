"""A fleet over its life: rebuilds carry unchanged Macs forward byte for byte, say what changed
(changes.json, DEPLOY.md, the targets, `fleetpkg diff`) and never trust, leak from or damage a
previous build they should not.

Device certificates come from tests/fleetfactory.py (cryptography, not fleetpkg); builds are read
back with plistlib, bsdtar, openssl and sha256sum. SOURCE_DATE_EPOCH is unset: a signed profile
re-signed by a rebuild would differ in its signing time, so byte-identical ones were carried.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import plistlib
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, age_key_pair, require_tool
from tests.fleetfactory import CA, PASSWORD, make_ca, make_device, write_pem, write_pfx

AT = "2025-06-01"
VENDOR = "5.1.0.12"
HOSTS = ["mac-a.local", "MAC-B", "mac-c", "mac-d.local"]


def fleetpkg(*args, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SOURCE_DATE_EPOCH", None)
    result = subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], capture_output=True,
                            text=True, env=env, timeout=300, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"fleetpkg {args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@dataclass
class Fleet:
    root: Path
    ca: CA

    @property
    def config(self) -> Path:
        return self.root / "fleet.toml"

    @property
    def dist(self) -> Path:
        return self.root / "dist"

    def out(self, build: int = 1) -> Path:
        return self.dist / f"demo-{VENDOR}-{build}"

    def renew(self, host: str) -> None:
        key, cert = make_device(self.ca, host)
        write_pfx(self.root / "devices" / f"{host}.pfx", key, cert)

    def set_hosts(self, hosts) -> None:
        rows = ["hostname,pfx,serial"]
        for i, host in enumerate(hosts):
            if not (self.root / "devices" / f"{host}.pfx").exists():
                self.renew(host)
            rows.append(f"{host},devices/{host}.pfx,{'' if i == 1 else f'C02T{sum(map(ord, host)):07d}'}")
        (self.root / "devices.csv").write_text("\n".join(rows) + "\n")

    def edit(self, old: str, new: str) -> None:
        text = self.config.read_text()
        assert old in text, old
        self.config.write_text(text.replace(old, new))

    def build(self, *args, check: bool = True) -> subprocess.CompletedProcess:
        return fleetpkg("build", self.config, "--at", AT, "--jobs", "1", *args, check=check)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Fleet:
    """The demo fleet's vendor stand-in and signing identities, with a CA and devices of our own."""
    from builder.fleet.demo import write_demo

    root = tmp_path_factory.mktemp("life") / "fleet"
    write_demo(root)
    ca = make_ca()
    write_pem(root / "pki" / "demo-root.cer", ca.cert)
    (root / "pki" / "demo-issuing.cer").unlink()
    (root / "secrets" / "pfx-password.txt").write_text(PASSWORD + "\n")
    for old in (root / "devices").iterdir():
        old.unlink()
    fleet = Fleet(root, ca)
    fleet.edit('certificates = ["pki/demo-root.cer", "pki/demo-issuing.cer"]', 'certificates = ["pki/demo-root.cer"]')
    fleet.edit('name = "1E-Client" }', 'name = "1E-Client", identities = true }')  # Munki identity items too
    fleet.set_hosts(HOSTS)
    return fleet


@pytest.fixture
def fleet(template, tmp_path) -> Fleet:
    root = tmp_path / "fleet"
    shutil.copytree(template.root, root)
    return Fleet(root, template.ca)


# -- reading builds with independent tools ------------------------------------------------------------

def changes(out: Path) -> dict:
    return json.loads((out / "changes.json").read_text())


def profile_identity(path: Path) -> tuple[bytes, str]:
    payloads = plistlib.loads(path.read_bytes())["PayloadContent"]
    (p12,) = [p for p in payloads if p["PayloadType"] == "com.apple.security.pkcs12"]
    return p12["PayloadContent"], p12["Password"]


def package_identity(pkg: Path, host: str) -> tuple[bytes, str]:
    bsdtar = require_tool("bsdtar")
    scripts = subprocess.run([bsdtar, "-xOf", str(pkg), "Scripts"], capture_output=True, check=True).stdout

    def member(name: str) -> bytes:
        return subprocess.run([bsdtar, "-xOf", "-", f"./{name}"], input=scripts, capture_output=True,
                              check=True).stdout
    return member(f"{host}.p12"), member("identity.pass").decode().strip()


def openssl_opens(p12: bytes, password: str, tmp: Path) -> str:
    """The subject openssl reads from the PKCS#12 with its password."""
    path = tmp / "id.p12"
    path.write_bytes(p12)
    result = subprocess.run([require_tool("openssl"), "pkcs12", "-in", str(path), "-nokeys", "-clcerts",
                             "-passin", f"pass:{password}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return re.search(r"subject=(.*)", result.stdout).group(1)


def signed_content(path: Path, tmp: Path) -> bytes:
    out = tmp / "content.xml"
    result = subprocess.run([require_tool("openssl"), "cms", "-verify", "-noverify", "-inform", "DER", "-in",
                             str(path), "-out", str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out.read_bytes()


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def sums_ok(out: Path) -> bool:
    return subprocess.run([require_tool("sha256sum"), "-c", "--quiet", "SHA256SUMS"], cwd=out,
                          capture_output=True).returncode == 0


def device_files(out: Path, host: str) -> dict[str, bytes]:
    return {rel: (out / rel).read_bytes() for rel in (
        f"profiles/devices/{host}.mobileconfig", f"profiles/devices/{host}.signed.mobileconfig",
        f"jamf/profiles/devices/{host}.mobileconfig", f"intune/profiles/devices/{host}.mobileconfig")}


# -- one sealed identity per Mac ----------------------------------------------------------------------

def test_profile_and_identity_package_carry_the_same_pkcs12(fleet, tmp_path):
    fleet.build()
    out = fleet.out()
    for host in HOSTS:
        p12, password = profile_identity(out / "profiles" / "devices" / f"{host}.mobileconfig")
        assert package_identity(out / "identity" / f"{host}.pkg", host) == (p12, password)
        signed = signed_content(out / "profiles" / "devices" / f"{host}.signed.mobileconfig", tmp_path)
        assert profile_identity_from(signed) == (p12, password)
        assert f"CN = {host}" in openssl_opens(p12, password, tmp_path)
    passwords = {profile_identity(out / "profiles" / "devices" / f"{h}.mobileconfig")[1] for h in HOSTS}
    assert len(passwords) == len(HOSTS)  # each Mac its own secret


def profile_identity_from(xml: bytes) -> tuple[bytes, str]:
    payloads = plistlib.loads(xml)["PayloadContent"]
    (p12,) = [p for p in payloads if p["PayloadType"] == "com.apple.security.pkcs12"]
    return p12["PayloadContent"], p12["Password"]


# -- carrying forward -------------------------------------------------------------------------------

def test_unchanged_rebuild_gives_byte_identical_profiles_and_says_so(fleet, tmp_path):
    first = json.loads(fleet.build("--json").stdout)
    assert first["changes"]["previous"] is None and first["changes"]["wrapper"] == "new"
    before = snapshot(fleet.out())
    second = fleet.build("--json")  # into the same folder: it replaces the first build
    doc = changes(fleet.out())
    assert doc["previous"] == f"demo-{VENDOR}-1" and doc["fresh"] is False
    assert doc["wrapper"] == "unchanged"
    assert doc["devices"] == {"added": [], "changed": [], "removed": [], "unchanged": sorted(HOSTS)}
    assert doc["reasons"] == {}
    after = snapshot(fleet.out())
    for host in HOSTS:
        for rel in device_files(fleet.out(), host):
            assert after[rel] == before[rel], rel
        assert after[f"identity/{host}.pkg"] == before[f"identity/{host}.pkg"]  # same version: carried
    # every file but the notes of what changed is the same (scoping.csv: "upload" became "keep")
    assert doc["artifacts"]["changed"] == ["jamf/scoping.csv"]
    assert doc["artifacts"]["added"] == doc["artifacts"]["removed"] == []
    assert json.loads(second.stdout)["changes"]["devices"]["unchanged"] == sorted(HOSTS)
    assert sums_ok(fleet.out())
    # and a third build, with nothing new to say, changes no file at all
    fleet.build()
    assert changes(fleet.out())["artifacts"]["changed"] == []


def test_renewed_added_removed_macs_and_a_bumped_build(fleet, tmp_path):
    fleet.build()
    first = fleet.out(1)
    fleet.renew("MAC-B")
    fleet.set_hosts(["mac-a.local", "MAC-B", "mac-c", "mac-e"])  # mac-d.local leaves, mac-e joins
    fleet.edit("build = 1", "build = 2")
    result = fleet.build()
    second = fleet.out(2)
    assert first.is_dir()  # an earlier version's folder stays
    doc = changes(second)
    assert doc["previous"] == f"demo-{VENDOR}-1"
    assert doc["devices"] == {"added": ["mac-e"], "changed": ["MAC-B"], "removed": ["mac-d.local"],
                              "unchanged": ["mac-a.local", "mac-c"]}
    assert doc["reasons"] == {"MAC-B": ["pfx changed"], "mac-d.local": ["not in the inventory"]}
    assert doc["wrapper"] == "changed"  # its version names the new build
    for host in ("mac-a.local", "mac-c"):
        old, new = device_files(first, host), device_files(second, host)
        assert old == new, host
        # the identity package names the new version, around the very same sealed identity
        old_pkg, new_pkg = first / "identity" / f"{host}.pkg", second / "identity" / f"{host}.pkg"
        assert old_pkg.read_bytes() != new_pkg.read_bytes()
        assert package_identity(new_pkg, host) == package_identity(old_pkg, host) == \
            profile_identity(second / "profiles" / "devices" / f"{host}.mobileconfig")
    renewed = profile_identity(second / "profiles" / "devices" / "MAC-B.mobileconfig")
    assert renewed != profile_identity(first / "profiles" / "devices" / "MAC-B.mobileconfig")
    assert package_identity(second / "identity" / "MAC-B.pkg", "MAC-B") == renewed
    assert not (second / "profiles" / "devices" / "mac-d.local.mobileconfig").exists()
    assert "changes: since demo-5.1.0.12-1: 1 added, 1 changed, 1 removed, 2 unchanged" in result.stdout

    # `fleetpkg diff` reads the two manifests and agrees
    diff = json.loads(fleetpkg("diff", first, second, "--json").stdout)
    assert diff == doc
    text = fleetpkg("diff", first, second).stdout
    assert "  changed  MAC-B: pfx changed" in text and "  removed  mac-d.local: not in the inventory" in text
    assert "  added    mac-e" in text and "devices: 1 added, 1 changed, 1 removed, 2 unchanged" in text

    # each target says the same in its own terms
    with open(second / "jamf" / "scoping.csv", newline="") as fh:
        actions = {row["hostname"]: (row["action"], row["profile"]) for row in csv.DictReader(fh)}
    assert actions == {"mac-a.local": ("keep", "profiles/devices/mac-a.local.mobileconfig"),
                       "MAC-B": ("replace", "profiles/devices/MAC-B.mobileconfig"),
                       "mac-c": ("keep", "profiles/devices/mac-c.mobileconfig"),
                       "mac-e": ("upload", "profiles/devices/mac-e.mobileconfig"),
                       "mac-d.local": ("delete", "")}
    infos = {p.name: plistlib.loads(p.read_bytes())
             for p in (second / "munki" / "pkgsinfo" / "demo" / "identity").glob("*.plist")}
    notes = {doc["name"].removeprefix("1E-Client-identity-"): doc.get("notes") for doc in infos.values()}
    assert notes["mac-a.local"] is None and notes["mac-c"] is None
    assert "pfx changed" in notes["MAC-B"] and "new to the fleet" in notes["mac-e"]
    intune = (second / "intune" / "CHANGES.md").read_text()
    assert "`profiles/devices/mac-e.mobileconfig`" in intune.split("Create a custom profile")[1].split("\n- ")[0]
    assert "`profiles/devices/MAC-B.mobileconfig` (pfx changed)" in intune
    assert "  - mac-d.local" in intune.split("Delete the custom profile")[1]
    deploy = (second / "DEPLOY.md").read_text()
    what = deploy.split("## What changed")[1].split("\n## ")[0]
    assert "`demo-5.1.0.12-1`" in what and "**changed**: upload `demo-1E-Client-5.1.0.12-2.pkg` again" in what
    assert "- New Macs (1): upload their identity profiles: mac-e" in what
    assert "- New identity (1): replace their identity profiles" in what and "MAC-B (pfx changed)" in what
    assert "- Removed (1): delete their identity profiles from the MDM: mac-d.local" in what
    assert "- Unchanged (2)" in what
    assert deploy.index("## What changed") < deploy.index("## What is in this build")
    assert "`1E-Client-identity-mac-d.local`" in deploy.split("## Munki")[1]
    assert "`replace` (1)" in deploy.split("## Jamf Pro")[1]
    assert sums_ok(second)


def test_fresh_re_mints_every_identity_and_says_so(fleet):
    fleet.build()
    before = {h: profile_identity(fleet.out() / "profiles" / "devices" / f"{h}.mobileconfig") for h in HOSTS}
    fleet.build("--fresh")
    doc = changes(fleet.out())
    assert doc["fresh"] is True and doc["previous"] == f"demo-{VENDOR}-1"
    assert doc["devices"]["changed"] == sorted(HOSTS) and doc["devices"]["unchanged"] == []
    assert all(doc["reasons"][h] == ["re-minted (--fresh)"] for h in HOSTS)
    assert doc["wrapper"] == "unchanged"  # it holds no secret: carried forward all the same
    for host in HOSTS:
        after = profile_identity(fleet.out() / "profiles" / "devices" / f"{host}.mobileconfig")
        assert after[0] != before[host][0] and after[1] != before[host][1]
        assert package_identity(fleet.out() / "identity" / f"{host}.pkg", host) == after
    assert "rebuilt with `--fresh`" in (fleet.out() / "DEPLOY.md").read_text()


def test_inputs_that_change_every_mac_give_their_reason(fleet):
    fleet.build()
    before = device_files(fleet.out(), "mac-c")
    fleet.edit('organization = "fleetpkg demo"', 'organization = "fleetpkg demo 2"')
    fleet.build()
    doc = changes(fleet.out())
    assert doc["devices"]["changed"] == sorted(HOSTS)
    assert all(doc["reasons"][h] == ["organization changed"] for h in HOSTS)
    assert device_files(fleet.out(), "mac-c") != before


def test_previous_names_a_build_elsewhere(fleet, tmp_path):
    fleet.build()
    elsewhere = tmp_path / "other-dist"
    fleet.build("-o", elsewhere, "--previous", fleet.out())
    out = elsewhere / f"demo-{VENDOR}-1"
    assert changes(out)["devices"]["unchanged"] == sorted(HOSTS)
    for host in HOSTS:
        assert device_files(out, host) == device_files(fleet.out(), host)


def test_newest_earlier_build_of_the_fleet_is_the_previous_one(fleet):
    fleet.build()
    fleet.edit("build = 1", "build = 2")
    fleet.build()
    fleet.renew("mac-c")
    fleet.edit("build = 2", "build = 3")
    fleet.build()
    assert changes(fleet.out(3))["previous"] == f"demo-{VENDOR}-2"
    assert changes(fleet.out(3))["devices"]["changed"] == ["mac-c"]


def test_carried_macs_are_judged_at_the_new_check_time(fleet):
    fleet.build()
    later = fleet.build("--at", "2026-05-10", "--json")  # the certificates end on 2026-05-31
    doc = json.loads(later.stdout)
    assert doc["changes"]["devices"]["unchanged"] == sorted(HOSTS)
    for device in doc["devices"]:
        assert [(f["rule"], f["severity"]) for f in device["findings"]] == [("validity", "warning")]
        assert "in 21 days" in device["findings"][0]["message"]
    expired = fleet.build("--at", "2026-06-10", check=False)
    assert expired.returncode == 1 and "validity" in expired.stderr and "expired" in expired.stderr


# -- bad input, nothing lost ------------------------------------------------------------------------

def _rebuild_distrusting(fleet: Fleet, damage, reason: str, *extra) -> dict:
    """Build, damage the build, rebuild elsewhere from it: one note line, every Mac re-minted."""
    fleet.build()
    damage(fleet.out())
    before = snapshot(fleet.out())
    other = fleet.root / "second"
    result = fleet.build("-o", other, "--previous", fleet.out(), *extra)
    notes = [line for line in result.stderr.splitlines() if "previous build" in line]
    assert len(notes) == 1 and reason in notes[0], result.stderr
    assert "Traceback" not in result.stderr
    assert snapshot(fleet.out()) == before  # the previous build is left as it was
    out = other / f"demo-{VENDOR}-1"
    assert sums_ok(out)
    old_secrets = {p12[1] for p12 in map(_try_identity, (fleet.out() / "profiles" / "devices").glob("*.mobileconfig"))
                   if p12}
    for host in HOSTS:  # nothing of the previous build leaked in
        p12, password = profile_identity(out / "profiles" / "devices" / f"{host}.mobileconfig")
        assert password not in old_secrets
        assert package_identity(out / "identity" / f"{host}.pkg", host) == (p12, password)
    return changes(out)


def _try_identity(path: Path):
    try:
        return profile_identity(path)
    except Exception:
        return None


def test_damaged_previous_build_is_not_trusted(fleet):
    def damage(out):
        path = out / "profiles" / "devices" / "mac-c.mobileconfig"
        data = bytearray(path.read_bytes())
        data[data.index(b"<string>") + 8] ^= 1  # same size, other bytes
        path.write_bytes(bytes(data))
    doc = _rebuild_distrusting(fleet, damage, "does not match its manifest.json digest")
    assert doc["devices"]["changed"] == sorted(HOSTS)
    assert doc["reasons"]["mac-a.local"] == ["re-minted (previous build not trusted)"]
    assert "profiles/devices/mac-c.mobileconfig" in doc["note"]


def test_partial_previous_build_is_not_trusted(fleet):
    doc = _rebuild_distrusting(fleet, lambda out: (out / "jamf" / "scoping.csv").unlink(), "jamf/scoping.csv is missing")
    assert doc["devices"]["changed"] == sorted(HOSTS)


def test_previous_build_whose_sums_disagree_is_not_trusted(fleet):
    def damage(out):
        sums = (out / "SHA256SUMS").read_text().splitlines()
        (out / "SHA256SUMS").write_text("\n".join(sums[1:]) + "\n")
    _rebuild_distrusting(fleet, damage, "SHA256SUMS lists")


def test_the_trust_check_in_worker_processes_finds_what_one_process_finds(tmp_path, monkeypatch):
    import multiprocessing

    from builder.artifacts import previous
    from builder.artifacts.pipeline import check_previous_files

    root = tmp_path / "build"
    items = []  # as a build's: each profile with two hard-linked copies (jamf/, intune/), manifest order
    for folder in ("intune", "jamf", "profiles"):
        (root / folder).mkdir(parents=True)
    for i in range(400):
        data = f"profile {i:04d} ".encode() * 40
        profile = _write(root / "profiles" / f"mac{i:04d}.mobileconfig", data)
        os.link(profile, root / "jamf" / profile.name)
        os.link(profile, root / "intune" / profile.name)
        for folder in ("intune", "jamf", "profiles"):
            items.append((f"{folder}/mac{i:04d}.mobileconfig", hashlib.sha256(data).hexdigest(), len(data)))
    items.sort()
    damaged = bytearray((root / "profiles" / "mac0007.mobileconfig").read_bytes())
    damaged[3] ^= 1
    (root / "profiles" / "mac0007.mobileconfig").write_bytes(bytes(damaged))  # through all three links
    (root / "jamf" / "mac0100.mobileconfig").unlink()
    replaced = root / "intune" / "mac0200.mobileconfig"  # no longer a link: other bytes, the same size
    replaced.unlink()
    _write(replaced, bytes(len((root / "profiles" / "mac0200.mobileconfig").read_bytes())))
    with open(root / "profiles" / "mac0300.mobileconfig", "ab") as fh:
        fh.write(b"+")
    expected = ["intune/mac0007.mobileconfig does not match its manifest.json digest",
                "intune/mac0200.mobileconfig does not match its manifest.json digest",
                "intune/mac0300.mobileconfig is 521 bytes, manifest.json says 520",
                "jamf/mac0007.mobileconfig does not match its manifest.json digest",
                "jamf/mac0100.mobileconfig is missing",
                "jamf/mac0300.mobileconfig is 521 bytes, manifest.json says 520",
                "profiles/mac0007.mobileconfig does not match its manifest.json digest",
                "profiles/mac0300.mobileconfig is 521 bytes, manifest.json says 520"]
    log = tmp_path / "hashed"
    sha256 = previous._sha256

    def counted(path: str) -> str:
        with open(log, "a") as fh:  # O_APPEND: one line per hash, from every (forked) worker
            fh.write(path + "\n")
        return sha256(path)
    monkeypatch.setattr(previous, "_sha256", counted)
    assert previous.check_files(root, items) == expected
    inodes = 400 - 1 + 1  # each inode once: mac0300's was judged by its size, mac0200's copy is one more
    assert len(log.read_text().splitlines()) == inodes
    log.unlink()
    assert check_previous_files(root, items, 2) == expected
    if multiprocessing.get_start_method() == "fork":  # the workers run the patched function
        assert len(log.read_text().splitlines()) == inodes
    spawn = multiprocessing.get_context("spawn")  # as on macOS: the items are pickled, not inherited
    monkeypatch.setattr(multiprocessing, "get_context", lambda method=None: spawn if method is None else
                        multiprocessing.context._default_context.get_context(method))
    assert check_previous_files(root, items, 2) == expected


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


MANY = [f"mac{i:03d}" for i in range(130)]  # 8 files a Mac: over POOLED_CHECK_FILES


@pytest.fixture(scope="module")
def large_template(template, tmp_path_factory) -> Fleet:
    from builder.artifacts.pipeline import POOLED_CHECK_FILES

    large = Fleet(tmp_path_factory.mktemp("large") / "fleet", template.ca)
    shutil.copytree(template.root, large.root)
    large.set_hosts(MANY)
    assert len(MANY) * 8 > POOLED_CHECK_FILES
    fleetpkg("build", large.config, "--at", AT, "--jobs", "2")
    return large


@pytest.fixture
def large(large_template, tmp_path) -> Fleet:
    root = tmp_path / "fleet"
    subprocess.run(["cp", "-a", str(large_template.root), str(root)], check=True)  # the build's hard links too
    return Fleet(root, large_template.ca)


def _damage_a_profile(out: Path) -> None:
    path = out / "profiles" / "devices" / "mac007.mobileconfig"
    data = bytearray(path.read_bytes())
    data[data.index(b"<string>") + 8] ^= 1  # same size, other bytes, in every hard link of it
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (_damage_a_profile, "intune/profiles/devices/mac007.mobileconfig does not match its manifest.json digest "
                        "and 2 more problem(s)"),
    (lambda out: (out / "profiles" / "devices" / "mac042.signed.mobileconfig").unlink(),  # a worker's link fails
     "profiles/devices/mac042.signed.mobileconfig is missing"),
    (lambda out: (out / f"demo-1E-Client-{VENDOR}-1.pkg").unlink(),  # the parent's link of the wrapper fails
     f"demo-1E-Client-{VENDOR}-1.pkg is missing"),
], ids=["altered", "missing-device-file", "missing-wrapper"])
def test_a_large_previous_build_checked_beside_the_rebuild_is_distrusted_as_before(large, damage, reason):
    """Over POOLED_CHECK_FILES files, workers link the previous files while they are hashed beside
    the build; the verdict comes before publishing, and a rejected build gives what the check done
    first gives (--jobs 1): every Mac re-minted, one note, nothing of it in the new build."""
    first = large.out()
    damage(first)
    before = snapshot(first)
    docs = {}
    for jobs in ("2", "1"):
        other = large.root / f"jobs-{jobs}"
        result = fleetpkg("build", large.config, "--at", AT, "--jobs", jobs, "-o", other, "--previous", first)
        notes = [line for line in result.stderr.splitlines() if "previous build" in line]
        assert len(notes) == 1 and f"not trusted ({reason})" in notes[0], result.stderr
        out = other / f"demo-{VENDOR}-1"
        assert sums_ok(out) and sorted(os.listdir(other)) == [out.name]
        for host in MANY:
            for rel in (f"profiles/devices/{host}.mobileconfig", f"identity/{host}.pkg"):
                assert not (first / rel).exists() or (out / rel).stat().st_ino != (first / rel).stat().st_ino
        docs[jobs] = changes(out)
    assert snapshot(first) == before  # the previous build is left as it was
    assert docs["2"] == docs["1"]
    assert docs["2"]["devices"]["changed"] == sorted(MANY) and docs["2"]["note"] == reason


def _record(out: Path) -> None:
    """What the build's detached tidy-up does for a large build (5,000 files or more), here for a
    smaller one."""
    from builder.artifacts import previous, verified

    time.sleep(verified.RACY_NS / 1e9 * 1.5)
    assert previous.record_build(out)


def test_a_recorded_previous_build_altered_after_its_record_is_distrusted(large):
    """The record lets the trust check skip hashing untouched files; a file written since is still
    hashed and caught, with the same verdict as without a record."""
    first = large.out()
    _record(first)
    _damage_a_profile(first)
    other = large.root / "other"
    result = fleetpkg("build", large.config, "--at", AT, "--jobs", "2", "-o", other, "--previous", first)
    reason = "intune/profiles/devices/mac007.mobileconfig does not match its manifest.json digest and 2 more problem(s)"
    assert f"not trusted ({reason})" in result.stderr
    assert changes(other / f"demo-{VENDOR}-1")["devices"]["changed"] == sorted(MANY)


def test_a_recorded_previous_build_is_carried(large):
    _record(large.out())
    fleetpkg("build", large.config, "--at", AT, "--jobs", "2")
    doc = changes(large.out())
    assert doc["devices"]["unchanged"] == sorted(MANY) and doc["wrapper"] == "unchanged"
    assert sums_ok(large.out())


def test_a_large_previous_build_checked_beside_the_rebuild_is_carried(large):
    fleetpkg("build", large.config, "--at", AT, "--jobs", "2")
    doc = changes(large.out())
    assert doc["devices"]["unchanged"] == sorted(MANY) and doc["wrapper"] == "unchanged"
    assert sums_ok(large.out())


def test_previous_build_of_an_older_fleetpkg_is_not_trusted(fleet):
    def damage(out):
        manifest = json.loads((out / "manifest.json").read_text())
        for key in ("format", "devices", "inputs", "identity_inputs", "wrapper"):
            manifest.pop(key)
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    doc = _rebuild_distrusting(fleet, damage, "made by an older fleetpkg (manifest format 1")
    assert doc["devices"]["changed"] == sorted(HOSTS)
    assert doc["reasons"]["mac-c"] == ["made by an older fleetpkg (no inputs recorded)"]


def test_unreadable_previous_build_gives_a_full_build(fleet):
    doc = _rebuild_distrusting(fleet, lambda out: (out / "manifest.json").write_bytes(b"\x00{not json"),
                               "cannot read its manifest.json")
    assert doc["previous"] is None and doc["devices"]["added"] == sorted(HOSTS)


def test_previous_build_of_another_fleet_gives_a_full_build(fleet, tmp_path):
    other = Fleet(tmp_path / "other", fleet.ca)
    shutil.copytree(fleet.root, other.root)
    other.edit('name = "demo"', 'name = "demo-two"')
    other.build()
    result = fleet.build("--previous", other.dist / f"demo-two-{VENDOR}-1")
    lines = [line for line in result.stderr.splitlines() if "previous build" in line]
    assert len(lines) == 1 and "is a build of fleet 'demo-two', not 'demo'" in lines[0]
    doc = changes(fleet.out())
    assert doc["previous"] is None and doc["devices"]["added"] == sorted(HOSTS)
    # found by itself, a folder of another fleet in the same output folder is passed over silently
    shutil.copytree(other.dist / f"demo-two-{VENDOR}-1", fleet.dist / f"demo-two-{VENDOR}-1")
    again = fleet.build()
    assert "previous build" not in again.stderr
    assert changes(fleet.out())["devices"]["unchanged"] == sorted(HOSTS)


def test_missing_previous_build_gives_a_full_build(fleet):
    result = fleet.build("--previous", fleet.root / "no-such-build")
    lines = [line for line in result.stderr.splitlines() if "previous build" in line]
    assert len(lines) == 1 and "no-such-build" in lines[0] and "Traceback" not in result.stderr
    assert changes(fleet.out())["previous"] is None


def test_killing_a_rebuild_at_any_moment_leaves_the_previous_build(fleet):
    from builder.artifacts.dist import remove_stale

    fleet.build()
    out = fleet.out()
    before = snapshot(out)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SOURCE_DATE_EPOCH", None)
    rng = random.Random(12)
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
        fleet.renew("mac-c")  # a real change, so the rebuild writes as well as links
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "build", str(fleet.config), "--at", AT,
                                 "--jobs", "1", "--fresh"], env=env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, 1.6))
        proc.send_signal(sig)
        proc.wait(timeout=60)
        remove_stale(fleet.dist)  # what the next build does first: a build moved aside is put back
        assert sorted(os.listdir(fleet.dist)) == [out.name]
        assert sums_ok(out)  # whole: the previous build, or the new one if the kill came after it was published
        now = snapshot(out)
        if now != before:
            assert changes(out)["fresh"] is True and changes(out)["devices"]["changed"] == sorted(HOSTS)
            before = now


def test_a_build_moved_aside_by_a_killed_publish_is_put_back_and_used(fleet):
    fleet.build()
    out = fleet.out()
    before = snapshot(out)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out.rename(fleet.dist / f".fleetpkg-replaced-{out.name}-{dead}")  # SIGKILL between the two renames
    fleet.build()
    assert changes(out)["devices"]["unchanged"] == sorted(HOSTS)
    for host in HOSTS:
        assert (out / "profiles" / "devices" / f"{host}.mobileconfig").read_bytes() == \
            before[f"profiles/devices/{host}.mobileconfig"]
    assert sorted(os.listdir(fleet.dist)) == [out.name]


def test_workers_started_by_spawn_as_on_macos_carry_every_mac(fleet):
    spawn = ("import multiprocessing, sys; multiprocessing.set_start_method('spawn'); "
             "from builder.cli import main; main()")  # workers get their jobs pickled, not inherited
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("SOURCE_DATE_EPOCH", None)
    for _ in range(2):
        subprocess.run([sys.executable, "-c", spawn, "build", str(fleet.config), "--at", AT, "--jobs", "2"],
                       check=True, capture_output=True, env=env, timeout=300, cwd=REPO)
    doc = changes(fleet.out())
    assert doc["devices"]["unchanged"] == sorted(HOSTS) and doc["wrapper"] == "unchanged"
    assert sums_ok(fleet.out())


def test_carried_files_are_links_and_rebuilds_never_write_through_them(fleet):
    fleet.build()
    other = fleet.root / "second"
    fleet.build("-o", other)
    fleet.build("-o", other, "--previous", fleet.out())
    first, second = fleet.out(), other / f"demo-{VENDOR}-1"
    a = (first / "profiles" / "devices" / "mac-c.mobileconfig").stat()
    b = (second / "profiles" / "devices" / "mac-c.mobileconfig").stat()
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev) and a.st_mode & 0o777 == 0o600
    pkginfo = f"munki/pkgsinfo/demo/identity/1E-Client-identity-mac-c-{VENDOR}-1.plist"
    assert (first / pkginfo).stat().st_ino == (second / pkginfo).stat().st_ino  # the same document: linked
    fleet.renew("mac-c")
    fleet.build("-o", other, "--previous", fleet.out())  # re-mints mac-c over the linked name
    assert sums_ok(first) and sums_ok(second)
    assert (first / "profiles" / "devices" / "mac-c.mobileconfig").stat().st_ino == a.st_ino


def test_build_json_reports_the_changes(fleet):
    fleet.build()
    doc = json.loads(fleet.build("--json").stdout)
    summary = doc["changes"]
    assert summary["devices"]["unchanged"] == sorted(HOSTS)
    assert set(summary["artifacts"]) == {"added", "changed", "removed", "unchanged"}
    assert all(isinstance(v, int) for v in summary["artifacts"].values())
    manifest = json.loads((fleet.out() / "manifest.json").read_text())
    assert manifest["format"] == 2
    records = {r["hostname"]: r for r in manifest["devices"]}
    assert sorted(records) == sorted(HOSTS)
    for host, record in records.items():
        pfx = (fleet.root / "devices" / f"{host}.pfx").read_bytes()
        assert record["pfx"] == hashlib.sha256(pfx).hexdigest()
        assert re.fullmatch(r"[0-9a-f]{64}", record["inputs"])
        text = json.dumps(record)
        password = profile_identity(fleet.out() / "profiles" / "devices" / f"{host}.mobileconfig")[1]
        assert password not in text and PASSWORD not in text  # fingerprints, never secrets


# -- sealed builds (secrets.tar.age) ---------------------------------------------------------------

def test_a_sealed_rebuild_carries_the_same_identities_into_its_seal(fleet, tmp_path):
    key, recipient = age_key_pair(tmp_path)
    fleet.build()
    before = {h: device_files(fleet.out(), h) for h in HOSTS}
    fleet.build("--seal-to", recipient)
    doc = changes(fleet.out())
    assert doc["devices"]["unchanged"] == sorted(HOSTS) and doc["reasons"] == {}
    assert not (fleet.out() / "profiles" / "devices").exists()  # the secrets are only in the seal
    fleetpkg("unseal", fleet.out(), "--identity", key, "-o", tmp_path / "open")
    for host in HOSTS:
        for rel, data in before[host].items():
            assert (tmp_path / "open" / rel).read_bytes() == data, rel


def test_identities_sealed_in_the_previous_build_are_minted_anew_and_it_says_why(fleet, tmp_path):
    _key, recipient = age_key_pair(tmp_path)
    fleet.build("--seal-to", recipient)
    result = fleet.build()
    notes = [line for line in result.stderr.splitlines() if "previous build" in line]
    assert len(notes) == 1 and "is sealed" in notes[0], result.stderr
    doc = changes(fleet.out())
    assert doc["devices"]["changed"] == sorted(HOSTS) and doc["wrapper"] == "unchanged"
    assert all(doc["reasons"][h] == ["re-minted (previous build is sealed)"] for h in HOSTS)
    assert sums_ok(fleet.out())


_COLLECT_AFTER_BUILD = """
import gc, sys
gc.disable()  # from the start to the count: no collection in between may hide a cycle
from builder.cli import main
try:
    main(sys.argv[1:])
except SystemExit as exc:
    assert not exc.code, exc.code
print(gc.collect())
"""


def test_a_build_makes_no_reference_cycles_per_mac(fleet):
    """The build's own process runs without the cyclic collector (pipeline._forking): a Mac's
    work (here in that process: --jobs 1, fresh and carried) must leave nothing for it, or a
    large fleet's build would grow. Objects in cycles found after builds of 4 and 44 Macs."""
    found = {}
    for hosts in (HOSTS, HOSTS + [f"mac{i:02d}" for i in range(40)]):
        fleet.set_hosts(hosts)
        env = dict(os.environ, PYTHONPATH=str(REPO))
        for run in ("fresh", "carried"):
            result = subprocess.run([sys.executable, "-c", _COLLECT_AFTER_BUILD, "build", str(fleet.config), "--at",
                                     AT, "--jobs", "1", "-o", str(fleet.root / f"dist-{len(hosts)}")],
                                    capture_output=True, text=True, env=env, timeout=300, cwd=REPO)
            assert result.returncode == 0, result.stderr
            found[len(hosts), run] = int(result.stdout.split()[-1])
    assert found[44, "fresh"] - found[4, "fresh"] < 10, found
    assert found[44, "carried"] - found[4, "carried"] < 10, found


def test_a_carried_secret_file_opened_up_in_the_previous_build_is_copied_private(fleet):
    """A previous build's secret file someone made readable by others (chmod 644) still carries its
    Mac forward (same bytes), but as a new 0600 file: a hard link would share the open mode."""
    fleet.build()
    first = fleet.out()
    opened = first / "profiles" / "devices" / "mac-c.mobileconfig"
    opened.chmod(0o644)
    other = fleet.root / "other"
    fleet.build("-o", other, "--previous", first)
    out = other / f"demo-{VENDOR}-1"
    assert changes(out)["devices"]["unchanged"] == sorted(HOSTS)
    new = out / "profiles" / "devices" / "mac-c.mobileconfig"
    assert new.read_bytes() == opened.read_bytes() and new.stat().st_ino != opened.stat().st_ino
    assert new.stat().st_mode & 0o777 == 0o600 and opened.stat().st_mode & 0o777 == 0o644
    for copy in ("jamf/profiles/devices/mac-c.mobileconfig", "intune/profiles/devices/mac-c.mobileconfig"):
        assert (out / copy).stat().st_mode & 0o777 == 0o600
    kept = out / "profiles" / "devices" / "mac-a.local.mobileconfig"  # untouched: still a link
    assert kept.stat().st_ino == (first / "profiles" / "devices" / "mac-a.local.mobileconfig").stat().st_ino
    assert sums_ok(out)
