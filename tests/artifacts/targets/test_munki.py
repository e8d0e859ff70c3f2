"""Munki repo fragment of the demo build, checked against Munki's key list (written out here, not
taken from builder.artifacts.targets.munki), plistlib, hashlib, bsdtar and `fleetpkg inspect --json`."""

from __future__ import annotations

import csv
import hashlib
import os
import plistlib
import stat
from pathlib import Path

import pytest

from builder.errors import BuildError
from builder.artifacts.targets import munki
from tests.artifacts.targets.conftest import expand_pkg, inspect_json

# Munki 7 pkginfo keys we emit and their plist types (profiles-and-mdm.md section 6.3).
CLIENT_KEYS = {
    "name": str, "version": str, "display_name": str, "description": str, "catalogs": list,
    "installer_item_location": str, "installer_item_hash": str, "installer_item_size": int,
    "installed_size": int, "receipts": list, "installs": list, "minimum_os_version": str,
    "supported_architectures": list, "unattended_install": bool, "unattended_uninstall": bool,
    "uninstallable": bool, "uninstall_method": str, "uninstall_script": str, "RestartAction": str,
}
CLIENT_REQUIRED = set(CLIENT_KEYS) - {"unattended_uninstall", "RestartAction"}
IDENTITY_KEYS = {
    "name": str, "version": str, "display_name": str, "description": str, "catalogs": list,
    "installer_item_location": str, "installer_item_hash": str, "installer_item_size": int,
    "receipts": list, "installable_condition": str, "requires": list, "minimum_os_version": str,
    "supported_architectures": list, "unattended_install": bool,
}
RECEIPT_KEYS = {"packageid": str, "version": str, "installed_size": int}
INSTALLS_KEYS = {"type": str, "path": str, "md5checksum": str}


def _pkginfos(root: Path) -> dict[str, dict]:
    files = sorted((root / "munki" / "pkgsinfo").rglob("*.plist"))
    assert files
    return {str(p.relative_to(root)): plistlib.loads(p.read_bytes()) for p in files}


def _check_types(doc: dict, table: dict, required: set, where: str) -> None:
    assert set(doc) <= set(table), f"{where}: unexpected keys {set(doc) - set(table)}"
    assert required <= set(doc), f"{where}: missing keys {required - set(doc)}"
    for key, value in doc.items():
        # bool is a subclass of int in Python: compare exact types
        assert type(value) is table[key], f"{where}: {key} is {type(value).__name__}"


def _split(infos: dict[str, dict]) -> tuple[dict, dict[str, dict]]:
    client = [d for d in infos.values() if "installable_condition" not in d]
    assert len(client) == 1
    identities = {d["name"]: d for d in infos.values() if "installable_condition" in d}
    return client[0], identities


def test_default_fragment_carries_the_client_package_only(demo_build):
    """A Munki repo serves every item to every client: no Mac's identity goes in by default."""
    infos = _pkginfos(demo_build.root)
    client, identities = _split(infos)
    assert identities == {} and list(infos) == [f"munki/pkgsinfo/demo/1E-Client-{client['version']}.plist"]
    pkgs = demo_build.root / "munki" / "pkgs"
    assert [str(p.relative_to(pkgs)) for p in pkgs.rglob("*") if p.is_file()] == [client["installer_item_location"]]
    munki_arts = {p: a for p, a in demo_build.artifacts().items() if p.startswith("munki/")}
    assert len(munki_arts) == 2 and not any(a["secret"] for a in munki_arts.values())
    text = (demo_build.root / "DEPLOY.md").read_text()
    assert "carries the client package only" in text and "**Warning.**" not in text
    assert "-identity-<hostname>" not in text


def test_opting_in_warns_in_the_build_and_in_deploy_md(munki_identities_build):
    said = (munki_identities_build.folder / "build-stderr.txt").read_text()
    assert f"warning: {munki.IDENTITIES_WARNING}\n" in said
    assert said.count("Munki identity items are on") == 1
    text = (munki_identities_build.root / "DEPLOY.md").read_text()
    assert f"**Warning.** {munki.IDENTITIES_WARNING}\n" in text
    # the paragraph says who can download, what protects them and what to use instead
    for needle in ("any Mac, or anyone holding the repository's credentials, can fetch every other Mac's key",
                   "per-client paths behind client-certificate authentication", "MDM device profiles",
                   "out of band"):
        assert needle in munki.IDENTITIES_WARNING
    assert "**every Mac can download every identity package**" in text


