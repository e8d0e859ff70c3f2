"""Sealed builds (`build --seal-to`, `unseal`), checked with tools fleetpkg did not write: keys
from age-keygen and `cryptography`, the age CLI, GNU tar and bsdtar, sha256sum, plistlib.

The demo fleet is built sealed to two recipients (an age X25519 key and an ssh-ed25519 key); the
dist must hold no device key or PKCS#12 in any form outside secrets.tar.age, and age + tar, as
well as `fleetpkg unseal`, must give back exactly the files the manifest lists.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import pkcs12

from tests.artifacts.targets.conftest import fleetpkg
from tests.artifacts.targets.test_secrets import _identity_pkg_secrets, _needles, _profile_secrets
from tests.conftest import age_untar as untar_sealed, require_tool

EPOCH = "1767225600"  # 2026-01-01


@dataclass(frozen=True)
class Keys:
    age_key: Path  # age-keygen's identity file
    age_recipient: str
    ssh_key: Path  # OpenSSH private key (cryptography)
    ssh_recipient: str


def make_keys(folder: Path) -> Keys:
    folder.mkdir(parents=True, exist_ok=True)
    age_key = folder / "age.key"
    subprocess.run([require_tool("age-keygen"), "-o", str(age_key)], check=True, capture_output=True)
    recipient = subprocess.run([require_tool("age-keygen"), "-y", str(age_key)], check=True,
                               capture_output=True, text=True).stdout.strip()
    ssh = ed25519.Ed25519PrivateKey.generate()
    ssh_key = folder / "id_ed25519"
    ssh_key.write_bytes(ssh.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    ssh_key.chmod(0o600)
    ssh_pub = ssh.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return Keys(age_key, recipient, ssh_key, ssh_pub.decode() + " admin@fleet")


@dataclass(frozen=True)
class Sealed:
    fleet: Path  # the demo fleet folder
    root: Path  # the sealed dist/<fleet>-<version>
    keys: Keys
    stdout: str

    @property
    def manifest(self) -> dict:
        return json.loads((self.root / "manifest.json").read_text())


@pytest.fixture(scope="module")
def sealed(tmp_path_factory) -> Sealed:
    base = tmp_path_factory.mktemp("sealed")
    fleet = base / "demo"
    fleetpkg("demo", str(fleet), "--jobs", "1")
    keys = make_keys(base / "keys")
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH)
    result = fleetpkg("build", str(fleet / "fleet.toml"), "-o", str(base / "out"), "--jobs", "2",
                      "--seal-to", keys.age_recipient, "--seal-to", keys.ssh_recipient, env=env)
    (root,) = (base / "out").iterdir()
    return Sealed(fleet, root, keys, result.stdout)


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


def age_untar(sealed: Sealed, identity: Path, dest: Path, tar_tool: str = "tar") -> Path:
    """`age -d -i KEY secrets.tar.age | tar -x`, as DEPLOY.md tells an admin."""
    return untar_sealed(sealed.root / "secrets.tar.age", identity, dest, tar_tool)


def assert_matches_manifest(sealed: Sealed, restored: Path) -> None:
    arts = {a["path"]: a for a in sealed.manifest["artifacts"] if a["sealed"]}
    assert set(_files(restored)) == set(arts)
    for rel, art in arts.items():
        data = (restored / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"] and len(data) == art["size"], rel
        assert stat.S_IMODE((restored / rel).stat().st_mode) == 0o600, rel


# -- what a sealed dist holds ---------------------------------------------------------------------

def test_every_secret_is_sealed_and_listed(sealed):
    manifest = sealed.manifest
    arts = {a["path"]: a for a in manifest["artifacts"]}
    secret = {p for p, a in arts.items() if a["secret"]}
    assert len(secret) == 18  # 3 Macs x (profile, signed profile, identity package, 2 Jamf + 1 Intune copies)
    assert all(arts[p]["sealed"] for p in secret)
    assert not any(a["sealed"] for p, a in arts.items() if p not in secret)
    on_disk = _files(sealed.root)
    assert not secret & set(on_disk)
    for folder in ("jamf", "intune", "munki", "profiles/devices", "identity"):
        assert not any(p.startswith(folder + "/") and arts.get(p, {}).get("secret") for p in on_disk), folder
    assert manifest["sealed_to"] == [sealed.keys.age_recipient, sealed.keys.ssh_recipient]
    assert arts["secrets.tar.age"]["kind"] == "sealed-secrets" and not arts["secrets.tar.age"]["secret"]
    assert (sealed.root / "secrets.tar.age").read_bytes().startswith(b"age-encryption.org/v1\n")
    assert "sealed in secrets.tar.age" in sealed.stdout


def test_sha256sums_covers_secrets_tar_age_and_every_file_present(sealed):
    sums = (sealed.root / "SHA256SUMS").read_text()
    names = [line.split("  ", 1)[1] for line in sums.splitlines()]
    assert "secrets.tar.age" in names
    assert set(names) == set(_files(sealed.root)) - {"manifest.json", "SHA256SUMS"}
    check = subprocess.run([require_tool("sha256sum"), "-c", "--strict", "SHA256SUMS"], cwd=sealed.root,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def _device_secrets(sealed: Sealed, restored: Path, tmp_path: Path) -> list[bytes]:
    """Every form a Mac's key takes: the inventory's .pfx and its private key (PKCS#8 and raw),
    and the PKCS#12 files and passwords inside the restored profiles and identity packages."""
    found = []
    password = (sealed.fleet / "secrets" / "pfx-password.txt").read_text().strip().encode()
    pfxs = sorted((sealed.fleet / "devices").glob("*.pfx"))
    assert len(pfxs) == 3
    for pfx in pfxs:
        found.append(pfx.read_bytes())
        key, _cert, _extra = pkcs12.load_key_and_certificates(pfx.read_bytes(), password)
        found.append(key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
        found.append(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()).split(b"\n")[1])
        numbers = key.private_numbers()
        secret_int = getattr(numbers, "d", None) or getattr(numbers, "private_value")
        found.append(secret_int.to_bytes((secret_int.bit_length() + 7) // 8, "big"))
    for path in sorted(restored.rglob("*.mobileconfig")):
        if not path.name.endswith(".signed.mobileconfig"):
            found += _profile_secrets(path)
    for pkg in sorted((restored / "identity").glob("*.pkg")):
        found += _identity_pkg_secrets(pkg, tmp_path)
    return found


def test_no_file_of_a_sealed_dist_holds_a_device_key_or_pkcs12(sealed, tmp_path):
    restored = age_untar(sealed, sealed.keys.age_key, tmp_path / "restored")
    secrets = _device_secrets(sealed, restored, tmp_path)
    # per Mac: pfx, PKCS#8 DER, PEM line, private value; 3 intune/jamf/plain profiles x (p12, password);
    # identity package (p12, password)
    assert len(secrets) == 3 * 4 + 3 * 3 * 2 + 3 * 2
    needles = [n for s in secrets for n in _needles(s)]
    assert all(len(n) >= 16 for n in needles)
    scanned = 0
    for rel, path in _files(sealed.root).items():
        data = path.read_bytes()
        flat = re.sub(rb"\s+", b"", data)
        for needle in needles:
            assert needle not in data and needle not in flat, f"{rel} holds a device secret"
        scanned += 1
    assert scanned == len(_files(sealed.root)) >= 20
    # the same needles do find the profiles' secrets in the restored files (so a leak would have been
    # found); the identity packages' are compressed, so they are looked for below by structure
    restored_data = b"".join(re.sub(rb"\s+", b"", p.read_bytes()) for p in _files(restored).values())
    for secret in secrets[12:12 + 18]:
        assert any(n in restored_data for n in _needles(secret))
    # no byte-identical copy of a sealed file, and no package in the dist carries a .p12 or its password
    sealed_digests = {a["sha256"] for a in sealed.manifest["artifacts"] if a["sealed"]}
    assert not sealed_digests & {hashlib.sha256(p.read_bytes()).hexdigest() for p in _files(sealed.root).values()}
    bsdtar = require_tool("bsdtar")
    packages = [p for rel, p in _files(sealed.root).items() if rel.endswith(".pkg")]
    assert len(packages) == 4  # the wrapper and its Intune, Jamf and Munki copies
    for n, pkg in enumerate(packages):
        out = tmp_path / f"pkg{n}"
        out.mkdir()
        subprocess.run([bsdtar, "-xf", str(pkg), "-C", str(out)], check=True)
        archives = [p for p in out.rglob("*") if p.name in ("Scripts", "Payload") and p.is_file()]
        assert archives
        for archive in archives:
            names = subprocess.run([bsdtar, "-tf", str(archive)], check=True, capture_output=True,
                                   text=True).stdout.split()
            assert not [m for m in names if m.endswith(".p12") or m.endswith("identity.pass")], pkg


def test_signing_keys_are_nowhere_in_the_dist(sealed):
    password = (sealed.fleet / "secrets" / "signing-password.txt").read_text().strip().encode()
    needles = []
    for name in ("installer.p12", "profiles.p12"):
        blob = (sealed.fleet / "signing" / name).read_bytes()
        key, _cert, _ = pkcs12.load_key_and_certificates(blob, password)
        der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        needles += [blob[16:80], der[16:80], base64.b64encode(der)[20:100]]
    for rel, path in _files(sealed.root).items():
        data = path.read_bytes()
        assert not any(n in data for n in needles), rel


# -- getting the secrets back ---------------------------------------------------------------------

@pytest.mark.parametrize("tool", ["tar", "bsdtar"])
def test_age_cli_and_tar_restore_files_matching_the_manifest(sealed, tmp_path, tool):
    restored = age_untar(sealed, sealed.keys.age_key, tmp_path / tool, tool)
    assert_matches_manifest(sealed, restored)
    # copies are hard links of one file, as in an unsealed dist
    host = "MAC01.local"
    a = (restored / "profiles/devices" / f"{host}.mobileconfig").stat()
    b = (restored / "jamf/profiles/devices" / f"{host}.mobileconfig").stat()
    assert (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def test_the_ssh_recipient_opens_it_too(sealed, tmp_path):
    assert_matches_manifest(sealed, age_untar(sealed, sealed.keys.ssh_key, tmp_path / "ssh"))


def test_the_tar_is_sorted_and_deterministic_in_its_metadata(sealed):
    plain = subprocess.run([require_tool("age"), "-d", "-i", str(sealed.keys.age_key),
                            str(sealed.root / "secrets.tar.age")], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.mode, m.uid, m.gid, m.mtime) for m in members} == {(0o600, 0, 0, int(EPOCH))}
    assert {m.type for m in members} == {tarfile.REGTYPE, tarfile.LNKTYPE}
    assert len(plain) % 10240 == 0  # whole tar records, as tar writes them


@pytest.mark.parametrize("which", ["age", "ssh"])
def test_fleetpkg_unseal_restores_into_the_dist_and_verify_passes(sealed, tmp_path, which):
    dist = Path(shutil.copytree(sealed.root, tmp_path / sealed.root.name))
    key = sealed.keys.age_key if which == "age" else sealed.keys.ssh_key
    result = fleetpkg("unseal", str(dist), "--identity", str(key))
    assert "restored 18 secret file(s)" in result.stdout
    restored = tmp_path / "only-secrets"
    restored.mkdir()
    for rel in (a["path"] for a in sealed.manifest["artifacts"] if a["sealed"]):
        (restored / rel).parent.mkdir(parents=True, exist_ok=True)
        os.link(dist / rel, restored / rel)
    assert_matches_manifest(sealed, restored)
    verify = fleetpkg("verify", str(dist), check=False)
    assert verify.returncode == 0, verify.stdout
    assert "18 of them are restored in this folder" in verify.stdout
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fleetpkg-partial-")]


def test_unseal_to_another_folder(sealed, tmp_path):
    out = tmp_path / "elsewhere" / "secrets"
    fleetpkg("unseal", str(sealed.root), "-i", str(sealed.keys.age_key), "-o", str(out))
    assert_matches_manifest(sealed, out)
    assert not any(n.startswith(".fleetpkg-partial-") for n in os.listdir(out.parent))


def test_verify_accepts_the_sealed_dist_and_says_what_is_sealed(sealed):
    result = fleetpkg("verify", str(sealed.root), check=False)
    assert result.returncode == 0, result.stdout
    assert "18 secret artifact(s) are sealed in secrets.tar.age for 2 recipient(s)" in result.stdout
    doc = json.loads(fleetpkg("verify", "--json", str(sealed.root), check=False).stdout)
    assert doc["ok"] and doc["sealed"] == 18


def test_verify_still_finds_a_damaged_or_missing_archive(sealed, tmp_path):
    dist = Path(shutil.copytree(sealed.root, tmp_path / "d"))
    data = bytearray((dist / "secrets.tar.age").read_bytes())
    data[len(data) // 2] ^= 1
    (dist / "secrets.tar.age").write_bytes(bytes(data))
    result = fleetpkg("verify", str(dist), check=False)
    assert result.returncode == 1 and "problem: secrets.tar.age: sha256 does not match" in result.stdout
    (dist / "secrets.tar.age").unlink()
    result = fleetpkg("verify", str(dist), check=False)
    assert result.returncode == 1 and "problem: secrets.tar.age: missing" in result.stdout


# -- refusals: one clear line, nothing written ---------------------------------------------------

def _unseal_fails(dist: Path, key: Path, out: Path | None = None) -> str:
    before = {p: p.stat().st_mtime_ns for p in dist.parent.rglob("*")}
    args = ["unseal", str(dist), "-i", str(key)] + (["-o", str(out)] if out else [])
    result = fleetpkg(*args, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    after = {p: p.stat().st_mtime_ns for p in dist.parent.rglob("*")}
    assert after == before  # nothing written, nothing left behind
    return result.stderr


def test_a_wrong_identity_is_one_clear_error(sealed, tmp_path):
    other = make_keys(tmp_path / "other")
    dist = Path(shutil.copytree(sealed.root, tmp_path / "x" / sealed.root.name))
    err = _unseal_fails(dist, other.age_key)
    assert "none of the given identities can open it" in err
    err = _unseal_fails(dist, other.ssh_key, tmp_path / "x" / "out")
    assert "none of the given identities can open it" in err


def _reseal(dist: Path, keys: Keys, tar_bytes: bytes) -> None:
    """Replace secrets.tar.age (age CLI) and its manifest checksum, as a tamperer could."""
    age = subprocess.run([require_tool("age"), "-r", keys.age_recipient], input=tar_bytes, check=True,
                         capture_output=True).stdout
    (dist / "secrets.tar.age").write_bytes(age)
    manifest = json.loads((dist / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["path"] == "secrets.tar.age":
            art["sha256"], art["size"] = hashlib.sha256(age).hexdigest(), len(age)
    (dist / "manifest.json").write_text(json.dumps(manifest))


def test_a_damaged_archive_is_one_clear_error(sealed, tmp_path):
    dist = Path(shutil.copytree(sealed.root, tmp_path / "x" / sealed.root.name))
    data = bytearray((dist / "secrets.tar.age").read_bytes())
    data[len(data) - 100] ^= 0x40
    (dist / "secrets.tar.age").write_bytes(bytes(data))
    assert "secrets.tar.age is damaged: its sha256 differs from manifest.json" in _unseal_fails(
        dist, sealed.keys.age_key)
    # with the checksum forged to match, age's own authentication catches it
    manifest = json.loads((dist / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["path"] == "secrets.tar.age":
            art["sha256"] = hashlib.sha256(bytes(data)).hexdigest()
    (dist / "manifest.json").write_text(json.dumps(manifest))
    assert "is damaged or not an age file" in _unseal_fails(dist, sealed.keys.age_key)


def _tar(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _first_sealed(sealed: Sealed) -> tuple[dict, bytes]:
    """The manifest entry of the first sealed artifact and its bytes, as the age CLI decrypts them."""
    first = next(a for a in sealed.manifest["artifacts"] if a["sealed"])
    plain = subprocess.run([require_tool("age"), "-d", "-i", str(sealed.keys.age_key),
                            str(sealed.root / "secrets.tar.age")], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return first, tar.extractfile(first["path"]).read()


def _member(name: str, kind=tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o600
    return info


@pytest.mark.parametrize("member,needle", [
    (_member("../escaped.txt"), "would escape the folder: '../escaped.txt'"),
    (_member("/tmp/absolute.txt"), "would escape the folder: '/tmp/absolute.txt'"),
    (_member("profiles/../../escaped.txt"), "would escape the folder"),
    (_member("profiles/devices/MAC01.local.mobileconfig", tarfile.SYMTYPE, "/etc/passwd"), "is not a plain file"),
    (_member("profiles/devices/MAC01.local.mobileconfig", tarfile.LNKTYPE, "../../etc/passwd"),
     "which is not an earlier member"),
    (_member("unlisted.txt"), "which manifest.json does not list as sealed"),
])
def test_a_member_that_tries_to_escape_is_one_clear_error(sealed, tmp_path, member, needle):
    dist = Path(shutil.copytree(sealed.root, tmp_path / "x" / sealed.root.name))
    first, good = _first_sealed(sealed)
    # a genuine member first, so a reader that writes as it goes would already have written
    _reseal(dist, sealed.keys, _tar((_member(first["path"]), good), (member, b"evil")))
    err = _unseal_fails(dist, sealed.keys.age_key)
    assert needle in err and "nothing was written" in err
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "x" / "escaped.txt").exists()


def test_an_archive_missing_a_sealed_artifact_is_refused(sealed, tmp_path):
    dist = Path(shutil.copytree(sealed.root, tmp_path / "x" / sealed.root.name))
    first, good = _first_sealed(sealed)
    _reseal(dist, sealed.keys, _tar((_member(first["path"]), good)))
    assert "lacks 17 sealed artifact(s)" in _unseal_fails(dist, sealed.keys.age_key)


def test_unseal_refuses_an_unsealed_build_and_a_public_key_as_identity(sealed, tmp_path):
    plain = sealed.fleet / "dist"
    (build,) = [p for p in plain.iterdir() if p.is_dir()]
    assert "this build is not sealed" in _unseal_fails(build, sealed.keys.age_key)
    pub = tmp_path / "recipient.txt"
    pub.write_text(sealed.keys.age_recipient + "\n")
    assert "is not an age secret key" in _unseal_fails(sealed.root, pub)


@pytest.mark.parametrize("recipient,needle", [
    ("age1notakey", "is not a valid age recipient"),
    ("ssh-dss AAAAB3NzaC1kc3MAAACBAP", "is not an age recipient"),
    ("AGE-SECRET-KEY-1QQQQQQ", "this is a private key, not a recipient"),
])
def test_a_bad_recipient_is_refused_before_anything_is_built(sealed, tmp_path, recipient, needle):
    out = tmp_path / "out"
    result = fleetpkg("build", str(sealed.fleet / "fleet.toml"), "-o", str(out), "--seal-to", recipient,
                      check=False)
    assert result.returncode == 2 and needle in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() or not any(out.iterdir())


# -- the parent's spool and the archive writer ---------------------------------------------------

def test_the_spool_keeps_no_plaintext_and_no_name_on_disk(tmp_path):
    from builder.artifacts.seal import SecretSpool

    secret = b"-----BEGIN PRIVATE KEY----- a distinctive secret " * 50
    spool = SecretSpool(tmp_path)
    spool.add("identity/mac01.pkg", secret)
    spool.link("munki/pkgs/mac01.pkg", "identity/mac01.pkg")
    assert list(tmp_path.iterdir()) == []  # unnamed: nothing for a SIGKILL to leave behind
    on_disk = Path(f"/proc/self/fd/{spool._file.fileno()}").read_bytes()
    assert len(on_disk) >= len(secret) and b"distinctive" not in on_disk
    assert spool.read("identity/mac01.pkg") == secret and spool.origin("munki/pkgs/mac01.pkg") == "identity/mac01.pkg"
    spool.close()


def test_write_archive_is_deterministic_inside_and_streams(tmp_path):
    """Two archives of the same files decrypt (age CLI) to the same tar; 5 MB go through without
    the whole tar ever being held (the writer makes one member at a time)."""
    from builder.artifacts.seal import SecretSpool, write_archive
    from builder.formats.age import parse_recipient

    keys = make_keys(tmp_path / "keys")
    blob = os.urandom(5 << 20)
    plains = []
    for n in ("a", "b"):
        folder = tmp_path / n
        folder.mkdir()
        spool = SecretSpool(folder)
        for rel, data in (("z/last.bin", b"z" * 10), ("a/big.bin", blob), ("m/mid.bin", b"m" * 700)):
            spool.add(rel, data)
        spool.link("b/copy.bin", "z/last.bin")
        digest, size = write_archive(folder / "secrets.tar.age", spool, [parse_recipient(keys.age_recipient)],
                                     1767225600)
        spool.close()
        data = (folder / "secrets.tar.age").read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (digest, size)
        assert stat.S_IMODE((folder / "secrets.tar.age").stat().st_mode) == 0o644
        plains.append(subprocess.run([require_tool("age"), "-d", "-i", str(keys.age_key),
                                      str(folder / "secrets.tar.age")], check=True, capture_output=True).stdout)
    assert plains[0] == plains[1]
    with tarfile.open(fileobj=io.BytesIO(plains[0])) as tar:
        members = tar.getmembers()
        assert [(m.name, m.type, m.linkname) for m in members] == [
            ("a/big.bin", tarfile.REGTYPE, ""), ("b/copy.bin", tarfile.REGTYPE, ""),
            ("m/mid.bin", tarfile.REGTYPE, ""), ("z/last.bin", tarfile.LNKTYPE, "b/copy.bin")]
        assert tar.extractfile("a/big.bin").read() == blob
        assert tar.extractfile("b/copy.bin").read() == b"z" * 10
