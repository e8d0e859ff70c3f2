"""How fast `fleetpkg build` turns a large fleet into artifacts, against the work it cannot avoid.

Makes a fleet of N devices (a 2048-bit RSA .pfx each, exported the way Windows CAs do: PBES2 /
PBKDF2-HMAC-SHA256 / AES-256-CBC with 2000 rounds, HMAC-SHA256 MAC), with the stand-in 1E Client
package and signing identities of `fleetpkg demo`, then, in the same run:

  build     `fleetpkg build --json` in a child process, end to end (start-up, vendor package,
            per-device check + re-encoding + profiles + identity packages, wrapper, targets,
            manifest) with the default --jobs (all cores): total and per-device wall time.
  speed-up  the same build of the first --speedup-devices devices with --jobs 1 and --jobs 2.
  floor     the work those files demand, timed alone on one core: the key derivations of reading
            each .pfx (MAC key + two PBKDF2 bag keys, with builder.certs' KDF functions and the
            files' own salts and iteration counts) plus writing ONE macOS PKCS#12 per device with
            OpenSSL (cryptography's serialize_key_and_certificates, 3DES bags + SHA-1 MAC, 2048
            rounds: the call the build makes; its profile and identity package carry that one p12).
            No build can skip this work: it must decrypt the input and seal a fresh secret.
            At most --floor-sample devices are timed (every k-th; all files of a set share their
            KDF parameters) and the figure is scaled to the whole fleet.
  ratio     per-device cost of the --jobs 1 build / per-device floor (target <= 1.3). The per-device
            cost is the slope between two --jobs 1 builds of the same fleet, of --speedup-devices
            devices and of a fifth as many: what one more device costs, without what every build
            costs whatever its size (start-up, the vendor package, the wrapper, the targets), which
            is printed beside it, as are the whole build's time per device / floor and the ratio
            against the .pfx-reading floor alone.
  outputs   beside the floor, what the outputs themselves demand per Mac, each timed alone: the
            profile signer's RSA signature, the identity package's deflate/zlib/SHA-1, the SHA-256 of
            the Mac's files, and the file system's cost of creating them; with the floor they give
            the least a Mac can cost, so the line says how much of the 1.3 x target is left for
            fleetpkg's own work (parsing, judging, profile, CMS, xar, targets, records) and how
            much that work takes.
  ceiling   2 identical CPU-bound KDF tasks on 2 processes vs one after the other: the --jobs 2
            speed-up the machine itself allows at that moment (shared vCPUs give well under 2).
  peak RSS  the largest resident set of any process of a build (ru_maxrss of RUSAGE_CHILDREN in a
            wrapper process whose only child is the build).

RSA key generation is the slow part of making the files, so --keys keys are reused across the
devices' certificates (each device still has its own certificate, hostname and .pfx salts).

    python3 benchmarks/bench_fleet.py                   # 1,000 devices
    python3 benchmarks/bench_fleet.py --devices 10000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PASSWORD = b"Bench-Export-Pw-2024"
ITERATIONS = 2000  # Windows "AES256-SHA256" export

_issuing = None


def _gen_init(issuing_pem: bytes, issuing_key_pem: bytes) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from tests.certs import factory

    global _issuing
    _issuing = factory.Issued(x509.load_pem_x509_certificate(issuing_pem),
                              load_pem_private_key(issuing_key_pem, None))


def _gen_device(args: tuple[str, str, int]) -> None:
    from tests.certs import factory

    host, path, key_index = args
    dev = factory.make_device_cert(_issuing, host, key_index=key_index,
                                   not_before=factory.NOW - 30 * factory.DAY)
    factory.write_pfx(Path(path), dev.certificate, dev.key, PASSWORD, [_issuing.certificate],
                      encryption="aes", iterations=ITERATIONS)


def make_fleet(root: Path, devices: int, keys: int, jobs: int, signed: bool) -> Path:
    """The demo fleet's vendor package and signing identities, with `devices` devices of our own
    CA (made with cryptography by tests/certs/factory.py, not by fleetpkg)."""
    from cryptography.hazmat.primitives import serialization

    from builder.fleet.demo import write_demo
    from tests.certs import factory

    config = write_demo(root)
    ca = factory.make_ca("Bench Root CA")
    issuing = factory.make_intermediate(ca, "Bench Issuing CA")
    factory.write_pem(root / "pki" / "demo-root.cer", ca.certificate)
    factory.write_pem(root / "pki" / "demo-issuing.cer", issuing.certificate)
    (root / "secrets" / "pfx-password.txt").write_bytes(PASSWORD + b"\n")
    for old in (root / "devices").iterdir():
        old.unlink()
    hosts = [f"mac{i:05d}.fleet.example" for i in range(devices)]
    key_pem = issuing.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    (root / "pki" / ISSUING_KEY).write_bytes(key_pem)  # for bench_rebuild's renewals; not read by fleetpkg
    (root / "pki" / ISSUING_KEY).chmod(0o600)
    issue(root, list(enumerate(hosts)), keys, jobs)
    write_inventory(root, list(enumerate(hosts)))
    if not signed:
        text = config.read_text()
        config.write_text(text.split("[signing]")[0] + "[targets]" + text.split("[targets]")[1])
    return config


ISSUING_KEY = "bench-issuing.key"


def issue(root: Path, numbered_hosts: list[tuple[int, str]], keys: int, jobs: int) -> None:
    """(Re-)issue the .pfx of each (number, hostname) from the fleet's issuing CA, in parallel."""
    from tests.certs import factory

    for i in range(keys):  # generate the pooled keys once, here, not in every worker
        factory.rsa_key(i)
    issuing_pem = (root / "pki" / "demo-issuing.cer").read_bytes()
    key_pem = (root / "pki" / ISSUING_KEY).read_bytes()
    work = [(h, str(root / "devices" / f"{h}.pfx"), i % keys) for i, h in numbered_hosts]
    if jobs > 1 and len(work) > 1:
        with ProcessPoolExecutor(jobs, initializer=_gen_init, initargs=(issuing_pem, key_pem)) as pool:
            list(pool.map(_gen_device, work, chunksize=max(1, len(work) // (jobs * 8))))
    else:
        _gen_init(issuing_pem, key_pem)
        for item in work:
            _gen_device(item)


def write_inventory(root: Path, numbered_hosts: list[tuple[int, str]]) -> None:
    rows = ["hostname,pfx,serial"] + [f"{h},devices/{h}.pfx,C02B{i:07d}" for i, h in numbered_hosts]
    (root / "devices.csv").write_text("\n".join(rows) + "\n")


def kdf_jobs(blobs):
    """Per p12 (bytes, password), the KDF calls it demands (parameters read beforehand, untimed)."""
    from builder.certs.kdf import bmp_password
    from builder.certs.pfx import parse_pfx

    jobs = []
    for data, password in blobs:
        parsed = parse_pfx(data, password)
        jobs.append((password, bmp_password(password), parsed.mac, parsed.encryptions))
    return jobs


def run_floor(jobs) -> float:
    start = time.perf_counter()
    for password, bmp, mac, pbes in jobs:
        if mac is not None:
            mac.key(password, bmp)
        for pbe in pbes:
            pbe.derive(password, bmp)
    return time.perf_counter() - start


def _chain(_: int) -> float:
    from builder.certs.kdf import pkcs12_kdf

    start = time.perf_counter()
    pkcs12_kdf("sha1", b"\0x\0\0", b"saltsalt", 1_500_000, 1, 20)
    return time.perf_counter() - start


def parallel_ceiling() -> float:
    """How much faster 2 processes run 2 identical CPU-bound KDF tasks than 1 runs them in turn:
    the best --jobs 2 speed-up this machine allows right now (shared or throttled vCPUs show < 2)."""
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(_chain, [0, 1]))  # warm up
        alone = min(_chain(0) for _ in range(2))
        start = time.perf_counter()
        list(pool.map(_chain, [0, 1]))
        both = time.perf_counter() - start
    return 2 * alone / both


def sample(items: list, count: int) -> list:
    """Every k-th item, at most `count` (all files of a set have the same KDF parameters)."""
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def input_p12s(fleet: Path) -> list[tuple[bytes, bytes]]:
    return [(p.read_bytes(), PASSWORD) for p in sorted((fleet / "devices").glob("*.pfx"))]


def write_floor(pfx_files: list[tuple[bytes, bytes]]) -> float:
    """Seconds to write one macOS PKCS#12 per identity with OpenSSL, exactly as the build's
    re-encoding does (the identities are opened beforehand, untimed)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs12

    from builder.certs.pfx import identity_from, parse_pfx

    identities = [identity_from(parse_pfx(data, password)) for data, password in pfx_files]
    encryption = (serialization.PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
                  .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
                  .hmac_hash(hashes.SHA1()).build(b"A" * 32))
    start = time.perf_counter()
    for ident in identities:
        pkcs12.serialize_key_and_certificates(b"host", ident.key, ident.certificate,
                                              list(ident.extra_certificates) or None, encryption)
    return time.perf_counter() - start


def files_floor(dist: Path, work: Path, count: int) -> float:
    """Seconds to create, write and close, in `work` (beside the builds, same file system), the
    files a Mac gets that are new in every full build (its device profiles and identity package:
    created 0600, never written through), with the sizes the build gave them, for `count` Macs:
    what the file system alone charges (on this machine's ext4 it varies with where the folder
    lies on the disk, from ~10 to ~300 microseconds a file)."""
    (out,) = [d for d in dist.iterdir() if d.is_dir() and not d.name.startswith(".")]
    sample = sorted((out / "profiles" / "devices").glob("*.mobileconfig"))[:2] + \
        sorted((out / "identity").glob("*.pkg"))[:1]
    blobs = [(p.parent.name, p.name.partition(".")[2], os.urandom(p.stat().st_size)) for p in sample]
    for folder in {folder for folder, _, _ in blobs}:
        (work / folder).mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i in range(count):
        for folder, suffix, data in blobs:
            fd = os.open(work / folder / f"mac{i:05d}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
    return time.perf_counter() - start


def outputs_floor(dist: Path, fleet: Path, count: int, signed: bool) -> dict[str, float]:
    """Seconds, for `count` Macs, of the work the build's own outputs demand beyond the floor, each
    timed alone on one core over the files a build wrote: the profile signer's RSA signature (one
    per signed device profile), the identity package's compression and hashing (its members' deflate,
    zlib and SHA-1, as bench_identity_pkg.py times them) and the SHA-256 of every file a Mac gets
    (manifest.json and SHA256SUMS list them). What is left of a Mac's cost after the floor and these
    is fleetpkg's own work: parsing and judging, the profile and its XML, the CMS and xar structure,
    the target files, the records."""
    import hashlib

    from bench_device import load_inputs, rsa_alone
    from bench_identity_pkg import floor_work

    (out,) = [d for d in dist.iterdir() if d.is_dir() and not d.name.startswith(".")]
    pkgs = sorted((out / "identity").glob("*.pkg"))[:count]
    profiles = sorted((out / "profiles" / "devices").glob("*.mobileconfig"))[:2 * count]
    works = [floor_work(pkg.read_bytes()) for pkg in pkgs]
    blobs = [p.read_bytes() for p in pkgs + profiles]
    start = time.perf_counter()
    for work in works:
        work()
    package = (time.perf_counter() - start) * count / max(1, len(works))
    start = time.perf_counter()
    for data in blobs:
        hashlib.sha256(data).hexdigest()
    digests = (time.perf_counter() - start) * count / max(1, len(pkgs))
    signing = rsa_alone(load_inputs(fleet)[2], count) if signed else 0.0
    return {"RSA signature": signing, "identity package deflate/zlib/SHA-1": package,
            "SHA-256 of its files": digests}


def distinct_p12s(dist: Path) -> tuple[int, int]:
    """(p12s found, distinct p12s) in the device profiles and identity packages a build wrote:
    one sealed identity per device, shared by its profile and its package."""
    import gzip
    import io
    import plistlib

    from builder.formats.pkg.cpio import iter_cpio
    from builder.formats.pkg.xar import XarReader

    (out,) = [d for d in dist.iterdir() if d.is_dir() and not d.name.startswith(".")]
    found = []
    for profile in sorted((out / "profiles" / "devices").glob("*.mobileconfig")):
        if profile.name.endswith(".signed.mobileconfig"):
            continue
        for payload in plistlib.loads(profile.read_bytes())["PayloadContent"]:
            if payload["PayloadType"] == "com.apple.security.pkcs12":
                found.append(payload["PayloadContent"])
    for pkg in sorted((out / "identity").glob("*.pkg")):
        with XarReader(pkg) as xar:
            scripts = gzip.decompress(xar.read("Scripts"))
        found += [data.read() for entry, data in iter_cpio(io.BytesIO(scripts)) if entry.name.endswith(".p12")]
    return len(found), len(set(found))


_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
json.dump({"wall": wall, "rc": proc.returncode, "peak_kib": peak_kib,
           "stdout": proc.stdout.decode(errors="replace"), "stderr": proc.stderr.decode(errors="replace")},
          sys.stdout)
"""


