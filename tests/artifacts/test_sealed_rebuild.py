"""Rebuilding from a sealed previous build (`build --previous-identity KEYFILE`): unchanged Macs keep
their identity byte for byte, into a sealed or an unsealed build; without a key that opens the seal,
or from a seal that disagrees with its manifest, every Mac is re-minted with one line saying why,
and nothing of that build is used; no plaintext secret touches the disk while the seal is read.

Builds are read back with `fleetpkg unseal` and, independently, with the age CLI and GNU tar; keys
come from age-keygen and `cryptography` (tests/artifacts/test_seal.py's make_keys). The fleet is
test_lifecycle.py's (fleetfactory certificates, the demo's signing identities, Munki identity items).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.artifacts.test_kill import secret_files
from tests.artifacts.test_lifecycle import (AT, HOSTS, VENDOR, Fleet, changes, fleet, package_identity,  # noqa: F401
                                            profile_identity, snapshot, sums_ok, template)
from tests.artifacts.test_seal import Keys, make_keys
from tests.conftest import REPO, age_untar as untar_sealed, require_tool
from tests.fleetfactory import PASSWORD

ENV = "FLEETPKG_PREVIOUS_IDENTITY"


def run(*args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    full.pop("SOURCE_DATE_EPOCH", None)  # a re-signed profile would differ: byte-identical ones were carried
    if not (env or {}).get(ENV):
        full.pop(ENV, None)
    result = subprocess.run([sys.executable, "-m", "builder.cli", *map(str, args)], capture_output=True, text=True,
                            env=full, timeout=300, cwd=REPO)
    if check and result.returncode != 0:
        raise AssertionError(f"fleetpkg {args} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


def build(fleet: Fleet, *args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    return run("build", fleet.config, "--at", AT, "--jobs", "2", *args, env=env, check=check)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Keys, Keys]:
    """(the admins' keys, the CI's own keys): age-keygen's and an OpenSSH ed25519 key each."""
    base = tmp_path_factory.mktemp("keys")
    return make_keys(base / "admin"), make_keys(base / "ci")


def seal_to(*who: Keys) -> list[str]:
    return [arg for k in who for arg in ("--seal-to", k.age_recipient)]


def unsealed(out: Path, key: Path, dest: Path) -> Path:
    run("unseal", out, "--identity", key, "-o", dest)
    return dest


def age_untar(out: Path, key: Path, dest: Path) -> Path:
    """`age -d -i KEY secrets.tar.age | tar -x` with Debian's age and GNU tar."""
    return untar_sealed(out / "secrets.tar.age", key, dest)


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def device_secrets(root: Path, host: str) -> dict[str, bytes]:
    """A Mac's secret files in a build (or an unsealed copy of its seal)."""
    return {rel: (root / rel).read_bytes() for rel in (
        f"profiles/devices/{host}.mobileconfig", f"profiles/devices/{host}.signed.mobileconfig",
        f"jamf/profiles/devices/{host}.mobileconfig", f"jamf/profiles/devices/{host}.signed.mobileconfig",
        f"intune/profiles/devices/{host}.mobileconfig")}


def passwords(root: Path) -> set[str]:
    return {profile_identity(p)[1] for p in (root / "profiles" / "devices").glob("*.mobileconfig")
            if not p.name.endswith(".signed.mobileconfig")}


def keep(fleet: Fleet, tmp_path: Path, name: str = "first") -> Path:
    """A copy of the fleet's build (a rebuild into the same folder replaces it)."""
    return Path(shutil.copytree(fleet.out(), tmp_path / name / fleet.out().name))


# -- carrying forward ---------------------------------------------------------------------------------

