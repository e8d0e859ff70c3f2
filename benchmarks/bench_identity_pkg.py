#!/usr/bin/env python3
"""Per-device identity package: time _build_identity_package (in memory, fixed inputs) against the
compression and hashing every such package needs, timed in the same run.

Prints ms/package for N builds (best of --reps runs), the floor (deflate of the Scripts archive's
cpio at level 6, zlib 9 of the TOC and PackageInfo, SHA-1 of the stored members, read back from a
built package with struct/zlib) and their ratio.

    python3 benchmarks/bench_identity_pkg.py [-n 500] [--reps 5] [--cas 2] [--p12-bytes 3100]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import struct
import sys
import time
import xml.etree.ElementTree as ET
import zlib
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("SOURCE_DATE_EPOCH", "1700000000")

from builder.artifacts.pipeline import DeviceSettings, _build_identity_package, identity_package_id  # noqa: E402


def settings() -> DeviceSettings:
    return DeviceSettings(staging=None, fleet="demo", organization="fleetpkg demo",
                          identifier="com.example.fleetpkg-demo", version="5.1.0.12-1",
                          at=datetime(2025, 6, 1, tzinfo=timezone.utc), ca_ders=(), allow_all_apps_access=False,
                          key_is_extractable=False, binary_path="/Library/1E/Client/1E.Client",
                          daemon_label="com.1e.client", identity_packages=True, profile_signer_pem=None)


def members(pkg: bytes) -> tuple[bytes, dict[str, bytes]]:
    """(TOC XML, stored bytes by member name) of a small unsigned xar, by struct/zlib/ElementTree."""
    _, hsize, _, csize, _, _ = struct.unpack(">4sHHQQI", pkg[:28])
    toc = zlib.decompress(pkg[hsize:hsize + csize])
    heap = hsize + csize
    out = {}
    for f in ET.fromstring(toc).iter("file"):
        data = f.find("data")
        if data is not None:
            off, length = int(data.find("offset").text), int(data.find("length").text)
            out[f.find("name").text] = pkg[heap + off:heap + off + length]
    return toc, out


def floor_work(pkg: bytes):
    """A call doing the compression and hashing the members of the built package `pkg` needed:
    deflate of the Scripts archive's cpio at level 6 (and its CRC), zlib 9 of the TOC and
    PackageInfo, SHA-1 of the stored members (the inputs are read back beforehand, untimed)."""
    toc, stored = members(pkg)
    scripts_cpio = zlib.decompress(stored["Scripts"], 16 + zlib.MAX_WBITS)
    info = zlib.decompress(stored["PackageInfo"])

    def work() -> None:
        zlib.crc32(scripts_cpio)
        zlib.compress(scripts_cpio, 6, wbits=-zlib.MAX_WBITS)
        zlib.compress(info, 9)
        zlib.compress(toc, 9)
        for data in (stored["Scripts"], stored["PackageInfo"], info, toc):
            hashlib.sha1(data).digest()
    return work


def best_of(reps: int, n: int, fn) -> float:
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--cas", type=int, default=2)
    ap.add_argument("--p12-bytes", type=int, default=3100)
    args = ap.parse_args()
    rng = random.Random(7)
    s = settings()
    p12 = rng.randbytes(args.p12_bytes)
    cas = tuple(rng.randbytes(1000) for _ in range(args.cas))

    def build(i: int) -> bytes:
        host = f"mac{i:05d}.fleet.example"
        return _build_identity_package(s, host, identity_package_id(s.identifier, host), p12, f"pw-{i:012d}", cas)

    for i in range(50):  # warm caches: imports, templates, the build's shared members
        build(i)
    work = floor_work(build(0))

    def floor(_: int) -> None:
        work()

    built = best_of(args.reps, args.n, build)
    base = best_of(args.reps, args.n, floor)
    print(f"identity package: {built:.3f} ms/package ({args.n} builds, best of {args.reps}); "
          f"floor {base:.3f} ms (deflate/zlib/SHA-1 of its members); ratio {built / base:.2f}")


if __name__ == "__main__":
    main()
