"""Re-signing cost against a plain `cp` of the same package, measured in the same run.

Builds a package holding --size-mb of stored random data (XarWriter), then alternates `cp` and
fleetpkg's sign_package (in a fresh process, timed inside it after start-up) and prints the
median of each and their ratio (target <= 1.3: signing rewrites only the TOC and copies the heap,
after xar.resign has checked every member's checksum), twice: with the output left in the page
cache, and written to disk (cp + sync vs sign + fsync). Then the signer's peak RSS, which must
not grow with the package size.

    python3 benchmarks/bench_sign.py [--size-mb 500] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_identity():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    from builder.certs.signing_identity import EKU_DEVELOPER_ID_INSTALLER, SigningIdentity

    now = datetime.now(timezone.utc)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Developer ID Installer: Bench (BENCH12345)")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.ExtendedKeyUsage([EKU_DEVELOPER_ID_INSTALLER]), critical=True)
            .sign(key, hashes.SHA256()))
    return SigningIdentity(key, cert, (), ())


def build_package(path: Path, size_mb: int) -> None:
    from builder.formats.pkg import xar

    chunk = 4 << 20
    left = size_mb << 20

    def chunks():
        nonlocal left
        while left > 0:
            n = min(chunk, left)
            left -= n
            yield os.urandom(n)

    with xar.XarWriter(path) as w:
        w.add_bytes("Distribution", b"<?xml version=\"1.0\"?><installer-gui-script/>", compress=True)
        w.add_chunks("bench.pkg/Payload", chunks(), compress=False)
        w.add_bytes("bench.pkg/PackageInfo", b"<pkg-info/>", compress=True)


def child_sign(src: str, dest: str, durable: bool) -> None:
    """Runs in a fresh process so its peak RSS is the signer's alone."""
    from builder.formats.pkg.signing import sign_package

    ident = make_identity()
    start = time.perf_counter()
    sign_package(Path(src), Path(dest), ident)
    if durable:
        fd = os.open(dest, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    print(json.dumps({"seconds": time.perf_counter() - start}))


def run_child(args: list[str]) -> tuple[str, float, int]:
    """(stdout, wall seconds, peak RSS KiB) of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE)
    out = proc.stdout.read().decode()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{args[0]} failed with {proc.returncode}")
    return out, wall, usage.ru_maxrss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="work directory (default: a temp dir)")
    ap.add_argument("--child-sign", nargs=3, metavar=("SRC", "DEST", "DURABLE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_sign:
        child_sign(args.child_sign[0], args.child_sign[1], args.child_sign[2] == "1")
        return
    cp = shutil.which("cp")
    work = Path(tempfile.mkdtemp(prefix="bench_sign.", dir=args.dir))
    try:
        src = work / "unsigned.pkg"
        t0 = time.perf_counter()
        build_package(src, args.size_mb)
        print(f"built {src.stat().st_size / 1e6:.0f} MB package in {time.perf_counter() - t0:.1f}s")
        # warm the page cache the same way for both contenders
        run_child([cp, str(src), str(work / "warm.pkg")])
        os.unlink(work / "warm.pkg")
        peak_rss = 0
        for durable in (False, True):
            cp_times, sign_times = [], []
            for _ in range(args.rounds):
                os.sync()  # start every run with no dirty pages left by the previous one
                cmd = ["sh", "-c", 'cp "$1" "$2" && sync "$2"', "sh"] if durable else [cp]
                _, wall, _ = run_child([*cmd, str(src), str(work / "copy.pkg")])
                cp_times.append(wall)
                os.unlink(work / "copy.pkg")
                os.sync()
                out, _, peak = run_child([sys.executable, __file__, "--child-sign", str(src),
                                          str(work / "signed.pkg"), "1" if durable else "0"])
                sign_times.append(json.loads(out)["seconds"])
                peak_rss = max(peak_rss, peak)
                os.unlink(work / "signed.pkg")
            cp_med, sign_med = statistics.median(cp_times), statistics.median(sign_times)
            label = "written to disk (cp + sync vs sign + fsync)" if durable else "page cache only (no sync)"
            print(f"{label}:")
            print(f"  cp:   median {cp_med:.3f}s  {[round(t, 3) for t in cp_times]}")
            print(f"  sign: median {sign_med:.3f}s  {[round(t, 3) for t in sign_times]}")
            print(f"  ratio sign/cp: {sign_med / cp_med:.2f} (target <= 1.3)")
        print(f"peak RSS of the signing process: {peak_rss / 1024:.1f} MiB for a {args.size_mb} MB package")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
