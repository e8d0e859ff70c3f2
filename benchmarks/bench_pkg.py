#!/usr/bin/env python3
"""Wrap a large vendor component in a product archive and compare with copying + hashing it.

Prints, from one run:
  * wrap time / (cp + sha256sum of the same component bytes), both timed here  (target <= 1.5)
  * peak RSS of the wrap, in a child process, at 50 MB and at --size-mb        (target < 150 MB, flat)
  * `fleetpkg inspect` wall time on the wrapped package (a fresh interpreter)   (target < 0.3 s)
Build time of the component itself is shown for information (it is gzip-bound).

    python3 benchmarks/bench_pkg.py [--size-mb 200] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 1 << 20


def make_tree(root: Path, size_mb: int, seed: int = 1) -> int:
    """~size_mb of files: 3/4 of the bytes random (incompressible, like signed binaries), 1/4 text."""
    rng = random.Random(seed)
    target = size_mb * MB
    written = text = 0
    index = 0
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
             for _ in range(2000)]
    while written < target:
        folder = root / "Library" / "Application Support" / "Vendor" / f"part{index % 7}"
        folder.mkdir(parents=True, exist_ok=True)
        size = min(target - written, rng.choice([4 * 1024, 64 * 1024, 1 * MB, 4 * MB, 8 * MB]))
        is_text = text + size <= (written + size) // 4
        path = folder / f"file{index:05d}.{'txt' if is_text else 'bin'}"
        with open(path, "wb") as out:
            left = size
            while left:
                n = min(left, MB)
                if is_text:
                    line = b" ".join(rng.choices(words, k=200)) + b"\n"
                    out.write((line * (n // len(line) + 1))[:n])
                else:
                    out.write(rng.randbytes(n))
                left -= n
        if not is_text and index % 3 == 0:
            path.chmod(0o755)
        written += size
        text += size if is_text else 0
        index += 1
    return index


CHILD_BUILD = """
import json, resource, sys, time
from builder.formats.pkg.package import build_component
t = time.perf_counter()
build_component(sys.argv[1], identifier="com.vendor.client", version="5.1.0.12", root=sys.argv[2],
                scripts={"postinstall": b"#!/bin/sh\\nexit 0\\n"})
