"""Intune: files for the "macOS app (PKG)" (unmanaged) app type and custom configuration profiles.

Limits are Microsoft's (profiles-and-mdm.md section 6.2) and are checked here, at build time,
because Intune only refuses an upload after the admin has filled in the whole form:
- pre-/post-install scripts: at most 15,360 characters each (the admin center counts characters);
- custom configuration profiles: at most 1,000,000 bytes, unsigned XML (a signed DER file is not
  accepted as a custom profile as far as anyone has confirmed).
"""

from __future__ import annotations

import os

from ...errors import BuildError
from ..templating import render
from .common import change_lists, copy_artifact, text_file

SCRIPT_LIMIT = 15_360  # characters
PROFILE_LIMIT = 1_000_000  # bytes
DISK_MARGIN_KB = 262_144  # 256 MiB beyond the installed size: logs, conf backups, Rosetta 2's download


def check_script(name: str, text: str) -> str:
    if len(text) > SCRIPT_LIMIT:
        raise BuildError(f"the Intune {name} script is {len(text):,} characters; Intune accepts at most "
                         f"{SCRIPT_LIMIT:,}", where=f"intune/{name}",
                         hint="please report this fleetpkg bug; meanwhile build with [targets] intune = false")
    return text


def check_profile(rel: str, size: int) -> None:
    if size > PROFILE_LIMIT:
        raise BuildError(f"the profile is {size:,} bytes; Intune custom configuration profiles may be at most "
                         f"{PROFILE_LIMIT:,} bytes", where=rel,
                         hint="use fewer or smaller CA certificates, or deliver this identity with Intune's "
                              "PKCS certificate profile instead")


def render_scripts(info) -> dict[str, str]:
    installed_kb = sum(r.install_kbytes for r in info.receipts)
    values = {"info": info, "need_kb": installed_kb + DISK_MARGIN_KB,
              "wrapper_name": info.wrapper.rsplit("/", 1)[-1]}
    return {
        "preinstall.sh": check_script("preinstall.sh", render("targets-intune-preinstall.sh.j2", **values)),
        "postinstall.sh": check_script("postinstall.sh", render("targets-intune-postinstall.sh.j2", **values)),
    }


def device_profile_copy(device, stage) -> None:
    """Copy one Mac's unsigned identity profile into intune/profiles/devices/, within Intune's
    limit (the build's worker processes do this per device)."""
    if device.profile:
        known = stage.artifact(device.profile)
        check_profile(device.profile, known.size if known else os.stat(stage.fspath(device.profile)).st_size)
        copy_artifact(stage, device.profile, _device_rel(device), kind="intune-device-profile", secret=True)


def _device_rel(device) -> str:
    return f"intune/profiles/devices/{device.hostname}.mobileconfig"


def write_intune(info, stage, *, per_device: bool = True) -> dict:
    """Write intune/. per_device=False: the device profiles' copies were made already (by the
    build's workers, device_profile_copy)."""
    wrapper_name = info.wrapper.rsplit("/", 1)[-1]
    scripts = render_scripts(info)
    profiles = []  # (what, source rel, intune rel)
    for what, rel, name in (("trust", info.trust_profile, "trust"),
                            ("login-items", info.login_items_profile, "login-items")):
        if rel:
            profiles.append((what, rel, f"intune/profiles/{name}.mobileconfig", False))
    if per_device:
        profiles += [("device", d.profile, _device_rel(d), True) for d in info.devices if d.profile]
    for _what, src, _dst, _secret in profiles:  # check all before writing any
        known = stage.artifact(src)
        check_profile(src, known.size if known is not None else stage.path(src).stat().st_size)

    copy_artifact(stage, info.wrapper, f"intune/{wrapper_name}", kind="intune-pkg", signed=info.wrapper_signed_by)
    for name, text in scripts.items():
        kind = "intune-" + name.removesuffix(".sh") + "-script"
        text_file(stage, f"intune/{name}", text, kind=kind, executable=True)
    for what, src, dst, secret in profiles:
        art = copy_artifact(stage, src, dst, kind=f"intune-{what}-profile", secret=secret)
        check_profile(dst, art.size)
    text_file(stage, "intune/detection.md", render(
        "targets-intune-detection.md.j2", info=info, wrapper=wrapper_name,
        configure=_configure_receipt(info)), kind="intune-notes")
    if info.changes is not None:
        text_file(stage, "intune/CHANGES.md", render("targets-intune-changes.md.j2", info=info,
                                                     wrapper=wrapper_name, **change_lists(info)),
                  kind="intune-changes")
    return {"wrapper": f"intune/{wrapper_name}"}


def _configure_receipt(info):
    """The receipt whose version changes with every build (the fleet's configure component)."""
    for receipt in reversed(info.receipts):
        if receipt.identifier == f"{info.identifier}.configure":
            return receipt
    return info.receipts[-1]
