"""`fleetpkg init`: a commented scaffold that load_config accepts once its files exist."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from builder.fleet.config import load_config
from tests.conftest import REPO
from tests.fleetfactory import make_ca, make_device, write_pem, write_pfx


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def create_referenced_files(folder: Path, toml_text: str) -> None:
    """Make every file the scaffold names (real CA/.pfx made with cryptography)."""
    ca = make_ca()
    doc = tomllib.loads(toml_text)
    (folder / doc["vendor"]["package"]).parent.mkdir(parents=True, exist_ok=True)
    (folder / doc["vendor"]["package"]).write_bytes(b"xar!")
    for cert in doc["trust"]["certificates"]:
        write_pem(folder / cert, ca.cert)
    for key, value in doc.get("signing", {}).items():
        if key.endswith(("_identity", "_certificate", "_key", "_file")):
            (folder / value).parent.mkdir(parents=True, exist_ok=True)
            (folder / value).write_text("x\n")
    for line in (folder / "devices.csv").read_text().splitlines():
        if line and not line.startswith("#") and not line.startswith("hostname"):
            host, pfx = line.split(",")[:2]
            key, cert = make_device(ca, host)
            write_pfx(folder / pfx, key, cert)


def test_init_writes_loadable_scaffold(tmp_path):
    target = tmp_path / "Acme Prod!"
    r = run("init", str(target), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    text = (target / "fleet.toml").read_text()
    assert 'name = "acme-prod"' in text and 'identifier = "com.example.acme-prod"' in text
    assert text.count("\n#") > 10  # commented
    csv_text = (target / "devices.csv").read_text()
    assert csv_text.splitlines()[0].startswith("#")
    create_referenced_files(target, text)
    cfg = load_config(target / "fleet.toml")
    assert cfg.fleet.name == "acme-prod" and cfg.fleet.build == 1
    assert cfg.client.switch == "tachyon.example.com:4000"
    assert [d.hostname for d in cfg.devices] == ["MAC01.local"]
    assert cfg.inventory.default_password.name == "FLEET_PFX_PASSWORD"


def test_every_commented_setting_is_valid_when_uncommented(tmp_path):
    """The optional settings the scaffold documents are real keys with valid example values."""
    assert run("init", str(tmp_path), cwd=tmp_path).returncode == 0
    toml = tmp_path / "fleet.toml"
    text = toml.read_text()
    uncommented = re.sub(r"(?m)^#(\[\w+\]|\w+ = )", r"\1", text)
    assert uncommented.count("\n[") == text.count("\n[") + 3  # [signing], [profiles], [enroll]
    assert "minimum_os = " in uncommented and "\ntimestamp_url = " in uncommented
    toml.write_text(uncommented)
    create_referenced_files(tmp_path, uncommented)
    cfg = load_config(toml)
    assert cfg.fleet.minimum_os == "11.0"
    assert cfg.signing.installer.p12 == tmp_path / "signing/developer-id-installer.p12"
    assert cfg.signing.profile.password.name == "PROFILE_P12_PASSWORD"
    assert cfg.profiles.allow_all_apps_access is True
    assert cfg.enroll.scep_url == "https://ndes.example.com/certsrv/mscep/mscep.dll"
    assert cfg.enroll.ca_fingerprint == "3f0a9c55e12b47d86eb019c4a27d58e3910f6bc2d4853ae71c60b9f4285da30e"
    assert cfg.enroll.challenge.kind == "env" and cfg.enroll.challenge.name == "SCEP_CHALLENGE"
    assert cfg.enroll.key_size == 2048 and cfg.enroll.renew_within_days == 30
    assert cfg.enroll.subject[1] == ("OU", "Macs")


def test_init_default_dir_is_cwd(tmp_path):
    r = run("init", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fleet.toml").is_file() and (tmp_path / "devices.csv").is_file()
    expected = tmp_path.name.lower().replace("_", "-")  # e.g. test-init-default-dir-is-cwd0
    assert f'\nname = "{expected}"' in (tmp_path / "fleet.toml").read_text()


def test_init_refuses_to_overwrite(tmp_path):
    (tmp_path / "devices.csv").write_text("mine\n")
    r = run("init", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"fleetpkg: error: {tmp_path / 'devices.csv'}: already exists")
    assert not (tmp_path / "fleet.toml").exists()  # nothing half-written
    assert (tmp_path / "devices.csv").read_text() == "mine\n"
    (tmp_path / "devices.csv").unlink()
    assert run("init", str(tmp_path), cwd=tmp_path).returncode == 0
    before = (tmp_path / "fleet.toml").read_bytes()
    r = run("init", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 2 and "fleet.toml: already exists" in r.stderr
    assert (tmp_path / "fleet.toml").read_bytes() == before


def test_init_is_deterministic(tmp_path):
    a, b = tmp_path / "x" / "fleet", tmp_path / "y" / "fleet"
    assert run("init", str(a), cwd=tmp_path).returncode == 0
    assert run("init", str(b), cwd=tmp_path).returncode == 0
    for name in ("fleet.toml", "devices.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