def test_sealed_rebuild_with_unchanged_inputs_keeps_every_identity(fleet, keys, tmp_path):
    admin, ci = keys
    build(fleet, *seal_to(admin, ci))
    first = keep(fleet, tmp_path)
    result = build(fleet, *seal_to(admin, ci), env={ENV: str(ci.age_key)})  # the CI's own key, named by the env
    assert "previous build" not in result.stderr and "warning: this build" not in result.stderr, result.stderr
    doc = changes(fleet.out())
    assert doc["previous"] == f"demo-{VENDOR}-1" and doc["wrapper"] == "unchanged" and not doc["fresh"]
    assert doc["devices"] == {"added": [], "changed": [], "removed": [], "unchanged": sorted(HOSTS)}
    assert doc["reasons"] == {} and "note" not in doc and "sealed_note" not in doc
    assert doc["artifacts"]["changed"] == ["jamf/scoping.csv"]  # "upload" became "keep"
    assert doc["artifacts"]["added"] == doc["artifacts"]["removed"] == []
    assert "secrets.tar.age" not in json.dumps(doc["artifacts"])  # its members are compared, one by one
    assert json.loads(run("diff", first, fleet.out(), "--json").stdout) == doc
    assert sums_ok(fleet.out()) and not (fleet.out() / "profiles" / "devices").exists()

    # byte-identical secrets, read back by fleetpkg unseal and by the age CLI + GNU tar, with either key
    old = unsealed(first, admin.age_key, tmp_path / "old")
    new = unsealed(fleet.out(), admin.age_key, tmp_path / "new")
    by_age = age_untar(fleet.out(), ci.age_key, tmp_path / "age")
    assert files_of(new) == files_of(old) == files_of(by_age)  # identity packages too: same version
    for host in HOSTS:
        assert device_secrets(new, host) == device_secrets(old, host)
        assert package_identity(new / "identity" / f"{host}.pkg", host) == \
            profile_identity(new / "profiles" / "devices" / f"{host}.mobileconfig")
    run("verify", fleet.out())


def test_renewing_one_pfx_changes_only_that_mac(fleet, keys, tmp_path):
    admin, ci = keys
    build(fleet, *seal_to(admin, ci))
    first = fleet.out(1)
    fleet.renew("mac-c")
    fleet.edit("build = 1", "build = 2")  # a new release: the identity packages name its version
    build(fleet, *seal_to(admin, ci), "--previous-identity", ci.ssh_key, "--previous-identity", ci.age_key)
    second = fleet.out(2)
    doc = changes(second)
    assert doc["previous"] == f"demo-{VENDOR}-1" and "sealed_note" not in doc and "note" not in doc
    assert doc["devices"] == {"added": [], "changed": ["mac-c"], "removed": [],
                              "unchanged": sorted(h for h in HOSTS if h != "mac-c")}
    assert doc["reasons"] == {"mac-c": ["pfx changed"]}
    assert json.loads(run("diff", first, second, "--json").stdout) == doc
    old = age_untar(first, admin.age_key, tmp_path / "old")
    new = age_untar(second, admin.age_key, tmp_path / "new")
    for host in HOSTS:
        if host == "mac-c":
            assert profile_identity(new / "profiles/devices/mac-c.mobileconfig") != \
                profile_identity(old / "profiles/devices/mac-c.mobileconfig")
            continue
        assert device_secrets(new, host) == device_secrets(old, host), host
        # rebuilt for the new version around the very same sealed identity (read from the old seal)
        old_pkg, new_pkg = old / "identity" / f"{host}.pkg", new / "identity" / f"{host}.pkg"
        assert old_pkg.read_bytes() != new_pkg.read_bytes()
        assert package_identity(new_pkg, host) == package_identity(old_pkg, host) == \
            profile_identity(new / "profiles" / "devices" / f"{host}.mobileconfig")
    assert package_identity(new / "identity" / "mac-c.pkg", "mac-c") == \
        profile_identity(new / "profiles" / "devices" / "mac-c.mobileconfig")


