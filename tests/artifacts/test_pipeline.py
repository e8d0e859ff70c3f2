"""The main job end to end: `fleetpkg demo` / `fleetpkg build`, checked with bsdtar, openssl and plistlib."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import plistlib
import random
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, require_tool
from tests.fleetfactory import PRODUCT_DISTRIBUTION, PRODUCT_ORDER, vendor_product_standin, vendor_standin

EPOCH = "1767225600"  # 2026-01-01T00:00:00Z
VERSION = "5.1.0.12-1"


def fleetpkg(*args, env=None, check=False, timeout=300):
    full_env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, **(env or {}))
    result = subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], capture_output=True,
                            text=True, env=full_env, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"fleetpkg {args} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """One demo fleet, built once for the module (the build is what most tests read)."""
    folder = tmp_path_factory.mktemp("demo") / "fleet"
    result = fleetpkg("demo", folder, check=True)
    assert "Built demo" in result.stdout
    return folder


def build_dir(folder: Path) -> Path:
    return folder / "dist" / f"demo-{VERSION}"


def bsdtar_member(pkg: Path, member: str) -> bytes:
    return subprocess.run([require_tool("bsdtar"), "-xOf", str(pkg), member], check=True,
                          capture_output=True).stdout


def test_demo_writes_every_artifact(demo):
    out = build_dir(demo)
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for host in ("MAC01.local", "MAC02.local", "mac03.local"):
        assert f"profiles/devices/{host}.mobileconfig" in names
        assert f"profiles/devices/{host}.signed.mobileconfig" in names
        assert f"identity/{host}.pkg" in names
    assert {f"demo-1E-Client-{VERSION}.pkg", "manifest.json", "SHA256SUMS", "uninstall.sh",
            "profiles/trust.mobileconfig", "profiles/login-items.mobileconfig"} <= names
    manifest = json.loads((out / "manifest.json").read_text())
    by_path = {a["path"]: a for a in manifest["artifacts"]}
    for rel, art in by_path.items():
        mode = (out / rel).stat().st_mode & 0o777
        if art["secret"]:
            assert mode == 0o600, rel
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == art["sha256"]
    assert by_path["identity/MAC01.local.pkg"]["secret"] is True
    assert by_path["profiles/trust.mobileconfig"]["secret"] is False
    assert by_path[f"demo-1E-Client-{VERSION}.pkg"]["signed"].startswith("CN=Developer ID Installer")
    sums = subprocess.run([require_tool("sha256sum"), "-c", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert sums.returncode == 0, sums.stdout + sums.stderr


def test_wrapper_extracts_and_embeds_vendor_byte_for_byte(demo, tmp_path):
    wrapper = build_dir(demo) / f"demo-1E-Client-{VERSION}.pkg"
    vendor = demo / "vendor" / "1e.client-macOS_v5.1.0.12-standin.pkg"
    bsdtar = require_tool("bsdtar")
    subprocess.run([bsdtar, "-xf", str(wrapper), "-C", str(tmp_path)], check=True)
    for member in ("Bom", "Payload", "PackageInfo"):
        assert bsdtar_member(vendor, member) == (tmp_path / "com.1e.pkg.1E.Client.pkg" / member).read_bytes()
    # the configure payload installs the conf fragment, health check and uninstaller
    listing = subprocess.run(f"gunzip -c '{tmp_path}/configure.pkg/Payload' | cpio -it --quiet", shell=True,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    support = "./Library/Application Support/fleetpkg/demo"
    assert {f"{support}/doctor", f"{support}/fleet.conf", f"{support}/uninstall.sh"} <= set(listing)


def test_distribution_orders_choices_and_declares_architectures(demo):
    wrapper = build_dir(demo) / f"demo-1E-Client-{VERSION}.pkg"
    root = ET.fromstring(bsdtar_member(wrapper, "Distribution"))
    assert root.find("options").get("hostArchitectures") == "arm64,x86_64"
    outline = [line.get("choice") for line in root.find("choices-outline").iter("line")][1:]
    assert outline == ["com.example.fleetpkg-demo.prepare", "com.1e.pkg.1E.Client",
                       "com.example.fleetpkg-demo.configure"]
    refs = {r.get("id"): r for r in root.findall("pkg-ref") if (r.text or "").startswith("#")}
    assert refs["com.1e.pkg.1E.Client"].text == "#com.1e.pkg.1E.Client.pkg"
    assert refs["com.1e.pkg.1E.Client"].get("version") == "5.1.0.12"
    assert all(r.get("onConclusion") == "none" for r in refs.values())
    assert root.find("allowed-os-versions/os-version").get("min") == "11.0"


def test_inspect_and_verify_read_the_build(demo):
    out = build_dir(demo)
    inspected = json.loads(fleetpkg("inspect", out / f"demo-1E-Client-{VERSION}.pkg", "--json", check=True).stdout)
    assert inspected["kind"] == "product" and inspected["signed"] is True
    assert [p["identifier"] for p in inspected["packages"]] == [
        "com.example.fleetpkg-demo.prepare", "com.1e.pkg.1E.Client", "com.example.fleetpkg-demo.configure"]
    verified = fleetpkg("verify", out, "--json", "--trust-root", demo / "pki" / "demo-root.cer")
    report = json.loads(verified.stdout)
    assert verified.returncode == 0, report
    assert report["ok"] is True and report["problems"] == []


def test_verify_names_each_damaged_artifact(demo, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(build_dir(demo), copy)
    profile = copy / "profiles" / "trust.mobileconfig"
    profile.write_bytes(profile.read_bytes().replace(b"fleetpkg demo", b"fleetpkg dem0", 1))
    (copy / "stray.txt").write_text("not built\n")
    os.chmod(copy / "identity" / "MAC02.local.pkg", 0o644)
    result = fleetpkg("verify", copy, "--json")
    assert result.returncode == 1
    problems = json.loads(result.stdout)["problems"]
    assert any(p.startswith("profiles/trust.mobileconfig: sha256") for p in problems)
    assert any(p.startswith("stray.txt:") for p in problems)
    assert any(p.startswith("identity/MAC02.local.pkg:") and "0644" in p for p in problems)


def test_rebuild_is_byte_identical_except_secrets(demo, tmp_path):
    first = build_dir(demo)
    fleetpkg("build", demo / "fleet.toml", "-o", tmp_path / "again", check=True)
    second = tmp_path / "again" / f"demo-{VERSION}"
    a = json.loads((first / "manifest.json").read_text())["artifacts"]
    b = json.loads((second / "manifest.json").read_text())["artifacts"]
    assert [x["path"] for x in a] == [x["path"] for x in b]
    for x, y in zip(a, b):
        if x["secret"]:
            continue
        if x["kind"] == "munki-identity-pkginfo":
            # describes a secret package: only the hash/size of that package may differ
            old, new = (plistlib.loads((d / x["path"]).read_bytes()) for d in (first, second))
            described = new["installer_item_location"]
            assert new["installer_item_hash"] == hashlib.sha256(
                (second / "munki" / "pkgs" / described).read_bytes()).hexdigest()
            for doc in (old, new):
                doc.pop("installer_item_hash"), doc.pop("installer_item_size")
            assert old == new, x["path"]
            continue
        assert x == y, x["path"]
        assert (first / x["path"]).read_bytes() == (second / y["path"]).read_bytes()
    secret_differs = [x["path"] for x, y in zip(a, b) if x["secret"] and x["sha256"] != y["sha256"]]
    assert secret_differs, "secret artifacts carry fresh salts and passwords on every build"


def test_interrupted_build_leaves_no_entry_then_rebuild_is_identical(demo, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
    rng = random.Random(7)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "build", str(demo / "fleet.toml"),
                                 "-o", str(out), "--jobs", "1"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.4, 1.2))
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        entries = os.listdir(out) if out.exists() else []
        # either the build had already finished, or nothing at all is left behind
        assert entries in ([], [f"demo-{VERSION}"]), entries
        if entries:
            shutil.rmtree(out / entries[0])
    fleetpkg("build", demo / "fleet.toml", "-o", out, check=True)
    wrapper = f"demo-1E-Client-{VERSION}.pkg"
    assert (out / f"demo-{VERSION}" / wrapper).read_bytes() == (build_dir(demo) / wrapper).read_bytes()


def test_failing_device_stops_the_build_unless_skipped(demo, tmp_path):
    later = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=20)).strftime("%Y-%m-%d")
    failed = fleetpkg("build", demo / "fleet.toml", "-o", tmp_path / "a", "--at", later)
    assert failed.returncode == 1
    assert "mac03.local" in failed.stderr and "validity" in failed.stderr
    assert not (tmp_path / "a").exists() or os.listdir(tmp_path / "a") == []
    skipped = fleetpkg("build", demo / "fleet.toml", "-o", tmp_path / "b", "--at", later,
                       "--skip-failed-devices", "--json")
    assert skipped.returncode == 0, skipped.stderr
    doc = json.loads(skipped.stdout)
    assert doc["skipped_devices"] == ["mac03.local"]
    paths = {a["path"] for a in doc["artifacts"]}
    assert "identity/MAC01.local.pkg" in paths and "identity/mac03.local.pkg" not in paths


def test_bad_pfx_devices_stop_the_build_unless_skipped(tmp_path):
    """A missing, damaged, locked or keyless .pfx fails its device like a failing rule: the build
    stops naming every such device (exit 1, nothing published) unless --skip-failed-devices."""
    from tests.fleetfactory import BAD_PFX, NOW, PASSWORD, make_fleet, write_bad_pfx

    bad = [f"mac-{kind}" for kind in BAD_PFX]
    fleet = make_fleet(tmp_path / "fleet", ["mac01", *bad, "mac02"])
    for kind in BAD_PFX:
        write_bad_pfx(fleet.root / "pfx" / f"mac-{kind}.pfx", kind, fleet.ca, f"mac-{kind}")
    env = {"FLEET_PFX_PASSWORD": PASSWORD}
    at = NOW.strftime("%Y-%m-%d")

    stopped = fleetpkg("build", fleet.config, "-o", tmp_path / "a", "--at", at, env=env)
    assert stopped.returncode == 1, stopped.stderr
    assert stopped.stdout == "" and "Traceback" not in stopped.stderr
    assert stopped.stderr.splitlines()[-1] == (
        f"fleetpkg: error: {len(bad)} device(s) fail the certificate rules: {', '.join(bad)} "
        "(run `fleetpkg check` for details, or pass --skip-failed-devices)")
    for host, rule in zip(bad, BAD_PFX.values()):
        assert [host, "FAIL", rule, "-"] in [line.split() for line in stopped.stderr.splitlines()]
    assert not (tmp_path / "a").exists() or os.listdir(tmp_path / "a") == []
    as_json = fleetpkg("build", fleet.config, "-o", tmp_path / "a", "--at", at, "--json", env=env)
    assert as_json.returncode == 1
    doc = json.loads(as_json.stdout)
    assert doc["ok"] is False and [d["hostname"] for d in doc["devices"]] == fleet.devices
    assert {d["hostname"]: [f["rule"] for f in d["findings"]] for d in doc["devices"] if not d["ok"]} == {
        host: [rule] for host, rule in zip(bad, BAD_PFX.values())}

    skipped = fleetpkg("build", fleet.config, "-o", tmp_path / "b", "--at", at, "--skip-failed-devices", env=env)
    assert skipped.returncode == 0, skipped.stderr
    assert f"devices: 2 built, {len(bad)} skipped, 0 warning(s)" in skipped.stdout
    assert "  skipped (failing rules): " + ", ".join(
        f"{host} ({rule})" for host, rule in zip(bad, BAD_PFX.values())) in skipped.stdout.splitlines()
    out = tmp_path / "b" / "acme-test-5.1.0.12-3"  # fleetfactory's vendor version and build
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped_devices"] == bad
    built = sorted(p.name for p in (out / "identity").iterdir())
    assert built == ["mac01.pkg", "mac02.pkg"]
    assert sorted(p.name for p in (out / "profiles" / "devices").iterdir()) == [
        "mac01.mobileconfig", "mac02.mobileconfig"]


def _fleet_with_vendor(demo: Path, tmp_path: Path, vendor: Path) -> Path:
    folder = tmp_path / "fleet"
    shutil.copytree(demo, folder, ignore=shutil.ignore_patterns("dist"))
    toml = (folder / "fleet.toml").read_text()
    old = 'package = "vendor/1e.client-macOS_v5.1.0.12-standin.pkg"'
    assert old in toml
    (folder / "fleet.toml").write_text(toml.replace(old, f'package = "{vendor}"'))
    return folder / "fleet.toml"


def test_foreign_vendor_is_refused_without_the_flag(demo, tmp_path):
    config = _fleet_with_vendor(demo, tmp_path, FIXTURES / "pkg" / "macops-KeychainMinder-1.0.pkg")
    result = fleetpkg("build", config, "-o", tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a 1E Client package" in lines[0] and "--allow-foreign-vendor" in lines[0]
    assert "Traceback" not in result.stderr


def test_vendor_product_archive_is_merged(demo, tmp_path):
    vendor = FIXTURES / "pkg" / "relic-dummy.pkg"
    config = _fleet_with_vendor(demo, tmp_path, vendor)
    result = fleetpkg("build", config, "-o", tmp_path / "out", "--allow-foreign-vendor", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert any("vendor guide" in note for note in doc["notes"])  # fallbacks are reported, not silent
    wrapper = next(tmp_path.glob("out/*/*.pkg"))
    vendor_dist = ET.fromstring(bsdtar_member(vendor, "Distribution"))
    vendor_refs = [r.text.lstrip("#") for r in vendor_dist.findall("pkg-ref") if (r.text or "").startswith("#")]
    for name in vendor_refs:
        for member in ("Bom", "Payload", "PackageInfo"):
            assert bsdtar_member(wrapper, f"{name}/{member}") == bsdtar_member(vendor, f"{name}/{member}")
    ours = ET.fromstring(bsdtar_member(wrapper, "Distribution"))
    assert ours.find("options").get("hostArchitectures") == "arm64,x86_64"
    # the vendor's constraints carry over: its volume-check OS floor and its bundle-version children
    assert ours.find("volume-check/allowed-os-versions/os-version").get("min") == "11.0"
    assert ours.find("pkg-ref/bundle-version/bundle").get("id") == "com.sas.dummy"


def _outline_ids(line) -> list:
    """(choice, [children]) of a <line>, read with ElementTree."""
    return [(c.get("choice"), _outline_ids(c)) for c in line.findall("line")]


def _install_order(root) -> list[str]:
    """pkg-ref ids in Installer's order, worked out here from the XML: the outline walked depth first."""
    choices = {c.get("id"): c for c in root.findall("choice")}
    order: list[str] = []

    def walk(line):
        for child in line.findall("line"):
            for ref in choices[child.get("choice")].findall("pkg-ref"):
                if ref.get("id") not in order:
                    order.append(ref.get("id"))
            walk(child)

    walk(root.find("choices-outline"))
    return order


