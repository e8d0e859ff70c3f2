"""A throwaway "Mac" to run generated scripts in: this Linux root behind an overlay, in a private
mount namespace, entered with chroot, with stub macOS commands at their macOS paths.

Why an overlay of / rather than a copied minimal root: the scripts need bash, awk, sed, openssl...
exactly as installed here, and writes must never reach the real system. Every write lands in
`upper`, so tests read results there (no macOS path exists on this Linux host, so the upper
layer is the whole truth for them). The namespace, and so the mount, ends with each run.

Needs root (CI runs as root) and a kernel with overlayfs; a missing capability fails the test.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

STUBS = Path(__file__).resolve().parent / "stubs"
# The stub commands and where macOS keeps the real ones.
STUB_PATHS = {
    "launchctl": "/bin/launchctl",
    "softwareupdate": "/usr/sbin/softwareupdate",
    "sysctl": "/usr/sbin/sysctl",
    "pkgutil": "/usr/sbin/pkgutil",
    "security": "/usr/bin/security",
    "scutil": "/usr/sbin/scutil",
    "hostname": "/bin/hostname",
    "arch": "/usr/bin/arch",
}
# Installer's environment for package scripts (flat-package-format.md section 7).
INSTALLER_ENV = {
    "PATH": "/bin:/sbin:/usr/bin:/usr/sbin:/usr/libexec",
    "HOME": "/var/root",
    "USER": "root",
    "TMPDIR": "/tmp",
    "COMMAND_LINE_INSTALL": "1",
}

_LAUNCH = r"""
set -e
upper=$1 work=$2 merged=$3
shift 3
mount -t overlay overlay -o "lowerdir=/,upperdir=$upper,workdir=$work" "$merged"
mount --bind /dev "$merged/dev"
exec chroot "$merged" /usr/bin/env -i "$@"
"""


@dataclass(frozen=True)
class Call:
    tool: str
    args: tuple[str, ...]


class MacRoot:
    """One isolated root. `run` executes a command inside it; `path` maps a macOS path to the
    file in the upper layer (for writing inputs and reading results)."""

    def __init__(self, base: Path, *, bsd_awk: bool = True):
        self.base = base
        self.upper = base / "upper"
        self.work = base / "work"
        self.merged = base / "merged"
        for folder in (self.upper, self.work, self.merged):
            folder.mkdir(parents=True)
        self._install_stubs()
        self._macos_accounts()
        if bsd_awk:
            self.use_bsd_awk()
        for folder in ("/tmp", "/private/tmp", "/var/log", "/Library/LaunchDaemons",
                       "/Library/Logs", "/Library/Keychains", "/stubs/state", "/var/root"):
            self.path(folder).mkdir(parents=True, exist_ok=True)

    # -- layout --------------------------------------------------------------------------
    def path(self, mac_path: str) -> Path:
        """The upper-layer file for `mac_path`, following this host's symlinks (/bin -> usr/bin)
        so a stub at /bin/launchctl lands where the merged view shows it."""
        if not mac_path.startswith("/"):
            raise ValueError(mac_path)
        resolved = os.path.realpath(mac_path)
        return self.upper / resolved.lstrip("/")

    def write(self, mac_path: str, data: bytes | str, mode: int = 0o644) -> Path:
        target = self.path(mac_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data.encode() if isinstance(data, str) else data)
        target.chmod(mode)
        return target

    def exists(self, mac_path: str) -> bool:
        return os.path.lexists(self.path(mac_path))

    def read(self, mac_path: str) -> bytes:
        return self.path(mac_path).read_bytes()

    def _install_stubs(self) -> None:
        self.write("/stubs/lib.sh", (STUBS / "lib.sh").read_bytes(), 0o644)
        for name, mac_path in STUB_PATHS.items():
            self.write(mac_path, (STUBS / name).read_bytes(), 0o755)

    def _macos_accounts(self) -> None:
        """macOS's group 0 is `wheel`; scripts `chown root:wheel`, so this root needs it."""
        groups = Path("/etc/group").read_text()
        if not any(line.startswith("wheel:") for line in groups.splitlines()):
            groups += "wheel:x:0:\n"
        self.write("/etc/group", groups, 0o644)

    def use_bsd_awk(self) -> None:
        """Run the scripts' `awk` as the one-true-awk (BWK), the awk macOS ships."""
        bwk = shutil.which("original-awk")
        if bwk is None:
            pytest.fail("original-awk (the BSD/macOS awk) is not installed: apt-get install original-awk")
        self.write("/usr/bin/awk", Path(bwk).read_bytes(), 0o755)

    # -- stubs -----------------------------------------------------------------------------
    def set_state(self, name: str, value: str | None) -> None:
        target = self.path(f"/stubs/state/{name}")
        if value is None:
            target.unlink(missing_ok=True)
        else:
            self.write(f"/stubs/state/{name}", value)

    def respond(self, tool: str, args_prefix: str, *, out: str = "", err: str = "", rc: int = 0) -> None:
        """Script the next calls of `tool` whose arguments start with `args_prefix`."""
        folder = self.path(f"/stubs/responses/{tool}")
        folder.mkdir(parents=True, exist_ok=True)
        n = len(list(folder.glob("*.args")))
        stem = f"/stubs/responses/{tool}/{n:03d}"
        self.write(stem + ".args", args_prefix)
        self.write(stem + ".out", out)
        self.write(stem + ".err", err)
        self.write(stem + ".rc", str(rc))

    def calls(self, tool: str | None = None) -> list[Call]:
        log = self.path("/stubs/calls.log")
        if not log.exists():
            return []
        found = []
        for line in log.read_text().splitlines():
            tool_name, *args = line.split("\t")
            if tool is None or tool_name == tool:
                found.append(Call(tool_name, tuple(args)))
        return found

    def clear_calls(self) -> None:
        self.path("/stubs/calls.log").unlink(missing_ok=True)

    def daemon_loaded(self, label: str, state: str = "running", pid: int = 4000) -> None:
        self.write(f"/stubs/state/loaded/{label}", f"{state} {pid}\n")

    def daemon_state(self, label: str) -> str | None:
        target = self.path(f"/stubs/state/loaded/{label}")
        return target.read_text().split()[0] if target.exists() else None

    # -- running ---------------------------------------------------------------------------
    def run(self, argv: list[str], *, cwd: str = "/", env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run argv inside the root with exactly `env` (Installer's by default) from `cwd`."""
        environment = dict(INSTALLER_ENV if env is None else env)
        pairs = [f"{key}={value}" for key, value in sorted(environment.items())]
        inner = ["/bin/bash", "-c", 'cd -- "$1" && shift && exec "$@"', "run", cwd, *argv]
        command = ["unshare", "-m", "--propagation", "private", "/bin/sh", "-c", _LAUNCH, "launch",
                   str(self.upper), str(self.work), str(self.merged), *pairs, *inner]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                check=False)
        if "mount:" in result.stderr and result.returncode != 0 and "overlay" in result.stderr:
            pytest.fail(f"cannot mount the overlay root: {result.stderr.strip()}")
        return result

    def run_script(self, text: str, name: str, args: list[str], *, folder: str,
                   env: dict[str, str] | None = None, extra_files: dict[str, tuple[bytes, int]] | None = None
                   ) -> subprocess.CompletedProcess[str]:
        """Lay `text` out as Installer does (an executable file in a Scripts folder, which is the
        working directory) and execute it through its #! line."""
        self.write(f"{folder}/{name}", text, 0o755)
        for file_name, (data, mode) in (extra_files or {}).items():
            self.write(f"{folder}/{file_name}", data, mode)
        return self.run([f"{folder}/{name}", *args], cwd=folder, env=env)

    # -- inspection ------------------------------------------------------------------------
    def snapshot(self, exclude: tuple[str, ...] = ()) -> dict[str, tuple]:
        """Every entry in the upper layer: type, mode, owner, bytes or link target. Paths under
        `exclude` (upper-relative prefixes, e.g. "stubs") are left out."""
        entries: dict[str, tuple] = {}
        for current, dirs, files in os.walk(self.upper):
            for name in sorted(dirs + files):
                full = Path(current) / name
                rel = str(full.relative_to(self.upper))
                if any(rel == ex or rel.startswith(ex.rstrip("/") + "/") for ex in exclude):
                    continue
                info = full.lstat()
                if stat.S_ISLNK(info.st_mode):
                    entries[rel] = ("link", os.readlink(full))
                elif stat.S_ISDIR(info.st_mode):
                    entries[rel] = ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
                elif stat.S_ISREG(info.st_mode):
                    entries[rel] = ("file", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid,
                                    full.read_bytes())
                else:
                    entries[rel] = ("other", info.st_mode, info.st_rdev)
        return entries


def make_mac_root(tmp_path: Path) -> MacRoot:
    if os.geteuid() != 0:
        pytest.fail("the script tests need root (unshare -m, overlay mount, chroot); CI runs as root")
    for tool in ("unshare", "chroot", "mount"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed")
    return MacRoot(tmp_path / "mac")


@pytest.fixture
def mac_root(tmp_path: Path) -> MacRoot:
    """A fresh isolated root with stub macOS commands (see MacRoot)."""
    return make_mac_root(tmp_path)
