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


def scoping_csv(rows) -> str:
    """hostname,serial,profile (paths relative to jamf/); csv quoting, LF line ends."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["hostname", "serial", "profile"])
    for row in rows:
        writer.writerow(row)
    return buf.getvalue()


def write_jamf(info, stage) -> dict:
    """Write jamf/; returns what README and DEPLOY.md need to name."""
    wrapper_name = info.wrapper.rsplit("/", 1)[-1]
    copy_artifact(stage, info.wrapper, f"jamf/{wrapper_name}", kind="jamf-pkg", signed=info.wrapper_signed_by)
    signers = {a.path: a.signed for a in stage.artifacts}
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
            copy_artifact(stage, signed, s, kind=f"jamf-{name}-profile-signed", signed=signers.get(signed))
        profiles.append((name, u, s))
    rows = []
    for device in info.devices:
        u = s = None
        if device.profile:
            u = f"jamf/profiles/devices/{device.hostname}.mobileconfig"
            copy_artifact(stage, device.profile, u, kind="jamf-device-profile", secret=True)
        if device.signed_profile:
            s = f"jamf/profiles/devices/{device.hostname}.signed.mobileconfig"
            copy_artifact(stage, device.signed_profile, s, kind="jamf-device-profile-signed", secret=True,
                          signed=signers.get(device.signed_profile))
        rows.append((device.hostname, device.serial or "", u.removeprefix("jamf/") if u else ""))
    text_file(stage, "jamf/scoping.csv", scoping_csv(rows), kind="jamf-scoping")
    text_file(stage, "jamf/extension-attribute.sh", info.scripts["jamf-ea.sh"], kind="jamf-extension-attribute",
              executable=True)
    any_signed_profile = any(s for _, _, s in profiles) or any(d.signed_profile for d in info.devices)
    text_file(stage, "jamf/README.md", render(
        "targets-jamf-README.md.j2", info=info, wrapper=wrapper_name, profiles=profiles,
        any_signed_profile=any_signed_profile, devices=info.devices), kind="jamf-notes")
    return {"wrapper": f"jamf/{wrapper_name}", "profiles": profiles}