def test_vendor_product_keeps_its_install_order_choices_and_restart(demo, tmp_path):
    vendor = vendor_product_standin()
    config = _fleet_with_vendor(demo, tmp_path, vendor)
    result = fleetpkg("build", config, "-o", tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert any("never installs extras.pkg" in note for note in json.loads(result.stdout)["notes"])
    out = next((tmp_path / "out").iterdir())
    wrapper = out / f"demo-1E-Client-{VERSION}.pkg"
    expanded = tmp_path / "expanded"
    expanded.mkdir()
    subprocess.run([require_tool("bsdtar"), "-xf", str(wrapper), "-C", str(expanded)], check=True)
    assert sorted(p.name for p in expanded.iterdir()) == [
        "Distribution", "agent.pkg", "client.pkg", "configure.pkg", "prepare.pkg", "zdriver.pkg"]
    for name in ("agent.pkg", "client.pkg", "zdriver.pkg"):
        for member in ("PackageInfo", "Payload"):
            assert (expanded / name / member).read_bytes() == bsdtar_member(vendor, f"{name}/{member}")
    root = ET.fromstring((expanded / "Distribution").read_bytes())
    prepare, configure = "com.example.fleetpkg-demo.prepare", "com.example.fleetpkg-demo.configure"
    # the vendor's outline, nesting and all, between the wrapper's prepare and configure
    assert _outline_ids(root.find("choices-outline")) == [("default", [
        (prepare, []), ("driver", []), ("client_group", [("client", []), ("agent", [])]), (configure, [])])]
    order = _install_order(root)
    assert order == [prepare, *PRODUCT_ORDER, configure]
    assert list(PRODUCT_ORDER) != sorted(PRODUCT_ORDER)  # neither alphabetical by id...
    paths = {r.get("id"): r for r in root.findall("pkg-ref") if (r.text or "").startswith("#")}
    assert [paths[i].text for i in PRODUCT_ORDER] == ["#zdriver.pkg", "#client.pkg", "#agent.pkg"]  # ...nor by name
    # each component's restart need carried over, on the pkg-ref that installs it
    assert {i: r.get("onConclusion") for i, r in paths.items()} == {
        prepare: "none", "com.1e.pkg.1E.Driver": "RequireRestart", "com.1e.pkg.1E.Client": "none",
        "com.1e.pkg.1E.Agent": "RequireLogout", configure: "none"}
    assert paths["com.1e.pkg.1E.Driver"].get("active") == "true"
    # the vendor's choices and their JavaScript travel whole; its UI-only root choice does not
    choices = {c.get("id"): c for c in root.findall("choice")}
    assert choices["agent"].attrib == {"id": "agent", "title": "Agent", "start_selected": "agentWanted()",
                                       "enabled": "false"}
    assert choices["agent"].find("pkg-ref").attrib == {"id": "com.1e.pkg.1E.Agent", "onConclusion": "RequireLogout"}
    assert choices["driver"].get("customLocation") == "/"
    assert choices["default"].attrib == {"id": "default"} and "extras" not in choices
    assert "function agentWanted()" in root.find("script").text
    assert root.find("installation-check").get("script") == "agentWanted() || true"
    assert [a.get("id") for a in root.iter("app")] == ["com.1e.Tray"]  # the driver's must-close

    inspected = json.loads(fleetpkg("inspect", "--json", wrapper, check=True).stdout)
    assert inspected["on_conclusion"] == "RequireRestart"
    assert [p["identifier"] for p in inspected["packages"]] == [prepare, *PRODUCT_ORDER, configure]
    assert [p["on_conclusion"] for p in inspected["packages"]] == [
        "None", "RequireRestart", "None", "RequireLogout", "None"]
    human = fleetpkg("inspect", wrapper, check=True).stdout
    assert "after installing: restart required (RequireRestart: com.1e.pkg.1E.Driver)" in human
    deploy = (out / "DEPLOY.md").read_text()
    assert "**Each Mac must restart after installing the wrapper**" in deploy
    assert "(`RequireRestart`, from `com.1e.pkg.1E.Driver`)" in deploy
    pkginfo = plistlib.loads(next((out / "munki" / "pkgsinfo").glob("*/1E-Client-*.plist")).read_bytes())
    assert pkginfo["RestartAction"] == "RequireRestart"
    assert [r["packageid"] for r in pkginfo["receipts"]] == [prepare, *PRODUCT_ORDER, configure]
    # the demo's vendor package asks for nothing: no restart anywhere
    assert "must restart" not in (build_dir(demo) / "DEPLOY.md").read_text()
    demo_info = plistlib.loads(next((build_dir(demo) / "munki" / "pkgsinfo").glob("*/1E-Client-*.plist")).read_bytes())
    assert "RestartAction" not in demo_info


def test_vendor_component_postinstall_restart_reaches_the_wrapper(demo, tmp_path):
    config = _fleet_with_vendor(demo, tmp_path, vendor_standin(postinstall_action="restart"))
    result = fleetpkg("build", config, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "restart required after installing" in result.stderr
    wrapper = next((tmp_path / "out").glob("*/*.pkg"))
    root = ET.fromstring(bsdtar_member(wrapper, "Distribution"))
    refs = {r.get("id"): r.get("onConclusion") for r in root.findall("pkg-ref")}
    assert refs["com.1e.pkg.1E.Client"] == "RequireRestart"
    assert json.loads(fleetpkg("inspect", "--json", wrapper, check=True).stdout)["on_conclusion"] == "RequireRestart"


_REFUSALS = [
    ('onConclusion="RequireRestart" installKBytes="100" auth="Root" active="true"',
     'onConclusion="RequireRestart" onConclusionScript="needsRestart()" installKBytes="100" auth="Root"',
     'pkg-ref "com.1e.pkg.1E.Driver" (choice "driver") has onConclusionScript="needsRestart()"'),
    ('<pkg-ref id="com.1e.pkg.1E.Agent" onConclusion="RequireLogout"/>',
     '<pkg-ref id="com.1e.pkg.1E.Agent" onConclusion="RecommendRestart"/>',
     'pkg-ref "com.1e.pkg.1E.Agent" (choice "agent") has onConclusion="RecommendRestart"'),
    ('<choice id="default" title="1E Client" versStr="5.1.0.12"/>',
     '<choice id="default" title="1E Client" start_selected="false"/>',
     'choice "default" has start_selected="false"'),
    ('<choice id="driver" visible="false" customLocation="/">',
     '<choice id="driver" visible="false" customLocation="/Library/Extensions">',
     'choice "driver" has customLocation="/Library/Extensions", which moves "com.1e.pkg.1E.Driver" away'),
    ('<line choice="agent"/>', '<line choice="agent"/><line choice="tools"/>',
     'choices-outline names choice "tools", which no <choice> defines'),
    ('auth="Root">#agent.pkg</pkg-ref>', 'auth="Root">file:../agent.pkg</pkg-ref>',
     'pkg-ref "com.1e.pkg.1E.Agent" (choice "agent") points at \'file:../agent.pkg\''),
]


@pytest.mark.parametrize("old,new,needle", _REFUSALS, ids=["onConclusionScript", "unknown-onConclusion",
                                                           "root-choice", "customLocation", "undefined-choice",
                                                           "outside-archive"])
def test_vendor_distribution_that_cannot_be_carried_is_refused(demo, tmp_path, old, new, needle):
    assert old in PRODUCT_DISTRIBUTION
    vendor = vendor_product_standin(PRODUCT_DISTRIBUTION.replace(old, new))
    config = _fleet_with_vendor(demo, tmp_path, vendor)
    for command in (("build", config, "-o", tmp_path / "out"), ("check", config)):
        result = fleetpkg(*command)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert f"{vendor}: Distribution: " in lines[0] and needle in lines[0], lines[0]
        assert "pkgutil --expand" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_vendor_inside_zip(demo, tmp_path):
    bsdtar = require_tool("bsdtar")
    src = tmp_path / "zipsrc" / "1e.client-macOS_v5.1.0.12"
    src.mkdir(parents=True)
    shutil.copy(demo / "vendor" / "1e.client-macOS_v5.1.0.12-standin.pkg", src / "1e.client-macOS_v5.1.0.12.pkg")
    archive = tmp_path / "1e.client-macOS.zip"
    subprocess.run([bsdtar, "-a", "-cf", str(archive), "-C", str(src.parent), src.name], check=True)
    config = _fleet_with_vendor(demo, tmp_path, archive)
    result = fleetpkg("build", config, "-o", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "1e.client-macOS.zip > " in result.stderr
    wrapper = tmp_path / "out" / f"demo-{VERSION}" / f"demo-1E-Client-{VERSION}.pkg"
    assert wrapper.read_bytes() == (build_dir(demo) / f"demo-1E-Client-{VERSION}.pkg").read_bytes()


def test_json_is_one_document_and_nothing_else(demo, tmp_path):
    result = fleetpkg("build", demo / "fleet.toml", "-o", tmp_path / "out", "--json", check=True)
    doc = json.loads(result.stdout)  # raises if anything else is on stdout
    assert doc["ok"] is True and doc["summary"]["devices"] == 3 and doc["summary"]["warnings"] >= 1
    assert result.stderr == ""
