"""Unsigned rendering: the XML plist MDMs take for upload (Intune, Jamf API, Fleet)."""

from __future__ import annotations

from ..formats import plistxml

from ..errors import BuildError


def render_xml(profile: dict) -> bytes:
    """XML plist, keys sorted (plistlib's bytes, written faster): equal dictionaries always give identical bytes."""
    try:
        return plistxml.dumps(profile)
    except (TypeError, OverflowError, ValueError) as exc:
        raise BuildError(f"profile is not a property list: {exc}",
                         where=str(profile.get("PayloadIdentifier", "profile"))) from None
