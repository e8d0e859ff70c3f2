"""`fleetpkg inspect` as a user runs it (a subprocess): JSON contract, exit codes, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder.errors import UnsupportedError
from builder.cli.describe import _delegate, sniff_kind
from tests.conftest import FIXTURES, REPO, require_tool

PKGS = sorted(p for p in (FIXTURES / "pkg").glob("*.pkg") if p.name != "homebrew-container.pkg")
PACKAGE_KEYS = {"identifier", "version", "install_location", "archive_path", "payload", "scripts", "bom_entries"}


def fleetpkg(*args, env=None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=full_env, timeout=60)


def assert_one_line_error(result, *needles):
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleetpkg: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("pkg", PKGS, ids=lambda p: p.name)
def test_package_json_contract(pkg):
    result = fleetpkg("inspect", "--json", pkg)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"kind", "toc_checksum", "signed", "packages", "distribution"} <= set(doc)
    names = subprocess.run([require_tool("bsdtar"), "-tf", pkg], capture_output=True, text=True,
                           check=True).stdout.split()
    assert doc["kind"] == ("product" if "Distribution" in names else "component")
    assert doc["toc_checksum"] == "sha1" and isinstance(doc["signed"], bool)
    assert (doc["distribution"] is None) == (doc["kind"] == "component")
    infos = [n for n in names if n.split("/")[-1] == "PackageInfo"]
    assert len(doc["packages"]) == len(infos)
    for entry in doc["packages"]:
        assert PACKAGE_KEYS <= set(entry)
        prefix = entry["archive_path"] + "/" if entry["archive_path"] else ""
        ref = ET.fromstring(subprocess.run([require_tool("bsdtar"), "-xOf", pkg, prefix + "PackageInfo"],
                                           capture_output=True, check=True).stdout)
        assert (entry["identifier"], entry["version"], entry["install_location"]) == (
            ref.get("identifier"), ref.get("version"), ref.get("install-location"))
        payload = ref.find("payload")
        assert entry["payload"] == {"format": "gzip-cpio", "files": int(payload.get("numberOfFiles")),
                                    "install_kbytes": int(payload.get("installKBytes"))}
        assert isinstance(entry["scripts"], list) and isinstance(entry["bom_entries"], int)
        assert entry["bom_entries"] >= 1


def test_product_distribution_and_signature():
    doc = json.loads(fleetpkg("inspect", "--json", FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg").stdout)
    assert doc["signed"] is True
    assert doc["distribution"]["host_architectures"] == ["x86_64", "arm64"]
    assert doc["distribution"]["pkg_refs"][0]["path"] == "#Installomator.pkg"
    assert doc["packages"][0]["archive_path"] == "Installomator.pkg"
    doc = json.loads(fleetpkg("inspect", "--json", FIXTURES / "pkg" / "rtrouton-Fix_Zoom_Vulnerability.pkg").stdout)
    assert doc["packages"][0]["scripts"] == ["._postinstall", "postinstall"]


def test_human_output_names_the_component():
    result = fleetpkg("inspect", FIXTURES / "pkg" / "relic-dummy.pkg")
    assert result.returncode == 0
    assert "com.sas.dummy 1.0.0 [com.sas.dummy.pkg]" in result.stdout
    assert "macOS >= 11.0" in result.stdout


def test_product_components_in_install_order_with_their_restart_needs():
    from tests.fleetfactory import PRODUCT_ORDER, vendor_product_standin

    doc = json.loads(fleetpkg("inspect", "--json", vendor_product_standin()).stdout)
    # install order first (not the archive's or the pkg-refs' order), then what the outline never installs
    assert [p["identifier"] for p in doc["packages"]] == [*PRODUCT_ORDER, "com.1e.pkg.1E.Extras"]
    assert [p["on_conclusion"] for p in doc["packages"]] == ["RequireRestart", "None", "RequireLogout", "None"]
    assert doc["on_conclusion"] == "RequireRestart"
    assert [i["id"] for i in doc["distribution"]["install_order"]] == list(PRODUCT_ORDER)
    human = fleetpkg("inspect", vendor_product_standin()).stdout
    assert "after installing: restart required (RequireRestart: com.1e.pkg.1E.Driver)" in human
    assert human.index("com.1e.pkg.1E.Driver 5.1.0.12 [zdriver.pkg]") < human.index("com.1e.pkg.1E.Agent 5.1.0.12")
    plain = fleetpkg("inspect", FIXTURES / "pkg" / "relic-dummy.pkg").stdout
    assert "after installing: nothing required" in plain


@pytest.mark.parametrize("name,archs,identifier", [
    ("fq-darwin_fat_a_dynamic", ["x86_64", "arm64"], "a_dynamic"),
    ("fq-darwin_amd64_a_dynamic", ["x86_64"], None),
    ("rubymacho-x86_64_hello_unk_lc.bin", ["x86_64"], None),
])
def test_macho_json(name, archs, identifier):
    result = fleetpkg("inspect", "--json", FIXTURES / "macho" / name)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"kind": "macho", "architectures": archs, "identifier": identifier,
                                         "team_id": None}


def test_not_an_installer_package():
    result = fleetpkg("inspect", "--json", FIXTURES / "pkg" / "homebrew-container.pkg")
    assert_one_line_error(result, "homebrew-container.pkg", "not an installer package")


def test_broken_macho():
    result = fleetpkg("inspect", FIXTURES / "macho" / "rubymacho-yaml2obj_truncated-load-commands.macho")
    assert_one_line_error(result, "truncated-load-commands", "Mach-O")


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"xar!" + os.urandom(100), b"\x30\x03\x02\x01"])
def test_garbage_is_a_one_line_error(tmp_path, content):
    path = tmp_path / "thing.bin"
    path.write_bytes(content)
    assert_one_line_error(fleetpkg("inspect", path), "thing.bin")


def test_missing_file():
    assert_one_line_error(fleetpkg("inspect", "/nonexistent/x.pkg"), "/nonexistent/x.pkg")


def test_truncated_and_damaged_fixture(tmp_path):
    data = (FIXTURES / "pkg" / "relic-dummy.pkg").read_bytes()
    for cut in (10, 28, 500, len(data) // 2, len(data) - 1):
        path = tmp_path / f"cut{cut}.pkg"
        path.write_bytes(data[:cut])
        assert_one_line_error(fleetpkg("inspect", path), path.name)


def test_mobileconfig_dispatch():
    signed_fixture = FIXTURES / "mobileconfig" / "encrypted-dns-signed-developerid-adguard-https.mobileconfig"
    if importlib.util.find_spec("builder.profiles.inspect") is None:
        assert_one_line_error(fleetpkg("inspect", signed_fixture), "builder.profiles.inspect")
        return
    signed = json.loads(fleetpkg("inspect", "--json", signed_fixture).stdout)
    assert signed["kind"] == "mobileconfig" and signed["signed"] is True
    plain = json.loads(fleetpkg("inspect", "--json", FIXTURES / "mobileconfig" /
                                "encrypted-dns-unsigned-adguard-default-https.mobileconfig").stdout)
    assert plain["kind"] == "mobileconfig" and plain["signed"] is False
    certs = json.loads(fleetpkg("inspect", "--json", FIXTURES / "mobileconfig" /
                                "idmanagement-fpki-unmanaged-bundle.mobileconfig").stdout)
    assert certs["signed"] is False and len(certs["payloads"]) == 13
    assert all(p["certificate"]["subject"] for p in certs["payloads"])


VECTORS = Path(importlib.util.find_spec("cryptography_vectors").origin).parent / "pkcs12"


def test_pfx_password_comes_from_environment(tmp_path):
    pfx = VECTORS / "cert-key-aes256cbc.p12"  # password "cryptography"
    assert sniff_kind(pfx.read_bytes()[:64], pfx.name) == "pfx"
    assert "FLEETPKG_TEST_UNSET_VAR" not in os.environ
    result = fleetpkg("inspect", "--json", "--password-env", "FLEETPKG_TEST_UNSET_VAR", pfx)
    assert_one_line_error(result, "FLEETPKG_TEST_UNSET_VAR", "not set")
    result = fleetpkg("inspect", "--json", "--password-env", "P12PW", pfx, env={"P12PW": "cryptography"})
    assert "cryptography\n" not in result.stdout + result.stderr
    if importlib.util.find_spec("builder.certs.inspect") is None:
        assert_one_line_error(result, "builder.certs.inspect")
    else:
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["kind"] == "pfx"


def test_sniffing():
    assert sniff_kind(b"xar!\x00\x1c") == "pkg"
    assert sniff_kind(b"\xcf\xfa\xed\xfe\x07\x00\x00\x01") == "macho"
    assert sniff_kind(b'<?xml version="1.0"?><plist>') == "mobileconfig"
    assert sniff_kind(b"\x30\x80\x06\x09\x2a\x86\x48") == "mobileconfig"  # BER CMS ContentInfo
    assert sniff_kind(b"\x30\x82\x0e\x33\x02\x01\x03") == "pfx"
    assert sniff_kind(b"\xca\xfe\xba\xbe\x00\x00\x00\x34") == "unknown"  # Java class file


def test_missing_reader_module_is_a_clean_error():
    with pytest.raises(UnsupportedError, match="builder.nonexistent_reader is missing"):
        _delegate("builder.nonexistent_reader", "describe", "x.p12")
