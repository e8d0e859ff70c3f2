"""What a rebuild changed: the inputs each Mac's sealed identity depends on, and the change set.

A device is carried forward (its sealed PKCS#12, password and profiles reused byte for byte) when
its inputs fingerprint equals the previous build's: the .pfx bytes, hostname, serial, CA set,
[profiles] settings, fleet name/identifier/organization, profile signer and fleetpkg's format for
the device artifacts. The fingerprint is a SHA-256 over those inputs' canonical JSON, never over a
password, so manifest.json can record it. Each component is recorded too, so a change set can say
*why* a device changed ("pfx changed", "CA set changed").

The change set (changes.json, DEPLOY.md's "What changed", `fleetpkg diff`) is computed here from
two manifests, or from the previous manifest and the device records of the build in progress, by
the same functions, so a build's changes.json and `fleetpkg diff OLD NEW` agree by construction.
"""

from __future__ import annotations

import hashlib
import json
from typing import Iterable, Mapping

from .seal import SEALED_NAME

# fleetpkg's format numbers: bump one when the bytes of that artifact change for the same inputs,
# so a rebuild re-makes instead of carrying forward what an older fleetpkg wrote.
DEVICE_FORMAT = 1  # device profiles (unsigned and signed) and the sealed PKCS#12 in them
IDENTITY_PKG_FORMAT = 1  # identity/<host>.pkg
WRAPPER_FORMAT = 1  # the wrapper product archive
PKGINFO_FORMAT = 1  # a Munki pkginfo's bytes for the same document (Staging.write_doc)
MANIFEST_FORMAT = 2  # manifest.json with "inputs", "devices" and "wrapper" (1: before carry-forward)

# Files that describe the build rather than deploy it: never compared (DEPLOY.md holds the
# change set, which cannot list itself). Nor is a sealed build's secrets.tar.age: its members are
# compared one by one (the manifest lists their plaintext digests), and its own bytes differ with
# every seal (age encrypts under a fresh key), so it would always read "changed" (or, written
# after changes.json, "removed").
NOT_COMPARED = frozenset({"DEPLOY.md", "changes.json", "intune/CHANGES.md", SEALED_NAME})

# fleet-wide inputs, in the order reasons are given, with their wording
FLEET_FIELDS = (
    ("format", "made by a fleetpkg with another device format"),
    ("fleet", "fleet name changed"),
    ("identifier", "fleet identifier changed"),
    ("organization", "organization changed"),
    ("cas", "CA set changed"),
    ("profiles", "[profiles] settings changed"),
    ("profile_signer", "profile signer changed"),
)
STATUSES = ("added", "changed", "removed", "unchanged")


def fingerprint(*parts) -> str:
    """SHA-256 (hex) of the parts' canonical JSON: equal inputs give equal fingerprints."""
    if all(type(p) is str for p in parts):  # a device's inputs: the text json.dumps writes, without its setup
        text = "[" + ",".join(map(_ascii, parts)) + "]"
    else:
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


_ascii = json.encoder.encode_basestring_ascii


def fleet_inputs(*, fleet: str, identifier: str, organization: str, ca_ders: Iterable[bytes],
                 allow_all_apps_access: bool, key_is_extractable: bool,
                 signer_ders: Iterable[bytes] | None) -> dict:
    """The inputs every device shares (recorded as manifest.json "inputs")."""
    cas = sorted({hashlib.sha256(d).hexdigest() for d in ca_ders})
    signer = None if signer_ders is None else fingerprint([hashlib.sha256(d).hexdigest() for d in signer_ders])
    return {"format": DEVICE_FORMAT, "fleet": fleet, "identifier": identifier, "organization": organization,
            "cas": fingerprint(cas),
            "profiles": {"allow_all_apps_access": allow_all_apps_access, "key_is_extractable": key_is_extractable},
            "profile_signer": signer}


def device_inputs(fleet_digest: str, hostname: str, serial: str | None, pfx_sha256: str) -> str:
    """A device's inputs fingerprint; fleet_digest = fingerprint(fleet_inputs(...))."""
    return fingerprint(fleet_digest, hostname, serial or "", pfx_sha256)


def device_reasons(old_fleet: Mapping | None, new_fleet: Mapping, old: Mapping, new: Mapping) -> list[str]:
    """Why a device's inputs differ from its previous build's (empty: they are the same)."""
    if not old.get("inputs") or old_fleet is None:
        return ["made by an older fleetpkg (no inputs recorded)"]
    reasons = []
    if old.get("hostname") != new.get("hostname"):
        reasons.append(f"hostname spelling changed ({old.get('hostname')} -> {new.get('hostname')})")
    if old.get("pfx") != new.get("pfx"):
        reasons.append("pfx changed")
    if (old.get("serial") or "") != (new.get("serial") or ""):
        reasons.append("serial changed")
    reasons += [label for key, label in FLEET_FIELDS if old_fleet.get(key) != new_fleet.get(key)]
    if not reasons and old.get("inputs") != new.get("inputs"):
        reasons.append("inputs changed")
    return reasons


