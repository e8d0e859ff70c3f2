"""Where a fleet build's per-device time goes, step by step, in one process on one core.

Runs the steps of builder.artifacts.pipeline.build_device one device after the other, with the
inputs a build gives them (the CAs loaded once, as a worker does; the demo's profile signer), and
prints the milliseconds per device of each step, split into the work no build can skip and the
rest (fleetpkg's own overhead, what issue 12's 1.3 x target is about):

  judge     checking.judge_device: open the .pfx (its KDFs: the floor) and lint it (all rules,
            cryptography's path validator)
  chain     certs.build_chain + the validity record of the device's manifest entry
  reencode  certs.reencode_for_macos (OpenSSL's serialize_key_and_certificates: the floor)
  profile   profiles.device_profile (its PayloadUUIDs included)
  render    profiles.render_xml
  sign      profiles.sign_profile at a fixed signing time (the signature itself, timed alone
            with the same key over data of the same size, listed apart)

Each round takes its own devices, so no per-certificate memo carries a device from one round to
the next; the best of --rounds is shown. The identity package (builder/formats/pkg) and file
writing are not timed here: bench_fleet.py times the whole build.

    python3 benchmarks/bench_device.py                       # makes a 900-device fleet first
    python3 benchmarks/bench_device.py --fleet DIR           # a fleet bench_fleet.py made (--keep)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

AT = datetime(2025, 6, 1, tzinfo=timezone.utc)  # inside the validity of bench_fleet's certificates
SIGNING_TIME = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class Clock:
    """Seconds spent in named functions, by wrapping them where their callers look them up."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()

    def wrap(self, owner, name: str, label: str) -> None:
        inner = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.spent[label] += time.perf_counter() - start
        setattr(owner, name, timed)


