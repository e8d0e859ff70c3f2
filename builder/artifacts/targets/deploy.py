"""DEPLOY.md: the admin's instructions for this very build, from the artifacts actually staged.

Per-device files are folded into one table row each (`profiles/devices/<hostname>.mobileconfig`,
"3 files"), so the table stays readable for a fleet of thousands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ...formats.pkg.conclusion import NONE, verb
from ..templating import render
from .common import text_file

# What each kind of artifact is, for the table. Kinds from elsewhere fall back to a pointer.
DESCRIPTIONS = {
    "wrapper-pkg": "The wrapper installer: the vendor's 1E Client package, this fleet's settings, the "
                   "health check and the uninstaller. Deploy it to every Mac.",
    "trust-profile": "CA certificates (root + intermediates) for the whole fleet, unsigned XML for MDM upload.",
    "trust-profile-signed": "The same CA profile, signed: for Jamf's web upload and manual installs.",
    "login-items-profile": "Background-items approval for the 1E Client daemon (MDM only), unsigned XML.",
    "login-items-profile-signed": "The same background-items profile, signed (Jamf web upload).",
    "device-profile": "One Mac's client identity (certificate + key) and the CA chain, unsigned XML for MDM upload.",
    "device-profile-signed": "The same identity profile, signed: for a manual install on that Mac or Jamf's web upload.",
    "identity-pkg": "Per-Mac identity package for Macs without MDM (imports the identity into the System keychain).",
    "uninstall-script": "Removes the 1E Client and everything the wrapper installed (run with sudo on the Mac).",
    "munki-pkg": "Munki: the wrapper, for the repo's pkgs/ folder.",
    "munki-identity-pkg": "Munki: a copy of a Mac's identity package, for the repo's pkgs/ folder.",
    "munki-pkginfo": "Munki: pkginfo for the repo's pkgsinfo/ folder.",
    "munki-identity-pkginfo": "Munki: pkginfo of a Mac's identity item (installable only on that Mac).",
    "jamf-pkg": "Jamf Pro: the wrapper, to upload as a package.",
    "jamf-trust-profile": "Jamf Pro: CA profile for API upload (unsigned).",
    "jamf-trust-profile-signed": "Jamf Pro: CA profile for web upload (signed).",
    "jamf-login-items-profile": "Jamf Pro: background-items profile for API upload (unsigned).",
    "jamf-login-items-profile-signed": "Jamf Pro: background-items profile for web upload (signed).",
    "jamf-device-profile": "Jamf Pro: a Mac's identity profile for API upload (unsigned), scoped to that computer.",
    "jamf-device-profile-signed": "Jamf Pro: a Mac's identity profile for web upload (signed).",
    "jamf-scoping": "Jamf Pro: which identity profile to scope to which computer (hostname, serial, profile).",
    "jamf-extension-attribute": "Jamf Pro: extension attribute script reporting the health check's verdict.",
    "jamf-notes": "Jamf Pro: upload notes for this build.",
    "intune-pkg": "Intune: the wrapper, for a \"macOS app (PKG)\" app.",
    "intune-preinstall-script": "Intune: pre-install script (macOS version, free space, Rosetta 2); a failure "
                                "skips the install until the next check-in.",
    "intune-postinstall-script": "Intune: post-install script that runs the health check (its verdict goes "
                                 "to the Intune agent's log).",
    "intune-trust-profile": "Intune: CA profile as a custom configuration profile (unsigned).",
    "intune-login-items-profile": "Intune: background-items profile as a custom configuration profile (unsigned).",
    "intune-device-profile": "Intune: a Mac's identity profile as a custom configuration profile (unsigned).",
    "intune-notes": "Intune: detection rules for the app.",
    "sealed-secrets": "Every secret file of this build, as one tar encrypted with age to the recipients "
                      "below: `fleetpkg unseal` or `age -d` restores them.",
    "intune-changes": "Intune: what to create, replace or delete since the previous build.",
    "changes": "What changed since the previous build: devices, reasons and files (also `fleetpkg diff`).",
}
FINAL_FILES = (
    ("DEPLOY.md", "This file."),
    ("manifest.json", "Every artifact with its kind, SHA-256, size, secret flag and signer."),
    ("SHA256SUMS", "Checksums of every artifact (`sha256sum -c SHA256SUMS`)."),
)
# Kinds whose file name starts with a prefix before the host name.
_NAME_PREFIX_KINDS = {"munki-identity-pkginfo"}


@dataclass(frozen=True)
class Row:
    pattern: str
    kind: str
    count: int
    secret: bool
    signed: str | None
    what: str
    sealed: bool = False


_BOUNDARY = re.compile(r"[.-]")


def _device_pattern(path: str, hosts: set[str], prefix: str) -> str:
    """path with its host name replaced by <hostname>, or unchanged when it names no device.
    The host name is the longest one ending at a '.' or '-' (or the end) of the file name."""
    return _match(path, hosts, prefix)[0]


def _match(path: str, hosts: set[str], prefix: str) -> tuple[str, str | None]:
    """(_device_pattern's result, the file name's part after the host name or None)."""
    folder, _, base = path.rpartition("/")
    start = len(prefix) if prefix and base.startswith(prefix) else 0
    if base[start:] in hosts:
        best = len(base)
    else:
        ends = [m.start() for m in _BOUNDARY.finditer(base, start + 1) if base[start:m.start()] in hosts]
        if not ends:
            return path, None
        best = ends[-1]
    name = base[:start] + "<hostname>" + base[best:]
    return (f"{folder}/{name}" if folder else name), base[best:]


class _Patterns:
    """_device_pattern for many paths: a folder's files of one kind share what follows the host
    name (".signed.mobileconfig"), so once learned, a file is matched by checking that ending and
    the host before it (and that no longer host name ends at a boundary inside the ending, which
    is what the full search would have preferred)."""

    def __init__(self, hosts: set[str]):
        self.hosts = hosts
        self.learned: dict[tuple[str, str, int], tuple[str, tuple[int, ...]]] = {}

    def __call__(self, path: str, kind: str, prefix: str) -> str:
        folder, _, base = path.rpartition("/")
        start = len(prefix) if prefix and base.startswith(prefix) else 0
        key = (folder, kind, start)
        hit = self.learned.get(key)
        if hit is not None and base.endswith(hit[0]):
            suffix, later = hit
            best = len(base) - len(suffix)
            if best > start and base[start:best] in self.hosts:
                for o in later:
                    if base[start:best + o] in self.hosts:
                        break
                else:
                    name = base[:start] + "<hostname>" + suffix
                    return f"{folder}/{name}" if folder else name
        pattern, suffix = _match(path, self.hosts, prefix)
        if suffix is not None:
            later = tuple(o for o in range(1, len(suffix)) if suffix[o] in ".-") + ((len(suffix),) if suffix else ())
            self.learned[key] = (suffix, later)
        return pattern


def artifact_rows(artifacts, info) -> list[Row]:
    pattern_of = _Patterns({d.hostname for d in info.devices})
    identity_prefix = f"{info.targets.munki.name}-identity-" if info.targets.munki else ""
    groups: dict[tuple[str, str], list] = {}
    for art in artifacts:
        prefix = identity_prefix if art.kind in _NAME_PREFIX_KINDS else ""
        groups.setdefault((pattern_of(art.path, art.kind, prefix), art.kind), []).append(art)
    rows = []
    for (pattern, kind), arts in sorted(groups.items()):
        signers = sorted({a.signed for a in arts if a.signed})
        rows.append(Row(pattern, kind, len(arts), any(a.secret for a in arts),
                        ", ".join(signers) or None,
                        DESCRIPTIONS.get(kind, f"{kind} (see manifest.json)"),
                        any(a.sealed for a in arts)))
    return rows


LIST_LIMIT = 50  # host names listed in DEPLOY.md per group; changes.json lists them all


def _capped(items: list) -> tuple[list, int]:
    return items[:LIST_LIMIT], max(0, len(items) - LIST_LIMIT)


def change_view(changes: dict | None) -> dict | None:
    """The change set as DEPLOY.md shows it: host lists capped, reasons beside changed hosts."""
    if changes is None:
        return None
    devices, reasons = changes["devices"], changes["reasons"]
    out = {"previous": changes["previous"], "fresh": changes["fresh"], "note": changes.get("note"),
           "sealed_note": changes.get("sealed_note"),
           "wrapper": changes["wrapper"], "unchanged": len(devices["unchanged"]),
           "counts": {k: len(v) for k, v in devices.items()}}
    out["added"], out["added_more"] = _capped(devices["added"])
    out["changed"], out["changed_more"] = _capped([(h, reasons.get(h, [])) for h in devices["changed"]])
    out["removed"], out["removed_more"] = _capped(devices["removed"])
    return out


def render_deploy(info, artifacts, sections: dict, sealed: dict | None = None, changes: dict | None = None) -> str:
    """sealed: {"count", "recipients"} when the secret files are in secrets.tar.age; changes: the
    change set (changes.json's document)."""
    from .munki import IDENTITIES_WARNING

    rows = artifact_rows(artifacts, info)
    device_profile = {d.hostname: (d.signed_profile or d.profile) for d in info.devices}
    after_install = None
    if info.on_conclusion != NONE:
        after_install = {"action": info.on_conclusion, "verb": verb(info.on_conclusion), "by": info.conclusion_by}
    return render("DEPLOY.md.j2", info=info, rows=rows, final_files=FINAL_FILES, sections=sections,
                  after_install=after_install,
                  device_profile=device_profile, manual_profile_signed=any(d.signed_profile for d in info.devices),
                  doctor=f"{info.support_dir}/doctor", uninstall=f"{info.support_dir}/uninstall.sh",
                  wrapper_name=info.wrapper.rsplit("/", 1)[-1], munki_warning=IDENTITIES_WARNING,
                  sealed=sealed, changes=change_view(changes),
                  fleet_profiles=info.changes.fleet_profiles if info.changes else ())


def write_deploy(info, stage, sections: dict, changes: dict | None = None) -> None:
    text_file(stage, "DEPLOY.md", render_deploy(info, stage.artifacts, sections, stage.sealed_summary(), changes),
              kind="deploy-notes")