def remint_reason(*, fresh: bool, untrusted: str | None, sealed: bool = False) -> str:
    if fresh:
        return "re-minted (--fresh)"
    if untrusted:
        return "re-minted (previous build not trusted)"
    if sealed:
        return "re-minted (previous build is sealed)"
    return "re-minted (new PKCS#12 and password)"


def classify(old_fleet: Mapping | None, new_fleet: Mapping, old: Mapping | None, new: Mapping,
             same_profiles: bool, *, fresh: bool = False, untrusted: str | None = None,
             sealed: bool = False) -> tuple[str, list[str]]:
    """(status, reasons) of one device in the new build; `same_profiles`: its device profiles
    are byte-identical to the previous build's. Workers (Munki notes, Jamf scoping) and the
    change set both ask this function."""
    if old is None:
        return "added", []
    same_inputs = old_fleet is not None and old.get("inputs") and old.get("inputs") == new.get("inputs")
    reasons = [] if same_inputs else device_reasons(old_fleet, new_fleet, old, new)
    if not reasons and same_profiles:
        return "unchanged", []
    return "changed", reasons or [remint_reason(fresh=fresh, untrusted=untrusted, sealed=sealed)]


# -- reading manifests ------------------------------------------------------------------------------

def build_name(doc: Mapping) -> str:
    return f"{doc.get('fleet')}-{doc.get('version')}"


def artifact_digests(doc: Mapping) -> dict[str, str]:
    return {a["path"]: a.get("sha256") for a in doc.get("artifacts", ())
            if isinstance(a, dict) and isinstance(a.get("path"), str)}


def device_records(doc: Mapping) -> dict[str, dict]:
    """Device records by case-folded hostname. A manifest of an older fleetpkg has none: its
    devices are read from its device-profile artifacts (no inputs, so every one is re-minted)."""
    records = doc.get("devices")
    if isinstance(records, list):
        return {r["hostname"].casefold(): r for r in records
                if isinstance(r, dict) and isinstance(r.get("hostname"), str)}
    out = {}
    prefix, suffix = "profiles/devices/", ".mobileconfig"
    for art in doc.get("artifacts", ()):
        path = art.get("path", "") if isinstance(art, dict) else ""
        if art.get("kind") == "device-profile" and path.startswith(prefix) and path.endswith(suffix):
            host = path[len(prefix):-len(suffix)]
            out[host.casefold()] = {"hostname": host, "profile": path}
    return out


def _same_profiles(old: Mapping, new: Mapping, old_sums: Mapping, new_sums: Mapping) -> bool:
    pairs = [(old.get("profile"), new.get("profile")), (old.get("signed_profile"), new.get("signed_profile"))]
    for o, n in pairs:
        if (o is None) != (n is None):
            return False
        if o is not None and (old_sums.get(o) is None or old_sums.get(o) != new_sums.get(n)):
            return False
    return True


# -- the change set ---------------------------------------------------------------------------------

def compare_devices(old: Mapping | None, new_fleet: Mapping, new_records: Iterable[Mapping],
                    new_sums: Mapping[str, str], skipped: Iterable[str] = (), *, fresh: bool = False,
                    untrusted: str | None = None, old_sums: Mapping[str, str] | None = None,
                    old_records: Mapping[str, dict] | None = None, sealed: bool | None = None) -> dict:
    """{"devices": {status: [hostnames]}, "reasons": {hostname: [...]}} (sorted). old_sums and
    old_records: artifact_digests(old) and device_records(old), when the caller has them. sealed:
    the old build's identities could not be read (default: it is sealed, by its manifest)."""
    if old_records is None:
        old_records = device_records(old) if old else {}
    if old_sums is None:
        old_sums = artifact_digests(old) if old else {}
    old_fleet = old.get("inputs") if old else None
    groups: dict[str, list[str]] = {s: [] for s in STATUSES}
    reasons: dict[str, list[str]] = {}
    seen = set()
    for rec in new_records:
        key = rec["hostname"].casefold()
        seen.add(key)
        prev = old_records.get(key)
        same = prev is not None and _same_profiles(prev, rec, old_sums, new_sums)
        status, why = classify(old_fleet, new_fleet, prev, rec, same, fresh=fresh, untrusted=untrusted,
                               sealed=bool(old and old.get("sealed_to")) if sealed is None else sealed)
        groups[status].append(rec["hostname"])
        if why:
            reasons[rec["hostname"]] = why
    skipped_keys = {h.casefold() for h in skipped}
    for key, prev in old_records.items():
        if key not in seen:
            groups["removed"].append(prev["hostname"])
            reasons[prev["hostname"]] = [
                "skipped: fails the certificate rules" if key in skipped_keys else "not in the inventory"]
    return {"devices": {s: sorted(v) for s, v in groups.items()}, "reasons": dict(sorted(reasons.items()))}


