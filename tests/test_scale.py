"""Scale behaviour that does not need a stopwatch: the order of results does not depend on --jobs,
the vendor package is opened a fixed number of times whatever the fleet size, a written p12's
keys are derived at most once, and the fleet benchmark still runs (tiny fleet; its figures are not checked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fleetfactory import NOW, PASSWORD, make_fleet

AT = NOW.strftime("%Y-%m-%d")
# deliberately not sorted, so inventory order and sorted order differ
HOSTS = ["mac-k", "mac-b", "MAC-Z", "mac-a", "mac-q", "mac-c", "mac-m", "mac-d", "mac-y", "mac-e"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), FLEET_PFX_PASSWORD=PASSWORD)
    env.pop("SOURCE_DATE_EPOCH", None)
    return subprocess.run([sys.executable, "-m", "builder.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_check_results_are_in_inventory_order_for_any_jobs(tmp_path):
    f = make_fleet(tmp_path, HOSTS)
    docs = []
    for jobs in ("1", "2", "3"):
        r = run("check", "fleet.toml", "--at", AT, "--json", "--jobs", jobs, cwd=f.root)
        assert r.returncode == 0, r.stderr
        docs.append(r.stdout)
    assert docs[0] == docs[1] == docs[2]
    assert [d["hostname"] for d in json.loads(docs[0])["devices"]] == HOSTS


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from builder.fleet.demo import write_demo

    root = tmp_path_factory.mktemp("scale")
    config = write_demo(root / "fleet")
    return config


def _grow(config: Path, extra: int) -> None:
    """Add `extra` devices to the demo fleet by copying its first device's .pfx under new names
    (their certificates then fail subject-hostname, which --skip-failed-devices tolerates)."""
    rows = (config.parent / "devices.csv").read_text().splitlines()
    first = rows[1].split(",")
    for i in range(extra):
        rows.append(f"extra-{i:03d}.local,{first[1]},")
    (config.parent / "devices.csv").write_text("\n".join(rows) + "\n")


def test_build_outputs_follow_inventory_order_with_jobs_2(demo, tmp_path):
    from builder.cli.commands.check import parse_at
    from builder.fleet.config import load_config
    from builder.artifacts.pipeline import BuildOptions, run_build

    config = load_config(demo)
    expected = [d.hostname for d in config.devices]
    seen: list[tuple[int, int]] = []
    result = run_build(config, BuildOptions(out_dir=tmp_path / "dist", at=parse_at(None), jobs=2),
                       progress=lambda done, total: seen.append((done, total)))
    assert [r.hostname for r in result.device_results] == expected
    assert [d.hostname for d in result.info.devices] == expected
    assert seen == [(i, len(expected)) for i in range(1, len(expected) + 1)]  # one call per device, in order
    manifest = json.loads((result.output / "manifest.json").read_text())
    assert manifest  # the build finished and published its manifest


def test_vendor_package_is_read_a_fixed_number_of_times(demo, tmp_path, monkeypatch):
    """Opening the vendor package must not scale with the number of devices (jobs=1: in-process)."""
    from builder.cli.commands.check import parse_at
    from builder.fleet.config import load_config
    from builder.artifacts.pipeline import BuildOptions, run_build

    vendor = load_config(demo).vendor.package.resolve()
    counts = []
    for extra in (0, 12):
        if extra:
            _grow(demo, extra)
        config = load_config(demo)
        opened: Counter = Counter()
        real_open = open
        real_os_open = os.open

        def counting_open(file, *args, **kwargs):
            if isinstance(file, (str, os.PathLike)) and Path(file).resolve() == vendor:
                opened["open"] += 1
            return real_open(file, *args, **kwargs)

        def counting_os_open(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)) and Path(path).resolve() == vendor:
                opened["os.open"] += 1
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", counting_open)
        monkeypatch.setattr(os, "open", counting_os_open)
        try:
            result = run_build(config, BuildOptions(out_dir=tmp_path / f"dist-{extra}", at=parse_at(None), jobs=1,
                                                    skip_failed_devices=True))
        finally:
            monkeypatch.setattr("builtins.open", real_open)
            monkeypatch.setattr(os, "open", real_os_open)
        assert len(result.device_results) == 3 + extra
        counts.append(sum(opened.values()))
    assert counts[0] >= 1 and counts[0] == counts[1], counts


def _written_p12s(out: Path) -> list[tuple[bytes, bytes]]:
    """(p12, password) of every device profile and identity package a build wrote."""
    import gzip
    import io
    import plistlib

    from builder.formats.pkg.cpio import iter_cpio
    from builder.formats.pkg.xar import XarReader
    from builder.artifacts.scripts import IDENTITY_PASSWORD_FILE

    found = []
    for profile in sorted((out / "profiles" / "devices").glob("*.mobileconfig")):
        if not profile.name.endswith(".signed.mobileconfig"):
            for payload in plistlib.loads(profile.read_bytes())["PayloadContent"]:
                if payload["PayloadType"] == "com.apple.security.pkcs12":
                    found.append((payload["PayloadContent"], payload["Password"].encode()))
    for pkg in sorted((out / "identity").glob("*.pkg")):
        with XarReader(pkg) as xar:
            scripts = gzip.decompress(xar.read("Scripts"))
        files = {entry.name.removeprefix("./"): data.read() for entry, data in iter_cpio(io.BytesIO(scripts))}
        p12 = next(v for k, v in files.items() if k.endswith(".p12"))
        found.append((p12, files[IDENTITY_PASSWORD_FILE].strip()))
    return found


def test_written_p12s_are_derived_at_most_once(tmp_path, monkeypatch):
    """The build makes one p12 per device, which its device profile and its identity package
    both carry. OpenSSL derives its keys to write it; fleetpkg's own reader then reads back (MAC key, each bag's key and
    IV, each exactly once) only the first p12 of each process: later ones get the structural
    check without the password. The device profile takes the certificate from the re-encoding
    instead of opening its p12 again, and nothing keeps derived keys around."""
    from builder.certs import kdf
    from builder.certs import reencode as reencode_module
    from builder.certs.pfx import parse_pfx
    from builder.cli.commands.check import parse_at
    from builder.fleet.config import load_config
    from builder.fleet.demo import write_demo
    from builder.artifacts.pipeline import BuildOptions, run_build

    assert not hasattr(kdf.pkcs12_kdf, "cache_info")  # no memo of passwords or derived keys
    config = load_config(write_demo(tmp_path / "fleet"))
    calls: Counter = Counter()
    real = kdf.pkcs12_kdf

    def counting(hash_name, password, salt, iterations, purpose, length):
        calls[(salt, purpose)] += 1
        return real(hash_name, password, salt, iterations, purpose, length)

    monkeypatch.setattr(kdf, "pkcs12_kdf", counting)
    monkeypatch.setattr(reencode_module, "_fully_checked_in", None)  # as in a fresh worker
    result = run_build(config, BuildOptions(out_dir=tmp_path / "dist", at=parse_at(None), jobs=1))
    monkeypatch.setattr(kdf, "pkcs12_kdf", real)
    written = _written_p12s(result.output)
    assert len(written) == 2 * len(config.devices)
    distinct = list(dict.fromkeys(written))
    assert len(distinct) == len(config.devices)  # profile and identity package: the same sealed p12
    derived = []
    for p12, password in distinct:
        parsed = parse_pfx(p12, password)
        wanted = [(parsed.mac.salt, kdf.MAC_MATERIAL)]
        for pbe in parsed.encryptions:
            wanted += [(pbe.salt, kdf.KEY_MATERIAL), (pbe.salt, kdf.IV_MATERIAL)]
        assert len(wanted) == 5  # MAC + key bag + certificate container
        counts = [calls[w] for w in wanted]
        assert counts in ([1] * 5, [0] * 5), counts
        derived.append(sum(counts))
    assert sorted(derived) == [0] * (len(distinct) - 1) + [5]


def test_the_parent_does_not_reread_what_workers_wrote(tmp_path, monkeypatch):
    """Workers report the sha256 and size of the files they write, and hard-linked target copies
    take their source's: the parent hashes only the few fleet-wide files it writes itself."""
    import hashlib

    from builder.artifacts import dist
    from builder.cli.commands.check import parse_at
    from builder.fleet.config import load_config
    from builder.fleet.demo import write_demo
    from builder.artifacts.pipeline import BuildOptions, run_build

    config = load_config(write_demo(tmp_path / "fleet"))
    read: list[str] = []
    real = dist.sha256_file
    monkeypatch.setattr(dist, "sha256_file", lambda path: (read.append(str(path)), real(path))[1])
    # jobs=1: the devices run in this process too, so a re-read anywhere would show
    result = run_build(config, BuildOptions(out_dir=tmp_path / "dist", at=parse_at(None), jobs=1))
    hosts = [d.hostname for d in config.devices]
    assert not [r for r in read if any(h in r for h in hosts)], read
    manifest = json.loads((result.output / "manifest.json").read_text())
    per_device = [a for a in manifest["artifacts"] if any(h in a["path"] for h in hosts)]
    assert len(per_device) >= 3 * len(hosts)
    for art in manifest["artifacts"]:  # and every recorded digest is the file's
        data = (result.output / art["path"]).read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (art["sha256"], art["size"]), art["path"]


def test_fleet_benchmark_runs(tmp_path):
    """The benchmark end to end on a tiny fleet (a smoke test: no figure is asserted)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_fleet.py"), "--devices", "6",
                        "--speedup-devices", "4", "--keys", "2", "--keep", str(tmp_path / "b")],
                       env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for needle in ("build --jobs", "ms/device", "speed-up", "floor", "ratio", "peak RSS", "machine:",
                   "RSA signature", "identity package deflate", "fleetpkg's own work"):
        assert needle in r.stdout, (needle, r.stdout)


def test_rebuild_benchmark_runs(tmp_path):
    """bench_rebuild end to end on a tiny fleet: its own checks of changes.json must hold (the
    renewed, added and removed Macs exactly); no figure is asserted."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_rebuild.py"), "--devices", "8",
                        "--renew", "25", "--add", "2", "--remove", "1", "--keys", "2", "--keep", str(tmp_path / "b")],
                       env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for needle in ("full build", "nothing changed", "2 renewed + 2 added + 1 removed", "load average",
                   "cannot avoid", "hard-link each Mac's files", "fleetpkg's own work"):
        assert needle in r.stdout, (needle, r.stdout)
