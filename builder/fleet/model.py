"""The fleet's configuration as plain frozen dataclasses: what config.py and inventory.py produce and
every later step reads. Stored paths are absolute; passwords are sources, never values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .passwords import ChallengeSource, PasswordSource


@dataclass(frozen=True)
class Fleet:
    name: str  # [a-z0-9-], used in file names
    organization: str
    identifier: str  # reverse-DNS prefix for package and profile identifiers
    build: int  # wrapper version = vendor version + "-" + build
    minimum_os: str | None  # e.g. "11.0"


@dataclass(frozen=True)
class Vendor:
    package: Path  # the vendor's .pkg, .dmg or .zip
    allow_foreign_vendor: bool  # accept a package not signed/identified as 1E's


@dataclass(frozen=True)
class ClientSettings:
    """1E.Client.conf settings in fleet.toml order, all values as text. The 1E client reads keys
    case-insensitively, so lookups here do too (and two keys differing in case are refused)."""

    items: tuple[tuple[str, str], ...]

    def get(self, key: str, default: str | None = None) -> str | None:
        folded = key.casefold()
        for k, v in self.items:
            if k.casefold() == folded:
                return v
        return default

    @property
    def switch(self) -> str:
        return self.get("Switch")  # type: ignore[return-value]  # required, validated

    @property
    def switches(self) -> tuple[str, ...]:
        """Each host:port of Switch (a DMZ Switch may follow the first, ',' or ';' separated)."""
        return tuple(split_list(self.switch))

    @property
    def background_channel_url(self) -> str:
        return self.get("BackgroundChannelUrl")  # type: ignore[return-value]

    def as_dict(self) -> dict[str, str]:
        return dict(self.items)


@dataclass(frozen=True)
class Trust:
    certificates: tuple[Path, ...]  # PEM or DER files: roots and intermediates


@dataclass(frozen=True)
class Device:
    hostname: str  # case kept: the certificate must match it exactly
    pfx: Path
    serial: str | None
    password: PasswordSource | None  # the row's own source, else [devices] default, else None
    inventory: str  # the CSV as shown to the user, for messages
    line: int  # 1-based line in the CSV

    @property
    def where(self) -> str:
        return f"device {self.hostname} ({self.inventory}:{self.line})"


@dataclass(frozen=True)
class Inventory:
    path: Path  # devices.csv
    default_password: PasswordSource | None


@dataclass(frozen=True)
class SigningIdentity:
    """Either a .p12 (`p12`) or PEM certificate + key (+ chain). `password` unlocks the .p12 or
    an encrypted PEM key; None means unencrypted PEM key, or ask (--ask-password)."""

    role: str  # "installer" or "profile"
    p12: Path | None
    certificate: Path | None
    key: Path | None
    chain: tuple[Path, ...]
    password: PasswordSource | None


@dataclass(frozen=True)
class Signing:
    installer: SigningIdentity | None = None
    profile: SigningIdentity | None = None
    timestamp_url: str | None = None


@dataclass(frozen=True)
class Profiles:
    allow_all_apps_access: bool = True
    key_is_extractable: bool = False


@dataclass(frozen=True)
class MunkiTarget:
    catalogs: tuple[str, ...] = ("testing",)
    name: str = "1E-Client"
    # Per-Mac identity items: off by default, because a Munki repository serves every item to
    # every client (installable_condition limits installs, not downloads).
    identities: bool = False


@dataclass(frozen=True)
class Targets:
    munki: MunkiTarget | None = MunkiTarget()  # None = disabled
    jamf: bool = True
    intune: bool = True
    manual: bool = True


@dataclass(frozen=True)
class Enroll:
    """[enroll]: where `fleetpkg enroll` requests device certificates over SCEP."""

    scep_url: str
    ca_fingerprint: str | None  # SHA-256 of the CA or RA certificate, lowercase hex
    challenge: ChallengeSource | None  # None: the server asks for no challenge
    key_size: int = 2048  # RSA bits
    subject: tuple[tuple[str, str], ...] = ()  # (C|ST|L|O|OU, value) in file order; CN = hostname
    renew_within_days: int = 30


@dataclass(frozen=True)
class Secrets:
    """[secrets]: age recipients (public keys, as text) a build seals its secret files to."""

    recipients: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetConfig:
    path: Path  # fleet.toml, absolute
    fleet: Fleet
    vendor: Vendor
    client: ClientSettings
    trust: Trust
    inventory: Inventory
    devices: tuple[Device, ...]  # inventory order
    signing: Signing
    profiles: Profiles
    targets: Targets
    enroll: Enroll | None = None
    secrets: Secrets = Secrets()

    @property
    def root(self) -> Path:
        return self.path.parent


def split_list(value: str) -> list[str]:
    """Several hosts or URLs in one 1E.Client.conf value, ',' or ';' separated."""
    return re.split(r"[,;]", value)