BYTECODE_NOTE = ("builds run with a bytecode cache in the work folder, as an installed fleetpkg has "
                 "(PYTHONDONTWRITEBYTECODE would recompile every module on every run)")


def run_build(config: Path, out: Path, jobs: int) -> dict:
    """One `fleetpkg build` in a child of a fresh wrapper process (so RUSAGE_CHILDREN is the build's),
    with a bytecode cache beside `out` (BYTECODE_NOTE): the first build fills it."""
    cmd = [sys.executable, "-c", _WRAPPER, sys.executable, "-m", "builder.cli", "build", str(config),
           "--json", "--jobs", str(jobs), "-o", str(out), "--at", "2025-06-01"]
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONPYCACHEPREFIX=str(Path(out).parent / "pycache"))
    env.pop("SOURCE_DATE_EPOCH", None)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    done = subprocess.run(cmd, capture_output=True, check=True, env=env, cwd=REPO)
    report = json.loads(done.stdout)
    if report["rc"] != 0:
        raise SystemExit(f"build failed (exit {report['rc']}): {report['stderr'].strip()}")
    doc = json.loads(report["stdout"])
    report["devices"] = doc["summary"]["ok"]
    report["artifacts"] = len(doc["artifacts"])
    return report


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), {platform.system()} {platform.release()}, Python {platform.python_version()}"


