"""What a build made, as plain data: the contract between the pipeline and the deployment targets.

The pipeline fills a BuildInfo after the wrapper, profiles and identity packages are staged;
each target (Munki, Jamf, Intune, DEPLOY.md) is a function of a BuildInfo and the staging folder,
and knows nothing of how the artifacts were made.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ..formats.pkg.conclusion import NONE, strongest


@dataclass(frozen=True)
class Receipt:
    identifier: str
    version: str
    install_kbytes: int
    on_conclusion: str = NONE  # what Installer asks after installing it: None, RequireRestart...


@dataclass(frozen=True)
class DeviceArtifacts:
    hostname: str
    serial: str | None
    not_after: datetime | None
    profile: str | None  # dist-relative path of profiles/devices/<host>.mobileconfig
    signed_profile: str | None  # ... .signed.mobileconfig when a profile signer is configured
    identity_pkg: str | None  # identity/<host>.pkg when the manual target is on
    identity_pkg_id: str | None  # its package identifier (receipt)
    identity_version: str | None
    change: str | None = None  # "added", "changed" or "unchanged" since the previous build (None: first build)
    reasons: tuple[str, ...] = ()  # why it changed ("pfx changed", ...)


@dataclass(frozen=True)
class Changes:
    """The part of the change set the deployment targets need before they are written (the
    artifact half is only known once they are: changes.json and DEPLOY.md get the whole)."""

    previous: str | None  # the previous build's name, None for a first build
    fresh: bool  # --fresh: every identity re-minted
    note: str | None  # why the previous build was not trusted, if it was not
    wrapper: str  # "new", "changed" or "unchanged"
    removed: tuple[tuple[str, str | None], ...]  # (hostname, serial) of Macs no longer in the build
    fleet_profiles: tuple[str, ...] = ()  # fleet-wide profiles ("trust", "login-items") new or changed


@dataclass(frozen=True)
class BuildInfo:
    fleet: str
    organization: str
    identifier: str  # reverse-DNS prefix from the config
    version: str  # wrapper version: vendor version + "-" + build
    vendor_identifier: str
    vendor_version: str
    wrapper: str  # dist-relative path of the wrapper .pkg
    wrapper_signed_by: str | None  # signer subject, None when unsigned
    receipts: tuple[Receipt, ...]  # every component the wrapper installs, install order
    minimum_os: str  # e.g. "11.0"
    binary_path: str  # the 1E Client binary on the Mac
    daemon_label: str
    conf_path: str
    needs_rosetta: bool
    support_dir: str  # /Library/Application Support/fleetpkg/<fleet>
    client_settings: tuple[tuple[str, str], ...]
    scripts: dict  # rendered wrapper scripts by name: "preinstall", "postinstall", "uninstall.sh", ...
    trust_profile: str | None
    login_items_profile: str | None
    signed_trust_profile: str | None
    signed_login_items_profile: str | None
    devices: tuple[DeviceArtifacts, ...]  # inventory order, built devices only
    skipped_devices: tuple[str, ...]  # hostnames left out by --skip-failed-devices
    targets: object  # builder.fleet.config.Targets
    built_at: datetime
    changes: Changes | None = None  # None: no change set (targets written outside a build)

    @property
    def on_conclusion(self) -> str:
        """The strongest action any installed component asks for: the wrapper's own restart need."""
        return strongest(r.on_conclusion for r in self.receipts)

    @property
    def conclusion_by(self) -> tuple[str, ...]:
        """Identifiers of the components that ask for it."""
        need = self.on_conclusion
        return tuple(r.identifier for r in self.receipts if need != NONE and r.on_conclusion == need)
