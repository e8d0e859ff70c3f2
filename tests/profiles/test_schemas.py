"""Every payload fleetpkg writes validates against Apple's YAML schemas; the validator can fail."""

from __future__ import annotations

import copy
import plistlib
import subprocess

import pytest

from builder.profiles import device_profile, login_items_profile, render_xml, trust_profile
from tests.conftest import FIXTURES, require_tool
from tests.profiles.schema_validator import (payload_schema, validate_payload, validate_profile,
                                             validate_value)


def _all_profiles(pki, device_args) -> dict[str, dict]:
    common = dict(fleet="Acme Fleet", organization="Acme Corp", identifier_prefix="com.acme.oneE")
    return {
        "device": device_profile(**device_args),
        "device-flags": device_profile(**device_args, allow_all_apps_access=False,
                                       key_is_extractable=True),
        "trust": trust_profile(**common, roots=[pki.root.certificate, pki.other_root.certificate],
                               intermediates=[pki.issuing.certificate]),
        "login-items": login_items_profile(**common, label="com.1e.pkg.1E.Client", team_id="ABCDE12345"),
        "login-items-no-team": login_items_profile(**common, label="com.1e.pkg.1E.Client", team_id=None),
    }


@pytest.fixture
def rendered(pki, device_args) -> dict[str, dict]:
    """Each profile as plistlib reads back its XML rendering."""
    return {name: plistlib.loads(render_xml(p)) for name, p in _all_profiles(pki, device_args).items()}


@pytest.mark.parametrize("name", ["device", "device-flags", "trust", "login-items", "login-items-no-team"])
def test_profile_validates_against_schemas(rendered, name):
    assert validate_profile(rendered[name]) == []


def test_every_payload_type_is_covered(rendered):
    types = {p["PayloadType"] for doc in rendered.values() for p in doc["PayloadContent"]}
    assert types == {"com.apple.security.pkcs12", "com.apple.security.root",
                     "com.apple.security.pkcs1", "com.apple.servicemanagement"}


def test_mdm_only_payload_is_kept_apart(rendered):
    """servicemanagement is not manually installable: it must never share a profile with the
    identity or CA payloads that double-click installs need (schema: allowmanualinstall false)."""
    assert payload_schema("com.apple.servicemanagement")["payload"]["supportedOS"]["macOS"][
        "allowmanualinstall"] is False
    for name, doc in rendered.items():
        types = {p["PayloadType"] for p in doc["PayloadContent"]}
        if "com.apple.servicemanagement" in types:
            assert types == {"com.apple.servicemanagement"}, name


def test_xml_parses_with_a_plain_xml_parser(device_args):
    """The rendering is well-formed XML for parsers other than plistlib (expat via ElementTree)."""
    import xml.etree.ElementTree as ET

    root = ET.fromstring(render_xml(device_profile(**device_args)))
    assert root.tag == "plist" and root.attrib == {"version": "1.0"}


# -- the validator itself must be able to say no ---------------------------------------------

def _broken(doc: dict, path: list, value=None, delete=False) -> dict:
    doc = copy.deepcopy(doc)
    target = doc
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize("profile, path, value, delete, expected", [
    ("device", ["PayloadUUID"], None, True, "missing required key PayloadUUID"),
    ("device", ["PayloadContent", 0, "PayloadContent"], None, True, "missing required key PayloadContent"),
    ("device", ["PayloadContent", 1, "PayloadIdentifier"], None, True, "missing required key PayloadIdentifier"),
    ("device", ["PayloadVersion"], "1", False, "expected <integer>"),
    ("device", ["PayloadContent", 0, "AllowAllAppsAccess"], 1, False, "expected <boolean>"),
    ("device", ["PayloadContent", 0, "Password"], b"pw", False, "expected <string>"),
    ("device", ["PayloadContent", 1, "PayloadContent"], "MIIB", False, "expected <data>"),
    ("device", ["PayloadContent", 1, "PayloadVersion"], True, False, "expected <integer>"),
    ("device", ["TargetDeviceType"], 7, False, "is not one of"),
    ("device", ["PayloadScope"], "Device", False, "is not one of"),
    ("device", ["PayloadType"], "Profile", False, "is not one of"),
    ("device", ["PayloadContent", 2, "PayloadVersion"], 2, False, "is not one of"),
    ("device", ["PayloadContent", 0, "KeyIsExtractible"], False, False, "unknown key KeyIsExtractible"),
    ("device", ["PayloadContent", 0, "PayloadType"], "com.apple.security.pkcs13", False, "no schema"),
    ("login-items", ["PayloadContent", 0, "Rules", 0, "RuleType"], "Path", False, "is not one of"),
    ("login-items", ["PayloadContent", 0, "Rules", 1, "RuleValue"], None, True, "missing required key RuleValue"),
    ("login-items", ["PayloadContent", 0, "Rules"], {"RuleType": "Label"}, False, "expected <array>"),
    ("login-items", ["PayloadContent", 0, "Rules", 0], "Label", False, "expected <dictionary>"),
    ("login-items", ["PayloadContent", 0, "Rules"], None, True, "missing required key Rules"),
])
def test_validator_rejects_broken_payloads(rendered, profile, path, value, delete, expected):
    errors = validate_profile(_broken(rendered[profile], path, value, delete))
    assert any(expected in e for e in errors), errors


def test_validator_range_and_format_rules():
    spec = {"key": "N", "type": "<integer>", "range": {"min": 1, "max": 5}}
    assert validate_value(3, spec, "N") == []
    assert validate_value(0, spec, "N") and validate_value(6, spec, "N")
    fmt = {"key": "S", "type": "<string>", "format": "^[A-Z]{3}$"}
    assert validate_value("ABC", fmt, "S") == [] and validate_value("abc", fmt, "S")
    reals = {"key": "R", "type": "<real>"}
    assert validate_value(1.5, reals, "R") == [] and validate_value(2, reals, "R")
    rep = {"key": "A", "type": "<array>", "repetition": {"min": 1}, "subkeys": [{"key": "x", "type": "<string>"}]}
    assert validate_value(["a"], rep, "A") == [] and validate_value([], rep, "A")
    assert validate_value(["a", 1], rep, "A")


def test_validator_accepts_real_world_payloads(tmp_path):
    """Apple-format certificate payloads written by other tools pass (the validator is not just
    tuned to our output)."""
    bundle = FIXTURES / "mobileconfig" / "idmanagement-fpki-unmanaged-bundle.mobileconfig"
    certs = plistlib.loads(bundle.read_bytes())
    assert sorted(p["PayloadType"] for p in certs["PayloadContent"]) == (
        ["com.apple.security.pkcs1"] * 12 + ["com.apple.security.root"])
    assert validate_profile(certs) == []
    signed = FIXTURES / "mobileconfig" / "encrypted-dns-signed-developerid-adguard-https.mobileconfig"
    out = tmp_path / "content.plist"
    subprocess.run([require_tool("openssl"), "cms", "-verify", "-noverify", "-inform", "DER",
                    "-in", str(signed), "-out", str(out)], check=True, capture_output=True)
    assert validate_profile(dict(plistlib.loads(out.read_bytes()), PayloadContent=[])) == []
    unsigned = plistlib.loads((FIXTURES / "mobileconfig" /
                               "encrypted-dns-unsigned-adguard-default-https.mobileconfig").read_bytes())
    top_only = dict(unsigned, PayloadContent=[])
    assert validate_profile(top_only) == []
    # its DNS payload has no schema copy here, and the validator says so instead of passing it
    assert any("no schema" in e for e in validate_payload(unsigned["PayloadContent"][0]))
