"""Deployment targets: what Munki, Jamf Pro, Intune and a manual install each need from a build."""

from __future__ import annotations


def write_targets(info, stage) -> None:
    """Write every enabled target's files into the staging folder (see builder/buildinfo.py)."""
