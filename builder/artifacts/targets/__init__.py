"""Deployment targets: what Munki, Jamf Pro, Intune and a manual install each need from a build.

Each target is a function of the BuildInfo (builder/artifacts/buildinfo.py) and the staging folder; a target
turned off in [targets] writes nothing. DEPLOY.md is written last, in every build, from the
artifacts actually staged.
"""

from __future__ import annotations

from .deploy import write_deploy
from .intune import write_intune
from .jamf import write_jamf
from .munki import write_munki


def write_targets(info, stage) -> None:
    """Write every enabled target's files into the staging folder (see builder/artifacts/buildinfo.py)."""
    targets = info.targets
    sections = {
        "munki": targets.munki is not None,
        "jamf": bool(targets.jamf),
        "intune": bool(targets.intune),
        "manual": bool(targets.manual),
    }
    # Intune's limits are checked first: a build that cannot satisfy them fails before any copy.
    if sections["intune"]:
        write_intune(info, stage)
    if sections["munki"]:
        write_munki(info, stage)
    if sections["jamf"]:
        write_jamf(info, stage)
    write_deploy(info, stage, sections)


__all__ = ["write_targets"]