def test_sealed_to_unsealed_rebuild_writes_the_same_files(fleet, keys, tmp_path):
    admin, ci = keys
    build(fleet, "--seal-to", ci.ssh_recipient)
    first = keep(fleet, tmp_path)
    build(fleet, "--previous-identity", ci.ssh_key, "--jobs", "1")  # an OpenSSH key opens it too; no workers
    out = fleet.out()
    doc = changes(out)
    assert doc["devices"]["unchanged"] == sorted(HOSTS) and doc["reasons"] == {}
    old = unsealed(first, ci.ssh_key, tmp_path / "old")
    for host in HOSTS:
        assert device_secrets(out, host) == device_secrets(old, host), host
        profile = (out / "profiles" / "devices" / f"{host}.mobileconfig").stat()
        copy = (out / "jamf" / "profiles" / "devices" / f"{host}.mobileconfig").stat()
        assert profile.st_mode & 0o777 == 0o600 and (profile.st_ino, profile.st_dev) == (copy.st_ino, copy.st_dev)
    assert files_of(old)["identity/mac-c.pkg"] == (out / "identity" / "mac-c.pkg").read_bytes()
    assert sums_ok(out)


def test_unsealed_to_sealed_rebuild_seals_the_same_files(fleet, keys, tmp_path):
    admin, _ci = keys
    build(fleet)
    first = keep(fleet, tmp_path)
    build(fleet, *seal_to(admin))
    assert changes(fleet.out())["devices"]["unchanged"] == sorted(HOSTS)
    by_age = age_untar(fleet.out(), admin.age_key, tmp_path / "age")
    for host in HOSTS:
        assert device_secrets(by_age, host) == device_secrets(first, host), host


# -- a previous build that cannot or must not be used -------------------------------------------------

def _remint(fleet: Fleet, keys, tmp_path: Path, damage, needle: str, *extra, env: dict | None = None) -> dict:
    """Build sealed, damage it, rebuild sealed elsewhere from it: one note line naming `needle`,
    every Mac re-minted, the previous build left as it was, none of its identities used."""
    admin, ci = keys
    build(fleet, *seal_to(admin, ci))
    old_passwords = _sealed_passwords(fleet.out(), admin.age_key)
    assert len(old_passwords) == len(HOSTS)
    damage(fleet.out())
    before = snapshot(fleet.out())
    other = fleet.root / "second"
    result = build(fleet, "-o", other, "--previous", fleet.out(), *seal_to(admin), *extra, env=env)
    lines = [line for line in result.stderr.splitlines() if "previous build" in line]
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert "Traceback" not in result.stderr and "AGE-SECRET-KEY" not in result.stderr + result.stdout
    assert snapshot(fleet.out()) == before
    out = other / f"demo-{VENDOR}-1"
    assert sums_ok(out)
    doc = changes(out)
    assert doc["devices"]["changed"] == sorted(HOSTS) and doc["devices"]["unchanged"] == []
    new = unsealed(out, admin.age_key, tmp_path / "new")
    assert len(passwords(new)) == len(HOSTS) and not old_passwords & passwords(new)
    for host in HOSTS:
        assert package_identity(new / "identity" / f"{host}.pkg", host) == \
            profile_identity(new / "profiles" / "devices" / f"{host}.mobileconfig")
    assert json.loads(run("diff", fleet.out(), out, "--json").stdout) == doc
    return doc


def _sealed_passwords(out: Path, key: Path) -> set[str]:
    """The Macs' passwords inside a seal, read with the age CLI and tarfile."""
    plain = subprocess.run([require_tool("age"), "-d", "-i", str(key), str(out / "secrets.tar.age")],
                           check=True, capture_output=True).stdout
    found = set()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        for member in tar:
            if member.isreg() and member.name.endswith(".mobileconfig") and "signed" not in member.name:
                found.add(_password_in(tar.extractfile(member).read()))
    return found - {None}


def _password_in(xml: bytes) -> str | None:
    import plistlib

    try:
        payloads = plistlib.loads(xml)["PayloadContent"]
    except Exception:
        return None
    return next((p["Password"] for p in payloads if p.get("PayloadType") == "com.apple.security.pkcs12"), None)


def _nothing(_out: Path) -> None:
    pass


