"""The change set from two manifests, written here by hand (not by a build)."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, strategies as st

from builder.artifacts.changes import change_set, device_inputs, fingerprint, fleet_inputs


def _fleet(**changes):
    values = dict(fleet="acme", identifier="com.acme.1e", organization="ACME", ca_ders=[b"root-ca"],
                  allow_all_apps_access=True, key_is_extractable=False, signer_ders=None)
    values.update(changes)
    return fleet_inputs(**values)


def _manifest(fleet: dict, devices: dict, version: str = "5.1-1", wrapper: str = "w1", skipped=()) -> dict:
    """devices: hostname -> (pfx digest, serial, profile digest)."""
    arts = [{"path": f"acme-{version}.pkg", "kind": "wrapper-pkg", "sha256": wrapper}]
    records = []
    for host, (pfx, serial, profile) in devices.items():
        rel = f"profiles/devices/{host}.mobileconfig"
        arts.append({"path": rel, "kind": "device-profile", "sha256": profile})
        records.append({"hostname": host, "serial": serial, "pfx": pfx, "profile": rel, "signed_profile": None,
                        "inputs": device_inputs(fingerprint(fleet), host, serial, pfx)})
    return {"fleet": "acme", "version": version, "inputs": fleet, "artifacts": arts, "devices": records,
            "skipped_devices": list(skipped)}


def test_each_device_gets_its_status_and_reasons():
    fleet = _fleet()
    old = _manifest(fleet, {"a": ("p1", "S1", "x1"), "b": ("p2", None, "x2"), "c": ("p3", None, "x3"),
                            "MAC-D": ("p4", None, "x4"), "e": ("p5", None, "x5")})
    new = _manifest(fleet, {"a": ("p1", "S1", "x1"), "b": ("p2b", None, "y2"), "c": ("p3", "S3", "y3"),
                            "mac-d": ("p4", None, "y4"), "f": ("p6", None, "y6")}, skipped=["e"])
    doc = change_set(old, new)
    assert doc["previous"] == "acme-5.1-1" and doc["wrapper"] == "unchanged"
    assert doc["devices"] == {"added": ["f"], "changed": ["b", "c", "mac-d"], "removed": ["e"], "unchanged": ["a"]}
    assert doc["reasons"] == {"b": ["pfx changed"], "c": ["serial changed"],
                              "mac-d": ["hostname spelling changed (MAC-D -> mac-d)"],
                              "e": ["skipped: fails the certificate rules"]}
    assert doc["artifacts"]["removed"] == ["profiles/devices/MAC-D.mobileconfig", "profiles/devices/e.mobileconfig"]
    assert doc["artifacts"]["unchanged"] == ["acme-5.1-1.pkg", "profiles/devices/a.mobileconfig"]


def test_fleet_wide_inputs_name_their_reason_for_every_device():
    old = _manifest(_fleet(), {"a": ("p1", None, "x1")})
    for change, reason in [({"ca_ders": [b"root-ca", b"issuing"]}, "CA set changed"),
                           ({"key_is_extractable": True}, "[profiles] settings changed"),
                           ({"signer_ders": [b"signer"]}, "profile signer changed"),
                           ({"identifier": "com.acme.other"}, "fleet identifier changed")]:
        new = _manifest(_fleet(**change), {"a": ("p1", None, "y1")}, wrapper="w2")
        doc = change_set(old, new)
        assert doc["reasons"] == {"a": [reason]} and doc["wrapper"] == "changed"


def test_same_inputs_but_new_bytes_is_a_re_mint():
    fleet = _fleet()
    old = _manifest(fleet, {"a": ("p1", None, "x1")})
    new = _manifest(fleet, {"a": ("p1", None, "y1")})
    assert change_set(old, new)["reasons"] == {"a": ["re-minted (new PKCS#12 and password)"]}
    assert change_set(old, new, fresh=True)["reasons"] == {"a": ["re-minted (--fresh)"]}


def test_ca_order_does_not_matter_and_no_previous_means_everything_is_new():
    assert _fleet(ca_ders=[b"x", b"y"]) == _fleet(ca_ders=[b"y", b"x", b"x"])
    doc = change_set(None, _manifest(_fleet(), {"a": ("p1", None, "x1")}))
    assert doc["previous"] is None and doc["wrapper"] == "new" and doc["devices"]["added"] == ["a"]


@given(st.lists(st.text(), max_size=5))
def test_a_fingerprint_of_strings_is_the_sha256_of_their_canonical_json(parts):
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    assert fingerprint(*parts) == hashlib.sha256(text.encode("ascii")).hexdigest()  # as manifests recorded it