def subset_config(config: Path, count: int) -> Path:
    """The same fleet with only its first `count` devices (for the --jobs 1 vs 2 comparison)."""
    root = config.parent
    rows = (root / "devices.csv").read_text().splitlines()
    (root / f"devices-{count}.csv").write_text("\n".join(rows[:count + 1]) + "\n")
    sub = root / f"fleet-{count}.toml"
    sub.write_text(config.read_text().replace('inventory = "devices.csv"', f'inventory = "devices-{count}.csv"'))
    return sub


def fleet_arguments(doc: str) -> argparse.ArgumentParser:
    """The options every fleet benchmark takes (this one's and bench_rebuild's)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=8, help="distinct RSA keys to generate (reused)")
    ap.add_argument("--keep", type=Path, help="build in this folder and keep it (default: a temp dir)")
    return ap


def work_folder(keep: Path | None, prefix: str) -> tuple[Path, tempfile.TemporaryDirectory | None]:
    """--keep's folder, or a temporary one (returned too, for its cleanup)."""
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
        return keep, None
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    return Path(tmp.name), tmp


def main() -> int:
    ap = fleet_arguments(__doc__)
    ap.add_argument("--speedup-devices", type=int, default=1000,
                    help="devices for the --jobs 1 vs --jobs 2 builds (the first N of the fleet)")
    ap.add_argument("--floor-sample", type=int, default=2000,
                    help="time the floor on at most this many devices")
    ap.add_argument("--unsigned", action="store_true", help="no [signing]: unsigned wrapper and profiles")
    args = ap.parse_args()

    root, tmp = work_folder(args.keep, "fleetpkg-bench-fleet-")
    try:
        cores = os.cpu_count() or 1
        print(f"machine: {machine()}; {BYTECODE_NOTE}")
        t0 = time.perf_counter()
        config = make_fleet(root / "fleet", args.devices, args.keys, cores, not args.unsigned)
        n = args.devices
        print(f"made {n} devices (AES-256 .pfx, {args.keys} RSA-2048 keys, "
              f"{'unsigned' if args.unsigned else 'signed'} build) in {time.perf_counter() - t0:.1f} s")

        main_run = run_build(config, root / "dist", cores)
        assert main_run["devices"] == n, f"built {main_run['devices']} of {n} devices"
        print(f"build --jobs {cores}: {main_run['wall']:.2f} s total, {main_run['wall'] / n * 1e3:.3f} ms/device "
              f"wall, {main_run['artifacts']} artifacts (target: 10,000 devices < 60 s)")

        sub_n = min(n, args.speedup_devices)
        sub_config = config if sub_n == n else subset_config(config, sub_n)
        walls = {}
        for j in (1, 2):
            if j == cores and sub_n == n:
                walls[j] = main_run["wall"]
                continue
            r = run_build(sub_config, root / f"dist-{sub_n}-{j}", j)
            assert r["devices"] == sub_n
            walls[j] = r["wall"]
            main_run["peak_kib"] = max(main_run["peak_kib"], r["peak_kib"])
        print(f"build {sub_n} devices: --jobs 1 {walls[1]:.2f} s, --jobs 2 {walls[2]:.2f} s, "
              f"speed-up {walls[1] / walls[2]:.2f}x (target >= 1.7x; this machine's ceiling now: "
              f"{parallel_ceiling():.2f}x for 2 identical KDF tasks on 2 processes)")
        few_n = max(1, sub_n // 5)  # the same build of fewer devices: what the build costs whatever its size
        few = run_build(subset_config(config, few_n), root / f"dist-{few_n}-1", 1)
        assert few["devices"] == few_n
        marginal = (walls[1] - few["wall"]) / (sub_n - few_n) if sub_n > few_n else walls[1] / sub_n
        fixed = few["wall"] - marginal * few_n

        inputs = input_p12s(root / "fleet")
        found, distinct = distinct_p12s(root / f"dist-{sub_n}-1")
        assert distinct == sub_n and found == 2 * sub_n, (found, distinct)
        ins = sample(inputs, args.floor_sample)
        floor_in = run_floor(kdf_jobs(ins)) * len(inputs) / len(ins)
        floor_out = write_floor(ins) * len(inputs) / len(ins)
        floor = floor_in + floor_out
        per_dev_1 = walls[1] / sub_n
        print(f"floor on 1 core: {floor / n * 1e3:.3f} ms/device = {floor_in / n * 1e3:.3f} reading the .pfx "
              f"(KDF) + {floor_out / n * 1e3:.3f} writing one macOS p12 (OpenSSL)")
        print(f"per-device cost with --jobs 1: {marginal * 1e3:.3f} ms = the {sub_n}-device build's time less the "
              f"{few_n}-device build's ({few['wall']:.2f} s), per device between them (each build's own cost, "
              f"whatever its size: {fixed:.2f} s, is not a device's)")
        print(f"ratio per-device cost / floor: {marginal * n / floor:.2f} (target <= 1.30); against the .pfx "
              f"floor alone: {marginal * n / floor_in:.2f}; whole {sub_n}-device build / {sub_n} / floor: "
              f"{per_dev_1 * n / floor:.2f}")
        files = files_floor(root / f"dist-{sub_n}-1", root / "files-floor", sub_n) / sub_n
        print(f"  beside it, this file system's cost of a Mac's three new files (created, written, closed "
              f"here, not part of the floor): {files * 1e3:.3f} ms; per-device cost / (floor + that): "
              f"{marginal * n / (floor + files * n):.2f}")
        extra = outputs_floor(root / f"dist-{sub_n}-1", root / "fleet", sub_n, not args.unsigned)
        unavoidable = floor / n + files + sum(extra.values()) / sub_n
        print("  beside it, the work the outputs demand beyond the floor, per Mac, timed alone: "
              + ", ".join(f"{k} {v / sub_n * 1e3:.3f} ms" for k, v in extra.items())
              + f"; floor + files + these: {unavoidable * 1e3:.3f} ms = {unavoidable * n / floor:.2f} x the floor, "
              f"so the 1.3 x target leaves {(1.3 * floor / n - unavoidable) * 1e3:.3f} ms a Mac for fleetpkg's own "
              f"work, which takes {(marginal - unavoidable) * 1e3:.3f} ms")
        print(f"peak RSS (largest process of any build): {main_run['peak_kib'] / 1024:.0f} MB (target < 500 MB)")
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