def test_without_an_identity_every_mac_is_re_minted_and_it_says_why(fleet, keys, tmp_path):
    doc = _remint(fleet, keys, tmp_path, _nothing, "is sealed and no identity was given to open its secrets.tar.age")
    assert "no identity was given" in doc["sealed_note"] and "note" not in doc
    assert all(doc["reasons"][h] == ["re-minted (previous build is sealed)"] for h in HOSTS)
    assert doc["wrapper"] == "unchanged"  # public and verified: still carried forward
    deploy = (fleet.root / "second" / f"demo-{VENDOR}-1" / "DEPLOY.md").read_text()
    assert "**The previous build's identities are sealed and were not read** (no identity was given" in deploy


@pytest.mark.parametrize("kind", ["age", "ssh"])
def test_a_key_the_seal_was_not_made_for_re_mints_every_mac(fleet, keys, tmp_path, kind):
    stranger = make_keys(tmp_path / "stranger")
    key = stranger.age_key if kind == "age" else stranger.ssh_key
    doc = _remint(fleet, keys, tmp_path, _nothing, "none of the identities given opens its secrets.tar.age",
                  env={ENV: str(key)})
    assert "sealed to other recipients" in doc["sealed_note"]
    assert all(doc["reasons"][h] == ["re-minted (previous build is sealed)"] for h in HOSTS)


def _flip(out: Path) -> None:
    path = out / "secrets.tar.age"
    data = bytearray(path.read_bytes())
    data[len(data) - 100] ^= 0x40
    path.write_bytes(bytes(data))