def test_every_pkginfo_has_munkis_keys_and_types(munki_identities_build):
    infos = _pkginfos(munki_identities_build.root)
    client, identities = _split(infos)
    _check_types(client, CLIENT_KEYS, CLIENT_REQUIRED, "client")
    assert len(identities) == 3
    for name, doc in identities.items():
        _check_types(doc, IDENTITY_KEYS, set(IDENTITY_KEYS), name)
    for where, doc in infos.items():
        assert doc["catalogs"] == ["testing"] and all(type(c) is str for c in doc["catalogs"]), where
        assert doc["supported_architectures"] == ["arm64", "x86_64"], where
        assert doc["unattended_install"] is True
        for receipt in doc["receipts"]:
            _check_types(receipt, RECEIPT_KEYS, {"packageid", "version"}, f"{where} receipt")
        for item in doc.get("installs", []):
            _check_types(item, INSTALLS_KEYS, {"type", "path"}, f"{where} installs")
            assert item["type"] == "file"
    assert client["uninstallable"] is True and client["uninstall_method"] == "uninstall_script"
    assert client["uninstall_script"] == (munki_identities_build.root / "uninstall.sh").read_text()


def test_installer_item_location_exists_under_pkgs_with_its_hash_and_size(munki_identities_build):
    """makecatalogs leaves out items whose installer_item_location is missing under pkgs/."""
    pkgs = munki_identities_build.root / "munki" / "pkgs"
    for where, doc in _pkginfos(munki_identities_build.root).items():
        location = doc["installer_item_location"]
        assert not location.startswith("/") and ".." not in location.split("/")
        item = pkgs / location
        assert item.is_file(), f"{where}: {location} is not under munki/pkgs"
        data = item.read_bytes()
        assert doc["installer_item_hash"] == hashlib.sha256(data).hexdigest(), where
        assert doc["installer_item_size"] == os.path.getsize(item) // 1024, where  # makepkginfo: Int(size/1024)
    every_pkg = {str(p.relative_to(pkgs)) for p in pkgs.rglob("*.pkg")}
    assert every_pkg == {d["installer_item_location"] for d in _pkginfos(munki_identities_build.root).values()}


def test_client_receipts_and_sizes_match_inspect_of_the_wrapper(demo_build):
    client, _ = _split(_pkginfos(demo_build.root))
    wrapper = demo_build.root / "munki" / "pkgs" / client["installer_item_location"]
    assert wrapper.read_bytes() == (demo_build.root / wrapper.name).read_bytes()
    doc = inspect_json(wrapper)
    assert doc["kind"] == "product"
    expected = [{"packageid": p["identifier"], "version": p["version"],
                 "installed_size": p["payload"]["install_kbytes"]} for p in doc["packages"]]
    assert client["receipts"] == expected
    assert [r["packageid"] for r in client["receipts"]] == [
        "com.example.fleetpkg-demo.prepare", "com.1e.pkg.1E.Client", "com.example.fleetpkg-demo.configure"]
    assert client["installed_size"] == sum(p["payload"]["install_kbytes"] for p in doc["packages"])
    assert set(client["supported_architectures"]) == set(doc["distribution"]["host_architectures"])
    assert client["version"] == doc["distribution"]["product"]["version"]
    assert client["minimum_os_version"] == doc["distribution"]["allowed_os_versions"][0]["min"]


def test_client_installs_items_are_files_the_wrapper_installs(demo_build, tmp_path):
    client, _ = _split(_pkginfos(demo_build.root))
    wrapper = demo_build.root / "munki" / "pkgs" / client["installer_item_location"]
    expanded = expand_pkg(wrapper, tmp_path / "x")
    installed = {}
    for payload_dir in expanded.rglob("Payload.d"):
        for path in payload_dir.rglob("*"):
            if path.is_file():
                installed["/" + str(path.relative_to(payload_dir))] = path
    paths = [i["path"] for i in client["installs"]]
    assert paths[0] == "/Library/Application Support/1E/Client/1E.Client"
    for item in client["installs"]:
        assert item["path"] in installed, item["path"]
        if "md5checksum" in item:
            assert item["md5checksum"] == hashlib.md5(installed[item["path"]].read_bytes()).hexdigest()
    # the checksummed file names this build's version, so a new build is offered by Munki
    conf = next(i for i in client["installs"] if "md5checksum" in i)
    assert f"version={client['version']}" in installed[conf["path"]].read_text().splitlines()


