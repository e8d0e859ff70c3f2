"""Deterministic PayloadUUIDs.

macOS updates a payload in place when a replacement profile carries the same PayloadIdentifier
*and* PayloadUUID, so the UUID must change exactly when the payload's meaning changes. It is a
uuid5 of the identifier plus a digest of the payload's non-secret content: rebuilding from the same
inputs gives the same UUIDs, while fresh PKCS#12 salts or passwords (secret, random by design)
do not churn them.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from ..formats import plistxml

# uuid5(NAMESPACE_URL, "urn:fleetpkg:profiles"); frozen so UUIDs never change across versions.
NAMESPACE = uuid.UUID("c50623c3-398b-51a7-85c2-c0a825b0edb2")


def content_digest(view: Any) -> str:
    """SHA-256 (hex) of a plist-serialisable value, keys sorted, so dict order never matters."""
    return hashlib.sha256(plistxml.dumps(view)).hexdigest()  # plistlib's XML bytes


def payload_uuid(identifier: str, view: Any) -> str:
    """Upper-case UUID string (the form Apple's tools write) for `identifier` and its content view."""
    return str(uuid.uuid5(NAMESPACE, f"{identifier}\n{content_digest(view)}")).upper()
