"""Munki: a repo fragment (`munki/pkgs/`, `munki/pkgsinfo/`) an admin copies into the Munki repo.

Keys follow Munki 7's makepkginfo/makecatalogs (profiles-and-mdm.md section 6.3):
- `installer_item_size` is the package size in KiB rounded *down* (makepkginfo computes
  `Int(filesize / 1024)` on an integer size), so our items compare equal to re-imported ones.
- `installed_size` is the sum of the components' install-kbytes (what Installer reports).
- `installs` decides "installed?" before receipts do: the 1E Client binary must exist (a removed
  client is reinstalled), and the fleet's doctor.conf must have this build's MD5. doctor.conf
  names the wrapper version, so every new build (vendor upgrade or fleet change) is offered, and
  an older build on the Mac is replaced. Receipts stay for reporting and removepackages.
- `RestartAction` is the wrapper's restart need (the vendor's onConclusion, e.g. RequireRestart),
  as makepkginfo would read it from the package; Munki then never installs the item unattended
  but has the user log out or restart. Absent when nothing is required.
- identity items (only with `[targets] munki = { identities = true }`, see IDENTITIES_WARNING)
  carry `installable_condition` (the Mac's serial number from the inventory, else
  its host name, case-insensitively, also as uname prints it with or without `.local`) and
  `requires` the client item: the identity import grants key access to the 1E Client binary,
  which must exist first.

Folders are namespaced by fleet (`pkgs/<fleet>/`, `pkgsinfo/<fleet>/`) and identity packages
carry the version in their name, so several fleets and builds can live in one repo.
"""

from __future__ import annotations

import hashlib
import re

from ...errors import BuildError
from ...formats import plistxml
from ...formats.pkg.conclusion import NONE
from ..changes import PKGINFO_FORMAT, fingerprint
from .common import copy_artifact

# One paragraph, said by `fleetpkg build` and DEPLOY.md when identity items are on.
IDENTITIES_WARNING = (
    "Munki identity items are on ([targets] munki.identities = true): munki/pkgs/ holds every Mac's "
    "identity package, that is its private key and the password that opens it. A Munki repository is a "
    "web server that every client reads with the same credentials, and installable_condition only decides "
    "what a Mac installs, not what it can download: any Mac, or anyone holding the repository's "
    "credentials, can fetch every other Mac's key and impersonate it to the Tachyon Switch. Serve these "
    "items only from a repository that gives each Mac its own items and nothing else (for example "
    "per-client paths behind client-certificate authentication). Otherwise deliver identities with MDM "
    "device profiles (jamf/, intune/, profiles/devices/) or hand each Mac its identity package "
    "(identity/<hostname>.pkg) out of band, and leave identities = false.")
ARCHITECTURES = ("arm64", "x86_64")  # the wrapper declares both (Rosetta for the x86_64 client)
_PREDICATE_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


def kib_floor(size: int) -> int:
    return size // 1024


def predicate_string(value: str, what: str) -> str:
    """An NSPredicate string literal. Inventory values are already restricted to host-name and
    serial characters; anything else is refused rather than escaped, so no value can change the
    predicate's meaning."""
    if not _PREDICATE_SAFE.match(value):
        raise BuildError(f"{what} {value!r} cannot be used in a Munki installable_condition",
                         hint="host names and serial numbers may hold letters, digits, '.', '-' and '_'")
    return f'"{value}"'


def _host_forms(hostname: str) -> list[str]:
    """The names uname may report for this Mac: as inventoried, and with or without `.local`
    (macOS's nodename is often the Bonjour name). The same forms the identity package's
    preinstall accepts, so Munki never offers a package that its own check would refuse."""
    name = hostname.rstrip(".")
    base = name[:-len(".local")] if name.lower().endswith(".local") else name
    forms = [hostname, base, f"{base}.local"]
    seen, out = set(), []
    for form in forms:
        if form and form.casefold() not in seen:
            seen.add(form.casefold())
            out.append(form)
    return out


def host_names(devices) -> dict[str, list[str]]:
    """Per hostname: the names its condition matches. A `.local` form that another device owns
    (an inventory with both `mac01` and `mac01.local`) is dropped, so no Mac can match two
    identities; the inventoried name itself always stays (unique, case-insensitively)."""
    owners: dict[str, set[str]] = {}
    for dev in devices:
        for form in _host_forms(dev.hostname):
            owners.setdefault(form.casefold(), set()).add(dev.hostname)
    out = {}
    for dev in devices:
        forms = _host_forms(dev.hostname)
        out[dev.hostname] = [forms[0]] + [f for f in forms[1:] if owners[f.casefold()] == {dev.hostname}]
    return out


def installable_condition(device, names: list[str]) -> str:
    if device.serial:
        return f"serial_number == {predicate_string(device.serial, f'serial of {device.hostname}')}"
    return " OR ".join(f"hostname ==[c] {predicate_string(n, 'host name')}" for n in names)


def client_item_name(info) -> str:
    return info.targets.munki.name


def identity_item_name(info, hostname: str) -> str:
    return f"{client_item_name(info)}-identity-{hostname}"


