"""No secret leaves the secret artifacts: the PKCS#12 passwords and bytes found inside the device
profiles (plistlib) and identity packages (bsdtar), and the demo's input passwords, appear in no
file of the build that is not marked secret and mode 0600."""

from __future__ import annotations

import base64
import os
import plistlib
import re
import stat
import subprocess

from tests.conftest import require_tool


def _profile_secrets(path) -> list[bytes]:
    found = []
    for payload in plistlib.loads(path.read_bytes())["PayloadContent"]:
        if payload["PayloadType"] == "com.apple.security.pkcs12":
            found += [payload["Password"].encode(), payload["PayloadContent"]]
    assert found, path
    return found


def _identity_pkg_secrets(pkg, tmp_path) -> list[bytes]:
    bsdtar = require_tool("bsdtar")
    out = tmp_path / pkg.stem
    out.mkdir()
    subprocess.run([bsdtar, "-xf", str(pkg), "-C", str(out)], check=True)
    scripts = out / "scripts.d"
    scripts.mkdir()
    subprocess.run([bsdtar, "-xf", str(out / "Scripts"), "-C", str(scripts)], check=True)
    found = [p.read_bytes() for p in scripts.iterdir() if p.suffix == ".p12" or p.name == "identity.pass"]
    assert len(found) == 2, sorted(p.name for p in scripts.iterdir())
    return found


def _needles(secret: bytes) -> list[bytes]:
    """The secret as raw bytes and, for binary blobs, as the base64 a plist or JSON would carry."""
    if len(secret) < 64:
        return [secret.strip()]
    b64 = base64.b64encode(secret)
    return [secret[16:80], b64[20:100], base64.b64encode(secret[30:90])[4:60]]


def test_no_secret_in_any_artifact_not_marked_secret(demo_build, tmp_path):
    root = demo_build.root
    secrets = []
    for path in sorted((root / "profiles" / "devices").glob("*.mobileconfig")):
        if not path.name.endswith(".signed.mobileconfig"):
            secrets += _profile_secrets(path)
    for pkg in sorted((root / "identity").glob("*.pkg")):
        secrets += _identity_pkg_secrets(pkg, tmp_path)
    for name in ("pfx-password.txt", "signing-password.txt"):
        secrets.append((demo_build.folder / "secrets" / name).read_bytes())
    assert len(secrets) == 3 * 2 + 3 * 2 + 2
    needles = [n for s in secrets for n in _needles(s)]
    assert all(len(n) >= 16 for n in needles)  # long enough that a chance match is impossible

    artifacts = demo_build.artifacts()
    public = [p for p, a in artifacts.items() if not a["secret"]] + ["manifest.json", "SHA256SUMS"]
    assert any(p.startswith("munki/pkgsinfo/") for p in public)
    assert any(p.startswith("jamf/") for p in public) and any(p.startswith("intune/") for p in public)
    assert "DEPLOY.md" in public
    def holds(rel: str, needle: bytes) -> bool:
        data = (root / rel).read_bytes()
        # base64 in a plist is wrapped and indented: compare without white space too
        return needle in data or needle in re.sub(rb"\s+", b"", data)

    # the needles do find the secrets where they belong (so a leak would be found too)
    device_files = [p for p in artifacts if p.startswith("profiles/devices/") and "signed" not in p]
    for secret in secrets[:6]:
        encoded = _needles(secret)[1:] or _needles(secret)  # base64 forms of the p12; the password as is
        for needle in encoded:
            assert any(holds(p, needle) for p in device_files)
    for rel in public:
        for needle in needles:
            assert not holds(rel, needle), f"{rel} holds a secret"


def test_every_file_is_listed_and_secrets_are_0600(demo_build):
    root = demo_build.root
    artifacts = demo_build.artifacts()
    on_disk = set()
    for folder, _dirs, files in os.walk(root):
        for name in files:
            on_disk.add(os.path.relpath(os.path.join(folder, name), root))
    assert on_disk - set(artifacts) == {"manifest.json", "SHA256SUMS"}
    assert set(artifacts) <= on_disk
    for rel, art in artifacts.items():
        mode = stat.S_IMODE((root / rel).stat().st_mode)
        if art["secret"]:
            assert mode == 0o600, rel
        else:
            assert mode & 0o077 in (0o044, 0o055), rel
    # anything carrying a device identity is secret, wherever a target copied it
    for rel, art in artifacts.items():
        if "/devices/" in rel or rel.startswith("identity/") or "/identity/" in rel and rel.endswith(".pkg"):
            assert art["secret"], rel
