"""Deployment targets: what Munki, Jamf Pro, Intune and a manual install each need from a build.

Each target is a function of the BuildInfo (builder/artifacts/buildinfo.py) and the staging folder; a target
turned off in [targets] writes nothing. A build's per-device files (profile copies, Munki identity
items) are written by its worker processes (write_device_targets), the rest by write_targets.
DEPLOY.md is written last, in every build, from the artifacts actually staged.
"""

from __future__ import annotations

from .deploy import write_deploy
from .intune import device_profile_copy, write_intune
from .jamf import device_profile_copies, write_jamf
from .munki import identity_item, write_munki


def sections_of(targets) -> dict[str, bool]:
    return {
        "munki": targets.munki is not None,
        "jamf": bool(targets.jamf),
        "intune": bool(targets.intune),
        "manual": bool(targets.manual),
    }


def write_targets(info, stage, *, per_device: bool = True, deploy: bool = True) -> None:
    """Write every enabled target's files into the staging folder (see builder/artifacts/buildinfo.py).

    per_device=False: the per-device files were written already (write_device_targets, in the
    build's workers). deploy=False: the caller writes DEPLOY.md (write_deploy) once it has the
    change set, which needs every other file staged."""
    sections = sections_of(info.targets)
    # Intune's limits are checked first: a build that cannot satisfy them fails before any copy.
    if sections["intune"]:
        write_intune(info, stage, per_device=per_device)
    if sections["munki"]:
        write_munki(info, stage, per_device=per_device)
    if sections["jamf"]:
        write_jamf(info, stage, per_device=per_device)
    if deploy:
        write_deploy(info, stage, sections)


def write_device_targets(info, device, names: list[str], stage) -> str | None:
    """One Mac's files in every enabled target. `info` needs fleet, version, minimum_os and
    targets (a BuildInfo, or the worker's DeviceTargetInfo); `names`: munki.host_names' entry.
    Returns the Munki identity pkginfo's path, if one was written."""
    targets = info.targets
    pkginfo = None
    if targets.intune:
        device_profile_copy(device, stage)
    if targets.munki is not None and targets.munki.identities:
        pkginfo = identity_item(info, device, names, stage)
    if targets.jamf:
        device_profile_copies(device, stage)
    return pkginfo


__all__ = ["sections_of", "write_deploy", "write_device_targets", "write_targets"]
