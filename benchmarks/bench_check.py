"""How fast `fleetpkg check` reads and lints device certificates, against the work it cannot avoid.

Makes N devices, each a 2048-bit RSA .pfx exported the way Windows CAs do, then times, in the
same run:

  floor     the key derivation the files demand, timed alone: per file the MAC key (PKCS#12 KDF) and
            each bag's key (PBKDF2 via hashlib, or the PKCS#12 KDF for 3DES/RC2 bags), with the
            files' own salts and iteration counts. No reader can skip this work.
  fleetpkg  load_pfx + lint_identity per device (parse, MAC, decrypt, key/cert match, the nine
            rules including chain building and cryptography's path validation).
  naive     pkcs12.load_pkcs12 on a sample (for reference: OpenSSL's full RSA key check).

Floor and fleetpkg are timed per device back to back (each device's best of --repeat rounds),
so other load on the machine hits both alike. It prints fleetpkg/floor (target <= 1.3) and the speed-up of --jobs 2 over --jobs 1 through a
ProcessPoolExecutor (as `fleetpkg check --jobs` runs).

Formats (--format):
  aes   Windows Server 2019+/Windows 10 1709+ "AES256-SHA256" export: PBES2, PBKDF2-HMAC-SHA256,
        AES-256-CBC for key and certificates with 2000 rounds, HMAC-SHA256 MAC (cryptography
        gives the MAC 2048 iterations).
  3des  the older "TripleDES-SHA1" export: pbeWithSHAAnd3-KeyTripleDES-CBC, HMAC-SHA1 MAC.

RSA key generation is the slow part of making the files, so --keys keys are reused across the
devices' certificates (each device still has its own certificate, hostname and .pfx salts).

    python3 benchmarks/bench_check.py --devices 1000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.certs import lint_identity, load_pfx  # noqa: E402
from builder.certs.kdf import bmp_password  # noqa: E402
from builder.certs.pfx import parse_pfx  # noqa: E402

PASSWORD = b"Bench-Export-Pw-2024"

_cas: list = []
_at = None


def make_fleet(root: Path, devices: int, keys: int, fmt: str):
    from tests.certs import factory

    ca = factory.make_ca()
    issuing = factory.make_intermediate(ca)
    paths = []
    for i in range(devices):
        host = f"mac{i:05d}.fleet.example"
        dev = factory.make_device_cert(issuing, host, key_index=i % keys)
        path = root / f"{host}.pfx"
        factory.write_pfx(path, dev.certificate, dev.key, PASSWORD, [issuing.certificate],
                          encryption=fmt, iterations=2000)
        paths.append((host, str(path)))
    return [ca.certificate, issuing.certificate], paths, factory.NOW


def kdf_jobs(paths):
    """Per file, the KDF calls it demands (parameters read beforehand, outside any timing)."""
    bmp = bmp_password(PASSWORD)
    jobs = []
    for _, path in paths:
        parsed = parse_pfx(Path(path).read_bytes(), PASSWORD)
        jobs.append((parsed.mac, parsed.encryptions))
    return jobs, bmp


def floor_one(job, bmp) -> None:
    mac, pbes = job
    if mac is not None:
        mac.key(PASSWORD, bmp)
    for pbe in pbes:
        pbe.derive(PASSWORD, bmp)


def check_one(item) -> int:
    host, path = item
    identity = load_pfx(Path(path), PASSWORD)
    return len(lint_identity(identity, host, _cas, _at))


def run_interleaved(paths, jobs, bmp, rounds: int) -> tuple[float, float]:
    """Per device: its floor work, then its load+lint, back to back; each device's best of
    `rounds`. Interleaving at this grain makes load from other processes hit both alike."""
    best_floor = [float("inf")] * len(paths)
    best_ours = [float("inf")] * len(paths)
    clock = time.perf_counter
    for _ in range(rounds):
        for i, (item, job) in enumerate(zip(paths, jobs)):
            t0 = clock()
            floor_one(job, bmp)
            t1 = clock()
            findings = check_one(item)
            t2 = clock()
            assert findings == 0, f"findings on benchmark device {item[0]}: the fleet should be clean"
            best_floor[i] = min(best_floor[i], t1 - t0)
            best_ours[i] = min(best_ours[i], t2 - t1)
    return sum(best_floor), sum(best_ours)


def _init(cas_der: list[bytes], at) -> None:
    from cryptography import x509
    global _cas, _at
    _cas = [x509.load_der_x509_certificate(d) for d in cas_der]
    _at = at


def run_pool(paths, jobs: int, cas_der, at) -> float:
    with ProcessPoolExecutor(jobs, initializer=_init, initargs=(cas_der, at)) as pool:
        list(pool.map(check_one, paths[:jobs * 4]))  # warm the workers (imports) before timing
        start = time.perf_counter()
        findings = sum(pool.map(check_one, paths, chunksize=max(1, len(paths) // (jobs * 8))))
        elapsed = time.perf_counter() - start
    assert findings == 0
    return elapsed


def run_naive(paths) -> float:
    from cryptography.hazmat.primitives.serialization import pkcs12
    start = time.perf_counter()
    for _, path in paths:
        pkcs12.load_pkcs12(Path(path).read_bytes(), PASSWORD)
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--keys", type=int, default=8, help="distinct RSA keys to generate (reused)")
    ap.add_argument("--format", choices=["aes", "3des"], default="aes")
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3,
                    help="timed rounds; each device's best round counts")
    ap.add_argument("--naive-sample", type=int, default=50)
    args = ap.parse_args()

    from cryptography.hazmat.primitives import serialization

    with tempfile.TemporaryDirectory(prefix="fleetpkg-bench-") as tmp:
        t0 = time.perf_counter()
        cas, paths, at = make_fleet(Path(tmp), args.devices, args.keys, args.format)
        print(f"made {args.devices} devices ({args.format}, {args.keys} RSA-2048 keys) "
              f"in {time.perf_counter() - t0:.1f} s")
        _init([c.public_bytes(serialization.Encoding.DER) for c in cas], at)
        jobs, bmp = kdf_jobs(paths)
        sample = jobs[0]
        print(f"per file: MAC {sample[0].name} x{sample[0].iterations}; "
              + ", ".join(f"{p.name} x{p.iterations}" for p in sample[1]))

        check_one(paths[0])  # warm caches (CA signature checks, verifier) outside the timing
        floor, mine = run_interleaved(paths, jobs, bmp, args.repeat)
        n = len(paths)
        naive_n = min(args.naive_sample, n)
        naive = run_naive(paths[:naive_n]) if naive_n else 0.0

        print(f"floor (KDF work alone)      {floor / n * 1e3:7.3f} ms/device")
        print(f"fleetpkg load+lint          {mine / n * 1e3:7.3f} ms/device   "
              f"ratio {mine / floor:.2f} x floor (target <= 1.30)")
        if naive_n:
            print(f"naive load_pkcs12 (sample)  {naive / naive_n * 1e3:7.3f} ms/device   "
                  f"({naive / naive_n / (mine / n):.1f}x slower than fleetpkg, load only)")
        cas_der = [c.public_bytes(serialization.Encoding.DER) for c in cas]
        walls = {}
        for j in args.jobs:
            walls[j] = min(run_pool(paths, j, cas_der, at) for _ in range(max(1, args.repeat - 1)))
            print(f"--jobs {j}: {walls[j]:.2f} s wall, {walls[j] / n * 1e3:.3f} ms/device")
        base = walls.get(1)
        for j, wall in walls.items():
            if base and j != 1:
                print(f"speed-up --jobs {j} vs 1: {base / wall:.2f}x (ideal {j}x; cores: {os.cpu_count()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
