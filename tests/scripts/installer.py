"""Plays macOS Installer for the wrapper's scripts inside a MacRoot: prepare's preinstall, then
the vendor payload, then configure's payload and postinstall, as the Distribution orders them."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, replace

from builder.artifacts.scripts import ScriptContext, render_wrapper_scripts, wrapper_payload_files

from .macroot import MacRoot

SANDBOX = "/private/tmp/PKInstallSandbox.fleetpkgtest/Scripts"
PACKAGE = "/private/tmp/acme-prod-1E-Client-5.1.0.12-1.pkg"

SAMPLE = ScriptContext(
    fleet="acme-prod",
    identifier="com.acme.1e-client",
    version="5.1.0.12-1",
    conf_path="/Library/Application Support/1E/Client/1E.Client.conf",
    daemon_label="com.1e.pkg.1E.Client",
    daemon_plist="/Library/LaunchDaemons/com.1e.pkg.1E.Client.plist",
    binary_path="/Library/Application Support/1E/Client/1E.Client",
    needs_rosetta=True,
    client_settings=(("Switch", "tachyon.acme.local:4000"),
                     ("BackgroundChannelUrl", "https://tachyon.acme.local/Background")),
    receipts=("com.acme.1e-client.prepare", "com.1e.pkg.1E.Client", "com.acme.1e-client.configure"),
    support_dir="/Library/Application Support/fleetpkg/acme-prod",
    log_path="/var/log/fleetpkg-acme-prod.log",
)

# Values that break naive quoting: spaces, both quote kinds, $( ), backticks, globs, backslashes.
HOSTILE_DIR = "/Library/Application Support/1E's \"Client\" $(touch /tmp/pwned) `touch /tmp/pwned2` *"
HOSTILE = replace(
    SAMPLE,
    fleet="acme-prod-2",
    conf_path=f"{HOSTILE_DIR}/1E Client\\n.conf",
    binary_path=f"{HOSTILE_DIR}/1E.Client",
    daemon_label="com.1e.pkg.1E.Client;touch${IFS}pwned3",
    daemon_plist="/Library/LaunchDaemons/com.1e 'pkg' $HOME.plist",
    client_settings=(("Switch", "tachyon.acme.local:4000 $(touch /tmp/pwned4) 'x' \"y\" \\"),
                     ("BackgroundChannelUrl", "https://tachyon/Background?a=1&b=`id`")),
    support_dir="/Library/Application Support/fleetpkg/acme-prod-2",
    log_path="/var/log/fleetpkg-acme-prod-2.log",
)

VENDOR_CONF = """\
# 1E Client configuration
# Switch=<host>:<port>   (mandatory)
Switch=
BackgroundChannelUrl=

; Logging: Error, Warning, Info, Debug
LoggingLevel=Info
Module.Inventory.Enabled=true
"""

FAKE_BINARY = b"\xcf\xfa\xed\xfe" + b"\x07\x00\x00\x01" + b"\0" * 56  # x86_64 Mach-O magic + cputype


def launchd_plist(label: str) -> str:
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\">\n<dict>\n"
            f"\t<key>Label</key>\n\t<string>{label}</string>\n</dict>\n</plist>\n")


@dataclass
class Run:
    pre: subprocess.CompletedProcess[str]
    post: subprocess.CompletedProcess[str] | None

    @property
    def output(self) -> str:
        parts = [self.pre.stdout, self.pre.stderr]
        if self.post is not None:
            parts += [self.post.stdout, self.post.stderr]
        return "".join(parts)


def install(root: MacRoot, ctx: ScriptContext = SAMPLE, *, target: str = "/",
            vendor_conf: str | None = VENDOR_CONF, vendor_loads_daemon: bool = False) -> Run:
    """One install of the wrapper. Stops after a failed preinstall, as Installer does."""
    scripts = render_wrapper_scripts(ctx)
    args = [PACKAGE, target, target, "/"]
    pre = root.run_script(scripts["preinstall"], "preinstall", args,
                          folder=f"{SANDBOX}/{ctx.identifier}.prepare")
    if pre.returncode != 0:
        return Run(pre, None)
    prefix = target.rstrip("/")
    conf = root.path(prefix + ctx.conf_path)
    if vendor_conf is None:
        conf.unlink(missing_ok=True)
    else:
        root.write(prefix + ctx.conf_path, vendor_conf, 0o644)
    root.write(prefix + ctx.binary_path, FAKE_BINARY, 0o755)
    root.write(prefix + ctx.daemon_plist, launchd_plist(ctx.daemon_label), 0o644)
    for item in wrapper_payload_files(ctx):
        root.write(prefix + item.path, item.data, item.mode)
    if vendor_loads_daemon and target == "/":
        root.daemon_loaded(ctx.daemon_label)
    post = root.run_script(scripts["postinstall"], "postinstall", args,
                           folder=f"{SANDBOX}/{ctx.identifier}.configure")
    return Run(pre, post)


def write_receipts(root: MacRoot, ctx: ScriptContext) -> None:
    """Receipts as pkgutil would show them after `install` on "/", for the uninstall tests."""
    def dirs_of(paths: list[str]) -> list[str]:
        found: set[str] = set()
        for path in paths:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                found.add("/".join(parts[:i]))
        return sorted(found)

    vendor = [ctx.binary_path.lstrip("/"), ctx.conf_path.lstrip("/"), ctx.daemon_plist.lstrip("/")]
    configure = [item.path.lstrip("/") for item in wrapper_payload_files(ctx)]
    for package_id, files in ((ctx.receipts[0], []), (ctx.receipts[1], vendor),
                              (ctx.receipts[2], configure)):
        folder = f"/stubs/receipts/{package_id}"
        root.write(f"{folder}/info", f"package-id: {package_id}\nversion: {ctx.version}\n"
                   "volume: /\nlocation: \ninstall-time: 1700000000\n")
        root.write(f"{folder}/files", "".join(f + "\n" for f in files))
        root.write(f"{folder}/dirs", "".join(d + "\n" for d in dirs_of(files)))


def log_lines(root: MacRoot, ctx: ScriptContext = SAMPLE) -> list[str]:
    path = root.path(ctx.log_path)
    return path.read_text().splitlines() if path.exists() else []
