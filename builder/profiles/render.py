"""Unsigned rendering: the XML plist MDMs take for upload (Intune, Jamf API, Fleet)."""

from __future__ import annotations

import plistlib

from ..errors import BuildError


def render_xml(profile: dict) -> bytes:
    """XML plist, keys sorted: equal dictionaries always give identical bytes."""
    try:
        return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=True)
    except (TypeError, OverflowError, ValueError) as exc:
        raise BuildError(f"profile is not a property list: {exc}",
                         where=str(profile.get("PayloadIdentifier", "profile"))) from None