def client_pkginfo(info, *, location: str, sha256: str, size: int) -> dict:
    munki = info.targets.munki
    doctor_conf = info.scripts["doctor.conf"].encode("utf-8")
    return {
        "name": munki.name,
        "version": info.version,
        "display_name": f"{info.organization} 1E Client",
        "description": (f"1E Client {info.vendor_version} for the {info.fleet} fleet, configured for "
                        f"{info.organization} by fleetpkg (build {info.version}). Installs the vendor "
                        f"package, the fleet's settings and the health check "
                        f"{info.support_dir}/doctor."),
        "catalogs": list(munki.catalogs),
        "installer_item_location": location,
        "installer_item_hash": sha256,
        "installer_item_size": kib_floor(size),
        "installed_size": sum(r.install_kbytes for r in info.receipts),
        "receipts": [{"packageid": r.identifier, "version": r.version, "installed_size": r.install_kbytes}
                     for r in info.receipts],
        "installs": [
            {"type": "file", "path": info.binary_path},
            {"type": "file", "path": f"{info.support_dir}/doctor.conf",
             "md5checksum": hashlib.md5(doctor_conf, usedforsecurity=False).hexdigest()},
        ],
        "minimum_os_version": info.minimum_os,
        "supported_architectures": list(ARCHITECTURES),
        "unattended_install": True,
        "unattended_uninstall": True,
        "uninstallable": True,
        "uninstall_method": "uninstall_script",
        "uninstall_script": info.scripts["uninstall.sh"],
        **({"RestartAction": info.on_conclusion} if info.on_conclusion != NONE else {}),
    }


def identity_pkginfo(info, device, names: list[str], *, location: str, sha256: str, size: int) -> dict:
    munki = info.targets.munki
    return {
        "name": identity_item_name(info, device.hostname),
        "version": device.identity_version,
        "display_name": f"1E Client identity for {device.hostname}",
        "description": (f"Imports {device.hostname}'s client certificate and key into the System keychain "
                        f"with access for the 1E Client, and the {info.fleet} fleet's CA certificates."),
        "catalogs": list(munki.catalogs),
        "installer_item_location": location,
        "installer_item_hash": sha256,
        "installer_item_size": kib_floor(size),
        "receipts": [{"packageid": device.identity_pkg_id, "version": device.identity_version}],
        "installable_condition": installable_condition(device, names),
        "requires": [munki.name],
        "minimum_os_version": info.minimum_os,
        "supported_architectures": list(ARCHITECTURES),
        "unattended_install": True,
    } | _notes(info, device)


def _notes(info, device) -> dict:
    """Munki's admin-facing `notes` say why a Mac's identity changed since the previous build
    (none on a first build or for an unchanged identity, so those pkginfos stay as they were)."""
    if device.change == "added":
        return {"notes": f"fleetpkg {info.version}: a Mac new to the fleet since the previous build."}
    if device.change == "changed":
        return {"notes": f"fleetpkg {info.version}: new identity ({'; '.join(device.reasons)})."}
    return {}


def dump(doc: dict) -> bytes:
    return plistxml.dumps(doc)  # plistlib's XML, keys sorted


def identity_item(info, device, names: list[str], stage) -> str | None:
    """One Mac's identity item: its package copied under pkgs/, its pkginfo under pkgsinfo/ (the
    build's worker processes do this per device); returns the pkginfo's path."""
    if not device.identity_pkg:
        return None
    base = info.fleet
    location = f"{base}/identity/{device.hostname}-{device.identity_version}.pkg"
    art = copy_artifact(stage, device.identity_pkg, f"munki/pkgs/{location}", kind="munki-identity-pkg",
                        secret=True)
    doc = identity_pkginfo(info, device, names, location=location, sha256=art.sha256, size=art.size)
    rel = f"munki/pkgsinfo/{base}/identity/{identity_item_name(info, device.hostname)}-{device.identity_version}.plist"
    stage.write_doc(rel, fingerprint(PKGINFO_FORMAT, doc), lambda: dump(doc), kind="munki-identity-pkginfo")
    return rel


def write_munki(info, stage, *, per_device: bool = True) -> list[str]:
    """Write munki/; returns the pkginfo paths written. per_device=False: the identity items were
    written already (by the build's workers, identity_item)."""
    munki = info.targets.munki
    base = f"{info.fleet}"
    wrapper_name = info.wrapper.rsplit("/", 1)[-1]
    location = f"{base}/{wrapper_name}"
    art = copy_artifact(stage, info.wrapper, f"munki/pkgs/{location}", kind="munki-pkg",
                        signed=info.wrapper_signed_by)
    written = []
    rel = f"munki/pkgsinfo/{base}/{munki.name}-{info.version}.plist"
    stage.write(rel, dump(client_pkginfo(info, location=location, sha256=art.sha256, size=art.size)),
                kind="munki-pkginfo")
    written.append(rel)
    if per_device and munki.identities:
        names = host_names(info.devices)
        for device in info.devices:
            item = identity_item(info, device, names[device.hostname], stage)
            if item:
                written.append(item)
    return written
