"""How much a rebuild costs next to a full build, when little or nothing changed.

Makes the fleet of bench_fleet.py (N devices, AES .pfx files, the demo's vendor stand-in and
signing identities), then, in the same run, each with `fleetpkg build --json` in a child process:

  full       the first build into an empty output folder (every Mac minted);
  unchanged  a rebuild with nothing changed, into the same folder (same build number): every
             Mac carried forward (hard links of the previous build's files, checked against its
             manifest: hashed where the previous build's record of its files does not vouch for
             them), the wrapper too (target <= 3 % of the full build);
  changed    --renew % of the Macs get a new certificate (.pfx re-issued), --add Macs join and
             --remove leave, then a rebuild (target <= 5 % of the full build).

  floor      beside the unchanged rebuild, the work it cannot avoid, each part timed alone
             (start-up, reading the previous manifest, the trust check's stats, hashing the .pfx
             inputs, hard-linking each Mac's files, writing the new manifest, sums, change set and
             --json text): how much of the 3 % target that leaves for fleetpkg's own work.

Each rebuild's changes.json is checked against what was done (the renewed, added and removed
Macs exactly), so a fast but wrong rebuild fails the benchmark instead of passing it.

    python3 benchmarks/bench_rebuild.py                   # 1,000 devices
    python3 benchmarks/bench_rebuild.py --devices 10000
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fleet  # noqa: E402  (sibling benchmark: fleet making and the timed build)


def settle(dist: Path, run: dict, limit: float = 300) -> float:
    """Wait until a large build's detached tidy-up is done (builder/artifacts/dist.py,
    _after_publish): the superseded build a same-folder rebuild moved aside is gone and the new
    build's record of its files (builder/artifacts/verified.py) is written, so the next timed build
    neither shares the machine with it nor misses the record; returns the seconds waited. A build
    of fewer files than BACKGROUND_REMOVAL has neither."""
    from builder.artifacts.dist import BACKGROUND_REMOVAL

    recorded = run["artifacts"] >= BACKGROUND_REMOVAL
    start = time.perf_counter()
    while True:
        names = [p.name for p in dist.iterdir()]
        builds = [n for n in names if not n.startswith(".")]
        if (not any(n.startswith(".fleetpkg-replaced-") for n in names)
                and (not recorded or all(f".fleetpkg-verified-{b}" in names for b in builds))):
            break
        if time.perf_counter() - start > limit:
            break
        time.sleep(0.05)
    return time.perf_counter() - start


def changes_of(dist: Path) -> dict:
    (out,) = [d for d in dist.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return json.loads((out / "changes.json").read_text())


def rebuild_floor(dist: Path, fleet: Path, json_out: str, jobs: int) -> tuple[float, dict[str, float]]:
    """Seconds of the work an unchanged rebuild cannot avoid, each part timed alone on one core
    (best of 3), over the build in `dist` and the fleet's inputs: start the interpreter and import
    what reads and writes the certificates; read the previous manifest.json; stat every file it
    lists (the trust check, by the record of its files); read and hash every .pfx (an unchanged
    input is the same bytes); hard-link every file a Mac gets into a new folder (each one's
    files are the previous build's); produce and write the new manifest.json, SHA256SUMS and
    changes.json (json's C encoder, no layout) and `build --json`'s text. Returns (the sum with the
    per-file parts on `jobs` cores, the parts)."""
    import hashlib
    import shutil
    import subprocess

    (out,) = [d for d in dist.iterdir() if d.is_dir() and not d.name.startswith(".")]
    listed = [line.split("  ", 1)[1] for line in (out / "SHA256SUMS").read_text().splitlines()]
    per_mac = [rel for rel in listed if "/" in rel and any(part in rel for part in ("/devices/", "identity/"))]
    pfx = sorted((fleet / "devices").glob("*.pfx"))
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(dist.parent / "pycache"))
    scratch = dist.parent / "rebuild-floor"

    def start() -> None:
        subprocess.run([sys.executable, "-c", "import json, hashlib, cryptography.x509, "
                        "cryptography.hazmat.primitives.serialization.pkcs12"], check=True, env=env)

    def read_manifest() -> None:
        json.loads((out / "manifest.json").read_bytes())

    def stat_listed() -> None:
        for rel in listed:
            os.stat(out / rel)

    def hash_pfx() -> None:
        for path in pfx:
            hashlib.sha256(path.read_bytes()).hexdigest()

    def link() -> None:
        shutil.rmtree(scratch, ignore_errors=True)
        for folder in sorted({rel.rpartition("/")[0] for rel in per_mac}):
            (scratch / folder).mkdir(parents=True, exist_ok=True)
        begin = time.perf_counter()
        for rel in per_mac:
            os.link(out / rel, scratch / rel)
        return time.perf_counter() - begin

    manifest = json.loads((out / "manifest.json").read_bytes())
    changes = json.loads((out / "changes.json").read_bytes())
    sums = (out / "SHA256SUMS").read_bytes()

    def write_outputs() -> None:
        scratch.mkdir(exist_ok=True)
        (scratch / "manifest.json").write_text(json.dumps(manifest, sort_keys=True))
        (scratch / "SHA256SUMS").write_bytes(sums)
        (scratch / "changes.json").write_text(json.dumps(changes, sort_keys=True))
        with open(os.devnull, "w") as sink:
            sink.write(json.dumps(json.loads(json_out), sort_keys=True))

    def best(fn) -> float:
        times = []
        for _ in range(3):
            begin = time.perf_counter()
            inner = fn()
            times.append(inner if inner is not None else time.perf_counter() - begin)
        return min(times)

    parts = {"start-up and imports": best(start), "read manifest.json": best(read_manifest),
             "stat its files": best(stat_listed), "hash the .pfx files": best(hash_pfx),
             "hard-link each Mac's files": best(link), "write manifest, sums, changes, --json": best(write_outputs)}
    shutil.rmtree(scratch, ignore_errors=True)
    spread = ("stat its files", "hash the .pfx files", "hard-link each Mac's files")
    total = sum(v / (jobs if k in spread else 1) for k, v in parts.items())
    return total, parts


def main() -> int:
    ap = bench_fleet.fleet_arguments(__doc__)
    ap.add_argument("--renew", type=float, default=1.0, help="percent of the Macs whose certificate is renewed")
    ap.add_argument("--add", type=int, default=5, help="Macs that join before the second rebuild")
    ap.add_argument("--remove", type=int, default=5, help="Macs that leave before the second rebuild")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    root, tmp = bench_fleet.work_folder(args.keep, "fleetpkg-bench-rebuild-")
    try:
        n = args.devices
        print(f"machine: {bench_fleet.machine()}; {bench_fleet.BYTECODE_NOTE}")
        t0 = time.perf_counter()
        fleet = root / "fleet"
        config = bench_fleet.make_fleet(fleet, n, args.keys, os.cpu_count() or 1, True)
        print(f"made {n} devices in {time.perf_counter() - t0:.1f} s")
        dist = root / "dist"

        full = bench_fleet.run_build(config, dist, args.jobs)
        print(f"full build --jobs {args.jobs}: {full['wall']:.2f} s ({full['devices']} devices, "
              f"{full['artifacts']} artifacts); load average {os.getloadavg()[0]:.2f}")
        print(f"  (its record of its files was written in the background within {settle(dist, full):.1f} s)")

        same = bench_fleet.run_build(config, dist, args.jobs)
        doc = changes_of(dist)
        assert doc["wrapper"] == "unchanged" and len(doc["devices"]["unchanged"]) == n, doc["devices"].keys()
        assert not (doc["devices"]["added"] or doc["devices"]["changed"] or doc["devices"]["removed"])
        print(f"rebuild, nothing changed: {same['wall']:.2f} s = {same['wall'] / full['wall'] * 100:.1f} % of the "
              f"full build (target <= 3 %); load average {os.getloadavg()[0]:.2f}")
        print(f"  (the superseded build it replaced was removed, and its record written, in the background "
              f"within {settle(dist, same):.1f} s)")

        bound, parts = rebuild_floor(dist, fleet, same["stdout"], args.jobs)
        print("  beside it, the work such a rebuild cannot avoid, timed alone: "
              + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items())
              + f"; with the per-file parts on {args.jobs} cores: {bound:.2f} s = {bound / full['wall'] * 100:.1f} % "
              f"of the full build, so the 3 % target leaves {0.03 * full['wall'] - bound:.2f} s for fleetpkg's own "
              f"work, which takes {same['wall'] - bound:.2f} s")

        hosts = [f"mac{i:05d}.fleet.example" for i in range(n)]
        step = max(1, round(100 / args.renew))
        renewed = hosts[args.remove::step][:max(1, round(n * args.renew / 100))]
        kept = list(enumerate(hosts))[args.remove:]
        added = [(n + i, f"mac{n + i:05d}.fleet.example") for i in range(args.add)]
        bench_fleet.issue(fleet, [(i, h) for i, h in kept if h in set(renewed)] + added, args.keys,
                          os.cpu_count() or 1)
        bench_fleet.write_inventory(fleet, kept + added)
        changed = bench_fleet.run_build(config, dist, args.jobs)
        doc = changes_of(dist)
        assert doc["devices"]["changed"] == sorted(renewed), doc["devices"]["changed"][:5]
        assert doc["devices"]["added"] == sorted(h for _, h in added)
        assert doc["devices"]["removed"] == sorted(hosts[:args.remove])
        assert len(doc["devices"]["unchanged"]) == n - args.remove - len(renewed)
        print(f"rebuild, {len(renewed)} renewed + {args.add} added + {args.remove} removed: {changed['wall']:.2f} s = "
              f"{changed['wall'] / full['wall'] * 100:.1f} % of the full build (target <= 5 %); "
              f"load average {os.getloadavg()[0]:.2f}")
        settle(dist, changed)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