def compare_artifacts(old: Mapping | None, new_sums: Mapping[str, str], wrapper_sha256: str | None, *,
                      old_sums: Mapping[str, str] | None = None) -> dict:
    """{"wrapper": "new"|"changed"|"unchanged", "artifacts": {status: [paths]}} (sorted)."""
    if old_sums is None:
        old_sums = artifact_digests(old) if old else {}
    groups: dict[str, list[str]] = {s: [] for s in STATUSES}
    for path, digest in new_sums.items():
        if path in NOT_COMPARED:
            continue
        if path not in old_sums:
            groups["added"].append(path)
        else:
            groups["unchanged" if old_sums[path] == digest else "changed"].append(path)
    groups["removed"] = [p for p in old_sums if p not in new_sums and p not in NOT_COMPARED]
    return {"wrapper": wrapper_status(old, wrapper_sha256), "artifacts": {s: sorted(v) for s, v in groups.items()}}


def wrapper_status(old: Mapping | None, wrapper_sha256: str | None) -> str:
    """"new" (no previous wrapper), "unchanged" (the same bytes), or "changed"."""
    old_wrappers = {a.get("sha256") for a in (old or {}).get("artifacts", ())
                    if isinstance(a, dict) and a.get("kind") == "wrapper-pkg"}
    return "new" if not old_wrappers else "unchanged" if wrapper_sha256 in old_wrappers else "changed"


def change_set(old: Mapping | None, new: Mapping, *, fresh: bool = False, untrusted: str | None = None,
               sealed_note: str | None = None, sealed: bool | None = None) -> dict:
    """The whole change set between two manifests (what `fleetpkg diff` prints)."""
    sums = artifact_digests(new)
    devices = compare_devices(old, new.get("inputs") or {}, device_records(new).values(), sums,
                              new.get("skipped_devices") or (), fresh=fresh, untrusted=untrusted, sealed=sealed)
    wrapper = next((a.get("sha256") for a in new.get("artifacts", ())
                    if isinstance(a, dict) and a.get("kind") == "wrapper-pkg"), None)
    return assemble(old, devices, compare_artifacts(old, sums, wrapper), fresh=fresh, untrusted=untrusted,
                    sealed_note=sealed_note)


def assemble(old: Mapping | None, devices: dict, artifacts: dict, *, fresh: bool, untrusted: str | None,
             sealed_note: str | None = None) -> dict:
    """changes.json's document from compare_devices' and compare_artifacts' halves. "note": why
    the previous build was not trusted; "sealed_note": why its sealed identities were not read."""
    out = {"previous": build_name(old) if old else None, "fresh": fresh, "wrapper": artifacts["wrapper"],
           "devices": devices["devices"], "reasons": devices["reasons"], "artifacts": artifacts["artifacts"]}
    if untrusted:
        out["note"] = untrusted
    if sealed_note:
        out["sealed_note"] = sealed_note
    return out


def to_json(changes: Mapping) -> bytes:
    """changes.json: what json.dumps(indent=1, sort_keys=True) writes, built with json's C
    encoder per value (a large fleet's lists hold ~8 paths per Mac)."""
    encode = json.JSONEncoder(sort_keys=True).encode
    text = json.encoder.encode_basestring_ascii

    def block(value, indent: str) -> str:
        inner = indent + " "
        if isinstance(value, dict) and value:
            items = [f"{inner}{encode(k)}: {block(v, inner)}" for k, v in sorted(value.items())]
            return "{\n" + ",\n".join(items) + f"\n{indent}}}"
        if isinstance(value, list) and value:
            if all(type(v) is str for v in value):
                return f"[\n{inner}" + f",\n{inner}".join(map(text, value)) + f"\n{indent}]"
            return "[\n" + ",\n".join(f"{inner}{block(v, inner)}" for v in value) + f"\n{indent}]"
        return encode(value)

    return (block(changes, "") + "\n").encode("utf-8")