def load_inputs(fleet: Path):
    """The fleet's CAs (as a worker has them: loaded once, from DER), .pfx password and profile
    signer, from the layout of `fleetpkg demo` / bench_fleet.py."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, pkcs12

    from builder.profiles import ProfileSigner

    cas = [x509.load_der_x509_certificate(x509.load_pem_x509_certificate(
        (fleet / "pki" / name).read_bytes()).public_bytes(Encoding.DER))
        for name in ("demo-root.cer", "demo-issuing.cer")]
    password = (fleet / "secrets" / "pfx-password.txt").read_bytes().strip()
    signing_password = (fleet / "secrets" / "signing-password.txt").read_bytes().strip()
    key, cert, extra = pkcs12.load_key_and_certificates((fleet / "signing" / "profiles.p12").read_bytes(),
                                                        signing_password)
    return cas, password, ProfileSigner(cert, key, tuple(extra or ()))


def run_round(hosts: list[str], fleet: Path, cas, password: bytes, signer, clock: Clock) -> Counter:
    from builder.artifacts.checking import judge_device
    from builder.artifacts.pipeline import _validity_record
    from builder.certs import build_chain, is_self_signed, reencode_for_macos
    from builder.profiles import device_profile, render_xml, sign_profile

    clock.spent.clear()
    steps: Counter[str] = Counter()
    for host in hosts:
        t0 = time.perf_counter()
        identity, result = judge_device(host, fleet / "devices" / f"{host}.pfx", password, cas, AT)
        t1 = time.perf_counter()
        if not result.ok:
            raise SystemExit(f"{host}: {result.findings}")
        chain = build_chain(identity.certificate, cas, identity.extra_certificates, AT)
        roots = [c for c in chain if is_self_signed(c)]
        intermediates = [c for c in chain if not is_self_signed(c)]
        _validity_record(identity.certificate, chain, result.findings)
        t2 = time.perf_counter()
        sealed = reencode_for_macos(identity, chain=chain, friendly_name=host.encode())
        t3 = time.perf_counter()
        profile = device_profile(fleet="demo", organization="fleetpkg demo",
                                 identifier_prefix="com.example.fleetpkg-demo", hostname=host,
                                 p12=sealed.p12, p12_password=sealed.password, roots=roots,
                                 intermediates=intermediates, certificate=identity.certificate)
        t4 = time.perf_counter()
        xml = render_xml(profile)
        t5 = time.perf_counter()
        sign_profile(xml, signer, signing_time=SIGNING_TIME)
        t6 = time.perf_counter()
        steps.update({"judge": t1 - t0, "chain": t2 - t1, "reencode": t3 - t2, "profile": t4 - t3,
                      "render": t5 - t4, "sign": t6 - t5})
    steps.update(clock.spent)
    return steps


def rsa_alone(signer, count: int) -> float:
    """Seconds for `count` bare signatures by the profile signer's key over signed attributes of
    the size sign_profile signs (timed apart: the key object cannot be wrapped)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

    data = bytes(109)
    if isinstance(signer.key, rsa.RSAPrivateKey):
        def sign() -> None:
            signer.key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    else:
        def sign() -> None:
            signer.key.sign(data, ec.ECDSA(hashes.SHA256()))
    start = time.perf_counter()
    for _ in range(count):
        sign()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fleet", type=Path, help="a bench_fleet.py fleet folder (default: make one)")
    ap.add_argument("--devices", type=int, default=300, help="devices per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--keys", type=int, default=8, help="distinct RSA keys when making the fleet")
    args = ap.parse_args()

    tmp = None
    fleet = args.fleet
    if fleet is None:
        import bench_fleet

        fleet, tmp = bench_fleet.work_folder(None, "fleetpkg-bench-device-")
        print(f"making {args.devices * args.rounds} devices ...", flush=True)
        bench_fleet.make_fleet(fleet, args.devices * args.rounds, args.keys, jobs=1, signed=True)
    hosts = sorted(p.stem for p in (fleet / "devices").glob("*.pfx"))
    if len(hosts) < args.devices * args.rounds:
        raise SystemExit(f"{fleet} has {len(hosts)} devices, {args.devices * args.rounds} needed")

    from cryptography.hazmat.primitives.serialization import pkcs12

    from builder.certs import kdf

    clock = Clock()
    clock.wrap(kdf, "pbkdf2", "judge: KDFs")
    clock.wrap(kdf, "pkcs12_kdf", "judge: KDFs")
    clock.wrap(pkcs12, "serialize_key_and_certificates", "reencode: OpenSSL")
    cas, password, signer = load_inputs(fleet)

    best: dict[str, float] = {}
    for r in range(args.rounds):
        steps = run_round(hosts[r * args.devices:(r + 1) * args.devices], fleet, cas, password, signer, clock)
        total = sum(v for k, v in steps.items() if ":" not in k)
        if not best or total < best["total"]:
            best = dict(steps, total=total)
    n = args.devices
    best["sign: RSA"] = rsa_alone(signer, n)
    print(f"ms per device, best of {args.rounds} rounds of {n} devices:")
    for step in ("judge", "chain", "reencode", "profile", "render", "sign"):
        floor_label = {"judge": "judge: KDFs", "reencode": "reencode: OpenSSL", "sign": "sign: RSA"}.get(step)
        line = f"  {step:9s} {best[step] / n * 1e3:7.3f}"
        if floor_label:
            floor = best.get(floor_label, 0.0)
            line += f"   ({floor_label.split(': ')[1]} {floor / n * 1e3:.3f}, rest {(best[step] - floor) / n * 1e3:.3f})"
        print(line)
    floors = sum(best.get(k, 0.0) for k in ("judge: KDFs", "reencode: OpenSSL", "sign: RSA"))
    print(f"  total     {best['total'] / n * 1e3:7.3f}   (KDFs + OpenSSL + RSA {floors / n * 1e3:.3f}, "
          f"rest {(best['total'] - floors) / n * 1e3:.3f})")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
