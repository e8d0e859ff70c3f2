"""Plain data passed between certificate loading, linting and re-encoding."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Identity:
    """A device certificate with its private key and the other certificates its .pfx carried.

    The key is kept out of repr/eq so it cannot end up in logs or assertion messages.
    """

    certificate: x509.Certificate
    key: PrivateKeyTypes = field(repr=False, compare=False)
    extra_certificates: tuple[x509.Certificate, ...] = ()
    source: Path | None = None


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one device: severity "error" fails the device, "warning" does not."""

    rule: str
    severity: str
    message: str


@dataclass(frozen=True)
class Rule:
    """A documented requirement with a stable id (used in `check` output and the docs)."""

    id: str
    title: str
    explanation: str
    fix: str