def _forge_sums(out: Path) -> None:
    """Make manifest.json and SHA256SUMS vouch for the secrets.tar.age now in the folder."""
    data = (out / "secrets.tar.age").read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    manifest = json.loads((out / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["path"] == "secrets.tar.age":
            art["sha256"], art["size"] = digest, len(data)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    sums = (out / "SHA256SUMS").read_text().splitlines()
    (out / "SHA256SUMS").write_text("".join(f"{digest}  secrets.tar.age\n" if line.endswith("  secrets.tar.age")
                                            else line + "\n" for line in sums))


def _retar(out: Path, key: Path, recipient: str, change) -> None:
    """Decrypt the seal (age CLI), let `change` edit its members [(TarInfo, bytes)], seal it again to
    `recipient` and forge the checksums: what a tamperer holding a recipient's key could do."""
    plain = subprocess.run([require_tool("age"), "-d", "-i", str(key), str(out / "secrets.tar.age")],
                           check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in change(members):
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    sealed = subprocess.run([require_tool("age"), "-r", recipient], input=buf.getvalue(), check=True,
                            capture_output=True).stdout
    (out / "secrets.tar.age").write_bytes(sealed)
    _forge_sums(out)


def _unlisted(members):
    info = tarfile.TarInfo("profiles/devices/mac-z.mobileconfig")
    info.size, info.mode = 5, 0o600
    return members + [(info, b"extra")]


def _altered(members):
    out = []
    for info, data in members:
        if info.isreg() and info.name.endswith(".mobileconfig") and b"<string>" in data:
            data = bytearray(data)
            data[data.index(b"<string>") + 8] ^= 1  # same size, other bytes
            data = bytes(data)
        out.append((info, data))
    return out


def _missing(members):
    return [(info, data) for info, data in members if "mac-c" not in info.name]


@pytest.mark.parametrize("damage,needle", [
    (_flip, "secrets.tar.age does not match its manifest.json digest"),
    (lambda out: (_flip(out), _forge_sums(out)), "secrets.tar.age: is damaged or not an age file"),
    ("unlisted", "which manifest.json does not list as sealed"),
    ("altered", "does not match manifest.json (sha256 or size)"),
    ("missing", "secrets.tar.age lacks"),
], ids=["flipped", "flipped-forged", "unlisted-member", "altered-member", "missing-member"])
def test_a_seal_that_disagrees_with_its_manifest_is_not_trusted(fleet, keys, tmp_path, damage, needle):
    admin, ci = keys
    if isinstance(damage, str):
        change = {"unlisted": _unlisted, "altered": _altered, "missing": _missing}[damage]
        damage = lambda out: _retar(out, ci.age_key, ci.age_recipient, change)  # noqa: E731
    doc = _remint(fleet, keys, tmp_path, damage, "is not trusted", "--previous-identity", ci.age_key)
    assert needle in doc["note"] and "sealed_note" not in doc
    assert all(doc["reasons"][h] == ["re-minted (previous build not trusted)"] for h in HOSTS)


def test_a_bad_identity_file_stops_the_build_before_any_work(fleet, keys, tmp_path):
    admin, ci = keys
    build(fleet, *seal_to(ci))
    before = snapshot(fleet.out())
    key_text = next(line for line in ci.age_key.read_text().splitlines() if line.startswith("AGE-SECRET-KEY-"))
    public = tmp_path / "age.pub"
    public.write_text(ci.age_recipient + "\n")
    cases = [(["--previous-identity", tmp_path / "no-such.key"], None, "no such identity file"),
             ([], {ENV: str(tmp_path / "no-such.key")}, "no such identity file"),
             ([], {ENV: key_text}, "this is a private key, not the name of a file holding one"),
             ([], {ENV: ci.ssh_key.read_text()}, "this is a private key, not the name of a file holding one"),
             (["--previous-identity", key_text], None, "this is a private key, not the name of a file holding one"),
             (["--previous-identity", public], None, "is not an age secret key")]
    for args, env, needle in cases:
        result = build(fleet, *seal_to(ci), *args, env=env, check=False)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert key_text not in result.stderr + result.stdout and "OPENSSH" not in result.stderr
        assert snapshot(fleet.out()) == before


# -- no plaintext on disk --------------------------------------------------------------------------

def _needles(fleet: Fleet) -> list[bytes]:
    """Slices of every Mac's private key, raw and base64 (secret_files also finds profiles, PKCS#12
    files and identity packages by their structure)."""
    needles = []
    for pfx in sorted((fleet.root / "devices").glob("*.pfx")):
        key = pkcs12.load_key_and_certificates(pfx.read_bytes(), PASSWORD.encode())[0]
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        needles += [der[24:88], base64.b64encode(der)[32:96]]
    return needles


def _scan(folders: list[Path], needles: list[bytes]) -> list[Path] | None:
    """secret_files, or None when a file vanished under the scan (the build renames as it goes)."""
    try:
        return secret_files(folders, needles)
    except OSError:
        return None


def test_no_plaintext_secret_touches_the_disk_while_a_seal_is_read(fleet, keys, tmp_path):
    admin, ci = keys
    build(fleet, *seal_to(admin, ci))
    needles = _needles(fleet)
    opened = unsealed(keep(fleet, tmp_path), ci.age_key, tmp_path / "open")
    sealed = {a["path"] for a in json.loads((fleet.out() / "manifest.json").read_text())["artifacts"] if a["sealed"]}
    assert len(sealed) == len(HOSTS) * 7  # profile, signed, identity package; 2 Jamf, 1 Intune, 1 Munki copies
    # positive control: the scan finds every secret file of the seal once it is open
    assert {p.relative_to(opened).as_posix() for p in secret_files([opened], needles)} == sealed
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp), **{ENV: str(ci.age_key)})
    env.pop("SOURCE_DATE_EPOCH", None)
    rng = random.Random(14)
    for trial in range(3):  # scanned while it runs; the last two SIGKILLed once the seal is being read
        for attempt in range(6):  # a build can finish before the scan loop sees its spool: run it again
            log = (tmp_path / f"stderr-{trial}-{attempt}").open("w+")
            proc = subprocess.Popen([sys.executable, "-m", "builder.cli", "build", str(fleet.config), "--at", AT,
                                     "--jobs", "2", *seal_to(admin, ci)], env=env, cwd=REPO,
                                    start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
            scans, kill_at, deadline = 0, None, time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                if trial and kill_at is None and list(fleet.dist.glob(".fleetpkg-partial-*/spool-*")):  # seal open
                    kill_at = time.monotonic() + (0 if trial == 1 else rng.uniform(0, 0.3))
                if kill_at is not None and time.monotonic() >= kill_at:
                    os.killpg(proc.pid, signal.SIGKILL)
                    break
                found = _scan([fleet.dist, tmp], needles)
                if found is not None:
                    scans += 1
                    assert found == [], f"trial {trial}: {found}"
            proc.wait(timeout=60)
            time.sleep(0.3)  # the killed group's workers end with their parent
            assert secret_files([fleet.dist, tmp], needles) == [], f"trial {trial}"
            log.seek(0)
            if trial == 0 or kill_at is not None or proc.returncode != 0:
                break
            log.close()  # finished before the spool was seen: a complete build, scanned; try again
        if trial == 0:
            assert proc.returncode == 0 and scans >= 1, log.read()
            assert list(tmp.iterdir()) == [] and not list(fleet.dist.glob(".*"))  # no spool, no temporary folder
            assert changes(fleet.out())["devices"]["unchanged"] == sorted(HOSTS)
        else:
            assert proc.returncode == -signal.SIGKILL and kill_at is not None, log.read()
        if trial == 1:  # killed as the spool appeared: it is left behind, holding ciphertext only
            assert list(fleet.dist.glob(".fleetpkg-partial-*/spool-*"))
        log.close()
    # what the SIGKILLs left (spools: ciphertext) held no secret; the next build removes it and carries forward
    result = build(fleet, *seal_to(admin, ci), env={ENV: str(ci.age_key)})
    assert "left by an interrupted build" in result.stderr and not list(fleet.dist.glob(".*"))
    assert changes(fleet.out())["devices"]["unchanged"] == sorted(HOSTS)


def _read_in_child(view, rel: str) -> bytes:
    return view.read(rel)


def test_a_shared_spool_is_read_by_a_spawned_process_and_holds_only_ciphertext(tmp_path):
    """The workers' view of the previous build's seal: pickled (spawn/forkserver pools pickle
    their initargs), read in another process, its file ciphertext only, its repr without the key."""
    import multiprocessing
    import pickle

    from builder.artifacts.seal import SecretSpool

    secret = b"-----BEGIN PRIVATE KEY----- a distinctive secret " * 40
    spool = SecretSpool(tmp_path, shared=True)
    spool.add("intune/profiles/devices/mac01.mobileconfig", secret)
    spool.link("profiles/devices/mac01.mobileconfig", "intune/profiles/devices/mac01.mobileconfig")
    (name,) = [p for p in tmp_path.iterdir()]
    assert name.stat().st_mode & 0o777 == 0o600 and b"distinctive" not in name.read_bytes()
    view = spool.view()
    assert view._key.hex() not in repr(view) and str(tmp_path) not in repr(view)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        got = pool.apply(_read_in_child, (pickle.loads(pickle.dumps(view)), "profiles/devices/mac01.mobileconfig"))
    assert got == secret and view.read("intune/profiles/devices/mac01.mobileconfig") == secret
    assert "identity/mac01.pkg" not in view
    with pytest.raises(KeyError):
        view.read("identity/mac01.pkg")
    view.close()
    spool.close()
    assert list(tmp_path.iterdir()) == []


def test_sealing_to_none_of_the_previous_identity_keys_is_warned_about(fleet, keys):
    admin, ci = keys
    build(fleet, *seal_to(admin, ci))
    result = build(fleet, *seal_to(admin), "--previous-identity", ci.age_key, "--json")
    doc = json.loads(result.stdout)
    assert doc["changes"]["devices"]["unchanged"] == sorted(HOSTS)  # this one carried forward
    (warning,) = [w for w in doc["warnings"] if "--previous-identity" in w]
    assert f"sealed to none of the --previous-identity keys ({ci.age_recipient})" in warning
    assert "AGE-SECRET-KEY" not in result.stdout + result.stderr
