"""`fleetpkg check CONFIG`: every device certificate against the client-certificate rules,
before anything is built. Exit 0 all pass (warnings allowed), 1 any fails, 2 bad input."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path

import click

from ..errors import EXIT_FINDINGS, EXIT_OK, ConfigError


def parse_at(value: str | None) -> datetime:
    """--at: ISO date (midnight UTC) or datetime (naive = UTC); default now."""
    if value is None:
        return datetime.now(timezone.utc)
    text = value.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is None and not re.match(r"\d{4}-\d{2}-\d{2}[T ]", text):
        raise ConfigError(f"{value!r} is not an ISO date or date-time", where="--at",
                          hint="e.g. --at 2026-06-30 or --at 2026-06-30T12:00:00Z")
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise ConfigError(f"{value!r} is not an ISO date or date-time", where="--at",
                          hint="e.g. --at 2026-06-30 or --at 2026-06-30T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


@click.command("check")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--at", "at_text", metavar="DATE",
              help="Check validity at this ISO date/date-time (UTC) instead of now.")
@click.option("--jobs", type=click.IntRange(min=1), metavar="N",
              help="Worker processes for opening .pfx files (default: CPU count).")
@click.option("--ask-password", is_flag=True,
              help="Prompt (hidden) for .pfx passwords with no usable env/file source.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Also write a self-contained HTML readiness report (table, expiry chart, fixes).")
def command(config: Path, as_json: bool, at_text: str | None, jobs: int | None,
            ask_password: bool, report_path: Path | None) -> int:
    """Check CONFIG's devices' client certificates against the 1E Client rules."""
    from ..certs import RULES, load_ca_files
    from ..config import load_config
    from ..passwords import PasswordResolver

    at = parse_at(at_text)
    fleet = load_config(config)
    resolver = PasswordResolver(ask=ask_password)
    passwords = [resolver.resolve(d.password, d.where) for d in fleet.devices]
    cas = load_ca_files(list(fleet.trust.certificates))
    from ..progress import ProgressBar, wanted

    bar = ProgressBar("devices") if wanted(as_json=as_json) and len(fleet.devices) > 1 else None
    try:
        results = _check(fleet.devices, passwords, cas, at, jobs, bar)
    finally:
        if bar:
            bar.close()
    if report_path is not None:
        from ..report import write_report

        write_report(report_path, fleet.fleet.name, results, at, RULES)

    failed = sum(1 for r in results if not r.ok)
    warnings = sum(len(r.warnings) for r in results)
    summary = {"devices": len(results), "ok": len(results) - failed, "failed": failed,
               "warnings": warnings}
    if as_json:
        from ..output import emit_json

        emit_json({"fleet": fleet.fleet.name, "devices": [r.to_json() for r in results],
                   "summary": summary})
    else:
        click.echo(_render(fleet.fleet.name, results, summary, at, RULES))
        if report_path is not None:
            click.echo(f"report: {report_path}", err=True)
    return EXIT_FINDINGS if failed else EXIT_OK


def _check(devices, passwords, cas, at, jobs, bar) -> list:
    """check_devices, reporting each result to `bar` as it arrives (same order, same errors).

    check_devices has no progress hook, so with a bar this drives builder.checking's own worker
    functions through the same kind of pool."""
    from .. import checking
    from ..errors import CertificateError

    jobs = jobs or os.cpu_count() or 1
    workers = min(jobs, len(devices))
    if bar is None:
        return checking.check_devices(devices, passwords, cas, at, jobs)
    total = len(devices)
    results = []
    if workers <= 1:
        for device, password in zip(devices, passwords):
            results.append(checking.check_device(device, password, cas, at))
            bar.update(len(results), total)
        return results

    from concurrent.futures import ProcessPoolExecutor

    from cryptography.hazmat.primitives.serialization import Encoding

    ders = [c.public_bytes(Encoding.DER) for c in cas]
    chunk = max(1, min(64, total // (workers * 8)))  # small enough chunks for a live bar
    with ProcessPoolExecutor(max_workers=workers, initializer=checking._init_worker,
                             initargs=(ders,)) as pool:
        for kind, value in pool.map(checking._work, [(d, p, at) for d, p in zip(devices, passwords)],
                                    chunksize=chunk):
            if kind == "error":
                pool.shutdown(wait=True, cancel_futures=True)
                raise CertificateError(value)
            results.append(value)
            bar.update(len(results), total)
    return results


def _render(name: str, results: list, summary: dict, at: datetime, rules: dict) -> str:
    from ..output import table

    rows = []
    for r in results:
        rules_text = ", ".join(f.rule for f in r.errors)
        warned = ", ".join(f.rule for f in r.warnings)
        if warned:
            rules_text = f"{rules_text}; warn: {warned}" if rules_text else f"warn: {warned}"
        expiry = r.not_after.astimezone(timezone.utc).date().isoformat() if r.not_after else "-"
        rows.append([r.hostname, r.status, rules_text or "-", expiry])
    out = [table(rows, ["device", "status", "failed rules", "expiry"])]

    details = [[r.hostname, f.rule, f.severity, f.message] for r in results for f in r.findings]
    if details:
        out += ["", table(details, ["device", "rule", "severity", "finding"])]
        fixes = []
        for rule_id in dict.fromkeys(d[1] for d in details):
            rule = rules.get(rule_id)
            fix = getattr(rule, "fix", None)
            if fix:
                fixes.append(f"  {rule_id}: {fix}")
        if fixes:
            out += ["", "how to fix:"] + fixes
    when = at.strftime("%Y-%m-%d %H:%M:%SZ")
    out += ["", f"{name}: {summary['devices']} devices checked at {when}: {summary['ok']} ok, "
                f"{summary['failed']} failed, {summary['warnings']} warnings"]
    return "\n".join(out)