def test_identity_items_match_devices_and_their_packages(munki_identities_build):
    _, identities = _split(_pkginfos(munki_identities_build.root))
    with open(munki_identities_build.folder / "devices.csv", newline="") as fh:
        devices = list(csv.DictReader(fh))
    assert sorted(identities) == sorted(f"1E-Client-identity-{d['hostname']}" for d in devices)
    pkgs = munki_identities_build.root / "munki" / "pkgs"
    for device in devices:
        doc = identities[f"1E-Client-identity-{device['hostname']}"]
        assert doc["requires"] == ["1E-Client"]
        assert "installs" not in doc
        pkg = pkgs / doc["installer_item_location"]
        assert pkg.read_bytes() == (munki_identities_build.root / "identity" / f"{device['hostname']}.pkg").read_bytes()
        info = inspect_json(pkg)
        assert doc["receipts"] == [{"packageid": p["identifier"], "version": p["version"]}
                                   for p in info["packages"]]
        assert doc["version"] == info["packages"][0]["version"]
        if device["serial"]:
            assert doc["installable_condition"] == f'serial_number == "{device["serial"]}"'
        else:
            host = device["hostname"]
            short = host[: -len(".local")]
            assert doc["installable_condition"] == f'hostname ==[c] "{host}" OR hostname ==[c] "{short}"'


def test_identity_packages_are_secret_and_0600(munki_identities_build):
    artifacts = munki_identities_build.artifacts()
    idents = sorted((munki_identities_build.root / "munki" / "pkgs").rglob("identity/*.pkg"))
    assert len(idents) == 3
    for pkg in idents:
        rel = str(pkg.relative_to(munki_identities_build.root))
        assert stat.S_IMODE(pkg.stat().st_mode) == 0o600, rel
        assert artifacts[rel]["secret"] is True, rel
        assert artifacts[rel]["kind"] == "munki-identity-pkg"
    for plist in (munki_identities_build.root / "munki" / "pkgsinfo").rglob("*.plist"):
        rel = str(plist.relative_to(munki_identities_build.root))
        assert artifacts[rel]["secret"] is False
        assert stat.S_IMODE(plist.stat().st_mode) == 0o644


def test_pkginfo_keys_are_sorted(munki_identities_build):
    for path in (munki_identities_build.root / "munki" / "pkgsinfo").rglob("*.plist"):
        keys = [line.strip()[5:-6] for line in path.read_text().splitlines()
                if line.startswith("\t<key>")]
        assert keys == sorted(keys), path


# -- installable_condition rules -------------------------------------------------------------

class Dev:
    def __init__(self, hostname, serial=None):
        self.hostname, self.serial = hostname, serial


def test_host_forms_with_and_without_local():
    names = munki.host_names([Dev("mac01"), Dev("Mac02.local"), Dev("web.acme.com")])
    assert names == {"mac01": ["mac01", "mac01.local"], "Mac02.local": ["Mac02.local", "Mac02"],
                     "web.acme.com": ["web.acme.com", "web.acme.com.local"]}
    assert munki.installable_condition(Dev("mac01"), names["mac01"]) == \
        'hostname ==[c] "mac01" OR hostname ==[c] "mac01.local"'


def test_shared_local_forms_are_dropped_so_no_mac_matches_two_identities():
    names = munki.host_names([Dev("mac01"), Dev("MAC01.local")])
    assert names == {"mac01": ["mac01"], "MAC01.local": ["MAC01.local"]}


def test_serial_wins_over_hostname():
    assert munki.installable_condition(Dev("mac01", "C02X"), ["mac01"]) == 'serial_number == "C02X"'


@pytest.mark.parametrize("bad", ['mac"01', "mac01\\", "mac 01", "a OR TRUEPREDICATE", ""])
def test_values_that_could_change_the_predicate_are_refused(bad):
    with pytest.raises(BuildError) as exc:
        munki.installable_condition(Dev(bad), [bad])
    assert "installable_condition" in str(exc.value)