print(json.dumps({"seconds": time.perf_counter() - t,
                  "self_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

CHILD_WRAP = """
import json, resource, sys, time
from builder.formats.pkg.package import EmbedComponent, build_component, build_product
from builder.formats.pkg.product import Choice, Distribution, Line, PkgRef
from builder.formats.pkg.xar import XarReader
vendor_pkg, ours_pkg, dest = sys.argv[1:4]
build_component(ours_pkg, identifier="com.acme.configure", version="1", root=None,
                scripts={"postinstall": b"#!/bin/sh\\nexit 0\\n"})
dist = Distribution(
    title="ACME 1E Client", options=(("customize", "never"), ("require-scripts", "false"),
                                     ("hostArchitectures", "x86_64,arm64")),
    choices_outline=(Line("default", (Line("com.vendor.client"), Line("com.acme.configure"))),),
    choices=(Choice("default"),
             Choice("com.vendor.client", (("visible", "false"),), (PkgRef("com.vendor.client"),)),
             Choice("com.acme.configure", (("visible", "false"),), (PkgRef("com.acme.configure"),))),
    pkg_refs=(PkgRef("com.vendor.client", "5.1.0.12", 0, "Root", "none", "#vendor.pkg"),
              PkgRef("com.acme.configure", "1", 0, "Root", "none", "#configure.pkg")),
    product=(("id", "com.acme.wrapper"), ("version", "1")))
t = time.perf_counter()
with XarReader(vendor_pkg) as vendor, XarReader(ours_pkg) as ours:
    build_product(dest, distribution=dist, components=[EmbedComponent(vendor, "", "vendor.pkg"),
                                                       EmbedComponent(ours, "", "configure.pkg")])
print(json.dumps({"seconds": time.perf_counter() - t,
                  "self_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

MEASURE = """
import json, resource, subprocess, sys
out = subprocess.run(sys.argv[1:], capture_output=True, text=True)
if out.returncode:
    sys.stderr.write(out.stderr)
    sys.exit(out.returncode)
doc = json.loads(out.stdout)
doc["children_rss_kb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps(doc))
"""


def child(code: str, *args) -> dict:
    """Run `code` in a grandchild under a fresh measuring child, so RUSAGE_CHILDREN's peak RSS
    belongs to that one job and not to earlier ones."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "SOURCE_DATE_EPOCH": "1700000000"}
    out = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-c", code, *map(str, args)],
                         capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode:
        sys.exit(f"benchmark child failed:\n{out.stderr}")
    return json.loads(out.stdout)


def floor_seconds(src: Path, work: Path) -> float:
    """cp + sha256sum of the same bytes: the least any byte-for-byte embed must do."""
    copy = work / "floor-copy.bin"
    t = time.perf_counter()
    subprocess.run(["cp", str(src), str(copy)], check=True)
    subprocess.run(["sha256sum", str(src)], check=True, stdout=subprocess.DEVNULL)
    spent = time.perf_counter() - t
    copy.unlink()
    return spent


def _best_wall(args: list[str], env: dict, runs: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)
        times.append(time.perf_counter() - t)
    return min(times), max(times)


def inspect_seconds(pkg: Path, work: Path) -> dict:
    """Wall time of `fleetpkg inspect --json` in a fresh interpreter, beside the interpreter's own
    start-up measured the same way (the part no code of ours can remove). Bytecode is cached in
    the scratch folder, as an installed package has it, even if PYTHONDONTWRITEBYTECODE is set."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONPATH=str(REPO), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    cmd = [sys.executable, "-m", "builder.cli", "inspect", "--json", str(pkg)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env, cwd=REPO)  # warm the cache
    code = ("import time, sys; t = time.perf_counter(); from builder.cli.describe import describe_file; "
            "describe_file(sys.argv[1]); print(time.perf_counter() - t)")
    in_process = float(subprocess.run([sys.executable, "-c", code, str(pkg)], check=True, capture_output=True,
                                      text=True, env=env, cwd=REPO).stdout)
    return {"inspect": _best_wall(cmd, env), "python": _best_wall([sys.executable, "-c", "pass"], env),
            "in_process": in_process}


def run_size(size_mb: int, work: Path) -> dict:
    root = work / f"tree{size_mb}"
    files = make_tree(root, size_mb)
    vendor = work / f"vendor{size_mb}.pkg"
    built = child(CHILD_BUILD, vendor, root)
    shutil.rmtree(root)
    floors = [floor_seconds(vendor, work)]
    wrap = child(CHILD_WRAP, vendor, work / f"ours{size_mb}.pkg", work / f"wrapped{size_mb}.pkg")
    floors.append(floor_seconds(vendor, work))
    return {"size_mb": size_mb, "files": files, "vendor_bytes": vendor.stat().st_size, "build": built,
            "wrap": wrap, "floor": min(floors), "floors": floors,
            "wrapped": work / f"wrapped{size_mb}.pkg"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=200, help="payload tree size (default 200)")
    ap.add_argument("--small-mb", type=int, default=50, help="second size for the RSS comparison (default 50)")
    ap.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pkg-", dir=args.workdir))
    try:
        results = [run_size(args.small_mb, work), run_size(args.size_mb, work)]
        big = results[-1]
        timing = inspect_seconds(big["wrapped"], work)
        print(f"fleetpkg pkg benchmark ({os.cpu_count()} CPUs, Python {sys.version.split()[0]})")
        for r in results:
            ratio = r["wrap"]["seconds"] / r["floor"]
            print(f"\n{r['size_mb']} MB tree, {r['files']} files -> vendor component {r['vendor_bytes'] / MB:.1f} MB")
            print(f"  build component        {r['build']['seconds']:7.2f} s   peak RSS "
                  f"{r['build']['children_rss_kb'] / 1024:6.1f} MB   (gzip-bound, informational)")
            print(f"  wrap (embed + product) {r['wrap']['seconds']:7.2f} s   peak RSS "
                  f"{r['wrap']['children_rss_kb'] / 1024:6.1f} MB   (target < 150 MB)")
            print(f"  cp + sha256sum floor   {r['floor']:7.2f} s   (runs: "
                  f"{', '.join(f'{f:.2f}' for f in r['floors'])})")
            print(f"  wrap / floor           {ratio:7.2f}     (target <= 1.5)")
        small, large = results[0]["wrap"]["children_rss_kb"], big["wrap"]["children_rss_kb"]
        print(f"\nwrap peak RSS {args.small_mb} MB -> {args.size_mb} MB: {small / 1024:.1f} -> {large / 1024:.1f} MB "
              f"({(large - small) / 1024:+.1f} MB)")
        (best, worst), (py_best, _) = timing["inspect"], timing["python"]
        print(f"fleetpkg inspect --json {big['wrapped'].name} ({big['wrapped'].stat().st_size / MB:.1f} MB): "
              f"best {best:.3f} s, worst {worst:.3f} s of 5   (target < 0.3 s)")
        print(f"  of which interpreter start-up (python -c pass, best of 5): {py_best:.3f} s; "
              f"fleetpkg's share {best - py_best:.3f} s; describe_file in-process {timing['in_process']:.3f} s")
        load = os.getloadavg()
        print(f"load average during the run: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
