"""The three profiles fleetpkg ships: per-device identity, fleet trust, managed login items.

Identifiers are stable so re-issuing a profile replaces the installed one instead of adding a
second copy. Host names are lower-cased in identifiers: macOS host names (LocalHostName, DNS) are
case-insensitive, and a devices.csv that spells a Mac "MAC-01" one month and "mac-01" the next must
still address the same installed profile. The display texts and the .p12 file name keep the
spelling the admin gave.
"""

from __future__ import annotations

import re
from typing import Sequence

from cryptography import x509
from ..certs.pfx import identity_from, parse_pfx
from ..errors import CertificateError, ConfigError, FleetpkgError
from .model import (CertificatePayload, IdentityPayload, LoginItemsPayload, Payload, Profile, Rule,
                    ca_facts)

_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$")
_HOST = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$")
_TEAM_ID = re.compile(r"^[A-Z0-9]{10}$")


def _check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix or ""):
        raise ConfigError(f"not a reverse-DNS identifier: {prefix!r}", where="identifier_prefix",
                          hint="use letters, digits, '-' and '.', e.g. com.example.1e")
    return prefix


def _check_host(hostname: str) -> str:
    if not _HOST.match(hostname or "") or ".." in hostname:
        raise ConfigError(f"not a valid host name: {hostname!r}", where=f"device {hostname!r}",
                          hint="use the Mac's LocalHostName: letters, digits, '-' (and '.')")
    return hostname


def _ca_payloads(prefix: str, organization: str, roots: Sequence[x509.Certificate],
                 intermediates: Sequence[x509.Certificate]) -> list[CertificatePayload]:
    """One payload per distinct certificate, roots first, each group sorted by name then hash.

    A certificate given both as root and intermediate is kept once, as a root.
    """
    seen: set[str] = set()
    out: list[CertificatePayload] = []
    for kind, certs in (("root", roots), ("pkcs1", intermediates)):
        unique: dict[str, tuple[str, x509.Certificate]] = {}
        for cert in certs:
            fp, name, _, _ = ca_facts(cert)
            if fp not in seen:
                unique[fp] = (name, cert)
        seen.update(unique)
        for fp, (_, cert) in sorted(unique.items(), key=lambda kv: (kv[1][0], kv[0])):
            out.append(CertificatePayload(kind, cert, f"{prefix}.{kind}.{fp[:16]}", organization))
    return out


def _check_password(password: str, hostname: str) -> None:
    if not password or not password.isascii():
        raise CertificateError("the PKCS#12 password must be non-empty ASCII (macOS rejects "
                               "empty passwords)", where=f"device {hostname!r}")


def _open_identity(p12: bytes, password: str, hostname: str) -> x509.Certificate:
    """The identity's certificate; also proves the password opens the p12 and the key matches.

    Uses builder.certs' PKCS#12 reader: it skips OpenSSL's ~30 ms RSA primality check per device.
    """
    where = f"device {hostname!r}"
    _check_password(password, hostname)
    try:
        identity = identity_from(parse_pfx(p12, password.encode("ascii")))
    except FleetpkgError as exc:
        raise CertificateError(f"the PKCS#12 cannot be used: {exc.message}", where=where,
                               hint="re-encode the identity with builder.certs.reencode_for_macos") from None
    return identity.certificate


def device_profile(*, fleet: str, organization: str, identifier_prefix: str, hostname: str,
                   p12: bytes, p12_password: str, roots: Sequence[x509.Certificate],
                   intermediates: Sequence[x509.Certificate], allow_all_apps_access: bool = True,
                   key_is_extractable: bool = False,
                   certificate: x509.Certificate | None = None) -> dict:
    """Per-Mac profile: the identity (pkcs12) plus the CA chain it needs, System scope, Mac only.

    `certificate`: the identity's certificate, from a caller that has just made `p12` and
    checked it (builder.certs.reencode_for_macos); the p12 is then not opened again, which
    would repeat all of its key derivations. Without it, the p12 is opened with the password.
    """
    prefix = _check_prefix(identifier_prefix)
    _check_host(hostname)
    if certificate is None:
        cert = _open_identity(p12, p12_password, hostname)
    else:
        _check_password(p12_password, hostname)
        cert = certificate
    top = f"{prefix}.identity.{hostname.lower()}"
    identity = IdentityPayload(
        p12=p12, password=p12_password, certificate=cert, identifier=f"{top}.pkcs12",
        file_name=f"{hostname}.p12", display_name=f"1E Client identity ({hostname})",
        allow_all_apps_access=allow_all_apps_access, key_is_extractable=key_is_extractable,
        organization=organization)
    payloads: list[Payload] = [identity, *_ca_payloads(top, organization, roots, intermediates)]
    return Profile(
        identifier=top,
        display_name=f"{fleet}: 1E Client identity for {hostname}",
        description=(f"Installs the 1E Client certificate and private key of {hostname} in the "
                     "System keychain, with the CA certificates the client needs."),
        organization=organization, payloads=tuple(payloads)).to_plist()


def trust_profile(*, fleet: str, organization: str, identifier_prefix: str,
                  roots: Sequence[x509.Certificate],
                  intermediates: Sequence[x509.Certificate]) -> dict:
    """Fleet-wide CA profile for fleets that deliver identities another way (e.g. SCEP, pkg)."""
    prefix = _check_prefix(identifier_prefix)
    if not roots and not intermediates:
        raise ConfigError("no CA certificates for the trust profile", where="fleet CA files",
                          hint="configure at least one root certificate")
    top = f"{prefix}.trust"
    return Profile(
        identifier=top,
        display_name=f"{fleet}: 1E Client CA trust",
        description="Installs and trusts the CA certificates the 1E Client needs.",
        organization=organization,
        payloads=tuple(_ca_payloads(top, organization, roots, intermediates))).to_plist()


def login_items_profile(*, fleet: str, organization: str, identifier_prefix: str, label: str,
                        team_id: str | None) -> dict:
    """Managed login items (macOS 13+, MDM only): no "Background Items Added" prompt for the daemon."""
    prefix = _check_prefix(identifier_prefix)
    if not label or "*" in label or label != label.strip():
        raise ConfigError(f"not a launchd label: {label!r}", where="daemon label")
    rules = [Rule("Label", label, comment="1E Client launch daemon")]
    if team_id:
        if not _TEAM_ID.match(team_id):
            raise ConfigError(f"not an Apple Team ID: {team_id!r}", where="team_id",
                              hint="10 upper-case letters/digits, see `codesign -dv` TeamIdentifier=")
        rules.append(Rule("TeamIdentifier", team_id, comment="1E Client code signature team"))
    top = f"{prefix}.login-items"
    item = LoginItemsPayload(tuple(rules), f"{top}.servicemanagement",
                             "1E Client background item", organization)
    return Profile(
        identifier=top,
        display_name=f"{fleet}: 1E Client background item",
        description=("Marks the 1E Client launch daemon as a managed background item so macOS 13+ "
                     "shows no approval prompt. Takes effect only when delivered by MDM."),
        organization=organization, payloads=(item,)).to_plist()
