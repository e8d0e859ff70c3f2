"""A BuildInfo and staging folder made by hand, for target tests that need odd builds (oversized
profiles, targets turned off, skipped devices) without running the whole pipeline."""

from __future__ import annotations

import plistlib
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from builder.artifacts.buildinfo import BuildInfo, DeviceArtifacts, Receipt
from builder.fleet.config import MunkiTarget, Targets
from builder.artifacts.dist import Staging
from builder.artifacts.scripts import ScriptContext, render_jamf_ea, render_wrapper_scripts

FLEET = "acme-prod"
IDENT = "com.acme.1e-client"
VERSION = "5.1.0.12-3"
BINARY = "/Library/Application Support/1E/Client/1E.Client"


def _profile(name: str, pad: int = 0) -> bytes:
    return plistlib.dumps({"PayloadDisplayName": name, "PayloadType": "Configuration", "Pad": "x" * pad},
                          sort_keys=True)


def make_build(root: Path, *, targets: Targets | None = None, hosts=(("mac01.local", "C02AAA"), ("mac02", None)),
               skipped=(), device_profile_pad: int = 0, signed: bool = False) -> tuple[BuildInfo, Staging]:
    root.mkdir(parents=True, exist_ok=True)
    stage = Staging(root)
    ctx = ScriptContext(
        fleet=FLEET, identifier=IDENT, version=VERSION,
        conf_path="/Library/Application Support/1E/Client/1E.Client.conf", daemon_label="com.1e.pkg.1E.Client",
        daemon_plist="/Library/LaunchDaemons/com.1e.pkg.1E.Client.plist", binary_path=BINARY,
        needs_rosetta=True, client_settings=(("Switch", "tachyon.acme.example:4000"),),
        receipts=(f"{IDENT}.prepare", "com.1e.pkg.1E.Client", f"{IDENT}.configure"),
        support_dir=f"/Library/Application Support/fleetpkg/{FLEET}", log_path=f"/var/log/fleetpkg-{FLEET}.log")
    scripts = dict(render_wrapper_scripts(ctx))
    scripts["jamf-ea.sh"] = render_jamf_ea(ctx)
    wrapper = f"{FLEET}-1E-Client-{VERSION}.pkg"
    signer = "CN=Developer ID Installer: Acme (TEAM000000)" if signed else None
    stage.write(wrapper, b"xar!fake wrapper" * 100, kind="wrapper-pkg", signed=signer)
    stage.write("uninstall.sh", scripts["uninstall.sh"].encode(), kind="uninstall-script", executable=True)
    profile_signer = "CN=Acme profile signing" if signed else None
    for name in ("trust", "login-items"):
        stage.write(f"profiles/{name}.mobileconfig", _profile(name), kind=f"{name}-profile")
        if signed:
            stage.write(f"profiles/{name}.signed.mobileconfig", b"0\x80fake-cms" + _profile(name),
                        kind=f"{name}-profile-signed", signed=profile_signer)
    devices = []
    for host, serial in hosts:
        profile = f"profiles/devices/{host}.mobileconfig"
        stage.write(profile, _profile(host, device_profile_pad), kind="device-profile", secret=True)
        signed_profile = None
        if signed:
            signed_profile = f"profiles/devices/{host}.signed.mobileconfig"
            stage.write(signed_profile, b"0\x80fake-cms" + _profile(host), kind="device-profile-signed",
                        secret=True, signed=profile_signer)
        pkg = pkg_id = None
        if targets is None or targets.manual:
            pkg, pkg_id = f"identity/{host}.pkg", f"{IDENT}.identity.{host.lower()}"
            stage.write(pkg, b"xar!fake identity " + host.encode(), kind="identity-pkg", secret=True)
        devices.append(DeviceArtifacts(host, serial, datetime(2027, 1, 1, tzinfo=timezone.utc), profile,
                                       signed_profile, pkg, pkg_id, VERSION if pkg else None))
    info = BuildInfo(
        fleet=FLEET, organization="Acme Corp", identifier=IDENT, version=VERSION,
        vendor_identifier="com.1e.pkg.1E.Client", vendor_version="5.1.0.12", wrapper=wrapper,
        wrapper_signed_by=signer,
        receipts=(Receipt(f"{IDENT}.prepare", VERSION, 0), Receipt("com.1e.pkg.1E.Client", "5.1.0.12", 51234),
                  Receipt(f"{IDENT}.configure", VERSION, 21)),
        minimum_os="12.0", binary_path=BINARY, daemon_label=ctx.daemon_label, conf_path=ctx.conf_path,
        needs_rosetta=True, support_dir=ctx.support_dir, client_settings=ctx.client_settings, scripts=scripts,
        trust_profile="profiles/trust.mobileconfig", login_items_profile="profiles/login-items.mobileconfig",
        signed_trust_profile="profiles/trust.signed.mobileconfig" if signed else None,
        signed_login_items_profile="profiles/login-items.signed.mobileconfig" if signed else None,
        devices=tuple(devices), skipped_devices=tuple(skipped),
        targets=targets or Targets(MunkiTarget(("production", "testing"), "1E-Client")),
        built_at=datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc))
    return info, stage


def with_targets(info: BuildInfo, **changes) -> BuildInfo:
    return replace(info, targets=replace(info.targets, **changes))
