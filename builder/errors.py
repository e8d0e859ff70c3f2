"""One error family for the whole tool.

Every failure a user can cause (bad input file, bad config, bad certificate) is raised as a
FleetpkgError subclass carrying the file/device/key at fault and a fix, so the CLI can print one
line and exit with the documented code instead of a traceback.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1  # check/verify found problems
EXIT_USAGE = 2  # usage or input error


class FleetpkgError(Exception):
    """Base class. `where` names the file, device or key; `hint` says how to fix it."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, *, where: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class FormatError(FleetpkgError):
    """A file is not what it claims to be, or is malformed (xar, BOM, cpio, Mach-O, plist...)."""


class ChecksumError(FormatError):
    """Stored and computed checksums differ: the file was damaged or tampered with."""


class UnsupportedError(FormatError):
    """A valid file using a feature fleetpkg does not handle (e.g. Apple Archive payloads)."""


class ConfigError(FleetpkgError):
    """fleet.toml / devices.csv problems."""


class CertificateError(FleetpkgError):
    """A .pfx, CA or signing identity cannot be used."""


class SigningError(FleetpkgError):
    """Package or profile signing/verification failed."""


class BuildError(FleetpkgError):
    """A build step failed (vendor package unusable, output limits exceeded...)."""


class EnrollError(FleetpkgError):
    """A SCEP exchange failed: server unreachable or refusing, a reply that does not verify,
    or a CA certificate that does not match the pinned fingerprint."""
