"""Jamf Pro: the wrapper, the profiles in both renderings, the health check as an extension
attribute, a scoping table for the per-computer identity profiles, and upload notes.

Which rendering goes where (profiles-and-mdm.md sections 3.5 and 6.1): the Jamf Pro API takes the
unsigned XML; the web interface re-serialises unsigned uploads (keys it does not model can be
lost), so a signed profile is the one to upload there when a profile signer is configured.
"""

from __future__ import annotations

import csv
import io

from ..templating import render
from .common import copy_artifact, text_file


# What the admin does in Jamf with each Mac's identity profile, by its change since the previous build.
SCOPING_ACTIONS = {None: "upload", "added": "upload", "changed": "replace", "unchanged": "keep"}
REMOVED_ACTION = "delete"


def scoping_csv(rows) -> str:
    """hostname,serial,profile,action (paths relative to jamf/); csv quoting, LF line ends.
    action: upload (new Mac or first build), replace (new identity), keep (byte-identical to the
    previous build's), delete (the Mac left the fleet: remove its profile from Jamf)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["hostname", "serial", "profile", "action"])
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def device_profile_copies(device, stage) -> str | None:
    """Copy one Mac's identity profiles into jamf/profiles/devices/ (the build's worker processes
    do this per device); returns the unsigned copy's path relative to jamf/."""
    u = None
    if device.profile:
        u = f"jamf/profiles/devices/{device.hostname}.mobileconfig"
        copy_artifact(stage, device.profile, u, kind="jamf-device-profile", secret=True)
    if device.signed_profile:
        known = stage.artifact(device.signed_profile)
        copy_artifact(stage, device.signed_profile, f"jamf/profiles/devices/{device.hostname}.signed.mobileconfig",
                      kind="jamf-device-profile-signed", secret=True, signed=known.signed if known else None)
    return u.removeprefix("jamf/") if u else None


def scoping_rows(info) -> list[tuple[str, str, str, str]]:
    rows = [(d.hostname, d.serial or "", f"profiles/devices/{d.hostname}.mobileconfig" if d.profile else "",
             SCOPING_ACTIONS.get(d.change, "upload")) for d in info.devices]
    if info.changes is not None:
        rows += [(host, serial or "", "", REMOVED_ACTION) for host, serial in info.changes.removed]
    return rows


def write_jamf(info, stage, *, per_device: bool = True) -> dict:
    """Write jamf/; returns what README and DEPLOY.md need to name. per_device=False: the device
    profiles' copies were made already (by the build's workers, device_profile_copies)."""
    wrapper_name = info.wrapper.rsplit("/", 1)[-1]
    copy_artifact(stage, info.wrapper, f"jamf/{wrapper_name}", kind="jamf-pkg", signed=info.wrapper_signed_by)
    profiles = []  # (name, unsigned rel, signed rel | None)
    for name, unsigned, signed in (("trust", info.trust_profile, info.signed_trust_profile),
                                   ("login-items", info.login_items_profile, info.signed_login_items_profile)):
        if not unsigned:
            continue
        u = f"jamf/profiles/{name}.mobileconfig"
        copy_artifact(stage, unsigned, u, kind=f"jamf-{name}-profile")
        s = None
        if signed:
            s = f"jamf/profiles/{name}.signed.mobileconfig"
            known = stage.artifact(signed)
            copy_artifact(stage, signed, s, kind=f"jamf-{name}-profile-signed", signed=known.signed if known else None)
        profiles.append((name, u, s))
    if per_device:
        for device in info.devices:
            device_profile_copies(device, stage)
    rows = scoping_rows(info)
    text_file(stage, "jamf/scoping.csv", scoping_csv(rows), kind="jamf-scoping")
    text_file(stage, "jamf/extension-attribute.sh", info.scripts["jamf-ea.sh"], kind="jamf-extension-attribute",
              executable=True)
    any_signed_profile = any(s for _, _, s in profiles) or any(d.signed_profile for d in info.devices)
    text_file(stage, "jamf/README.md", render(
        "targets-jamf-README.md.j2", info=info, wrapper=wrapper_name, profiles=profiles,
        any_signed_profile=any_signed_profile, devices=info.devices), kind="jamf-notes")
    return {"wrapper": f"jamf/{wrapper_name}", "profiles": profiles}

