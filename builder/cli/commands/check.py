"""`fleetpkg check CONFIG`: every device certificate against the client-certificate rules,
before anything is built. Exit 0 all pass (warnings allowed), 1 any fails, 2 bad input."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path

import click

from ...errors import EXIT_FINDINGS, EXIT_OK, ConfigError


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
    from ...certs import RULES, load_ca_files
    from ...fleet.config import load_config
    from ...fleet.passwords import PasswordResolver

    at = parse_at(at_text)
    fleet = load_config(config)
    resolver = PasswordResolver(ask=ask_password)
    passwords = [resolver.resolve(d.password, d.where) for d in fleet.devices]
    cas = load_ca_files(list(fleet.trust.certificates))
    vendor_line = _check_vendor(fleet)
    from ...artifacts.checking import check_devices
    from ..progress import ProgressBar, wanted

    bar = ProgressBar("devices") if wanted(as_json=as_json) and len(fleet.devices) > 1 else None
    try:
        results = check_devices(fleet.devices, passwords, cas, at, jobs, bar.update if bar else None)
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
        click.echo(_render(fleet.fleet.name, results, summary, at, RULES, vendor_line))
        if report_path is not None:
            click.echo(f"report: {report_path}", err=True)
    return EXIT_FINDINGS if failed else EXIT_OK


def _check_vendor(fleet) -> str:
    """The vendor package must be usable before any device matters: read it as the build will."""
    from ...fleet.intake import resolve_vendor_package
    from ...fleet.vendor import inspect_vendor
    from ...scratch import scratch

    with scratch("check") as tmp:
        source = resolve_vendor_package(fleet.vendor.package, tmp)
        vendor = inspect_vendor(source, allow_foreign=fleet.vendor.allow_foreign_vendor)
    line = f"vendor: {source.origin}: {vendor.summary()}"
    return "\n".join([line] + [f"note: {n}" for n in vendor.notes])


def _render(name: str, results: list, summary: dict, at: datetime, rules: dict,
            vendor_line: str | None = None) -> str:
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
    if vendor_line:
        out += ["", vendor_line]
    when = at.strftime("%Y-%m-%d %H:%M:%SZ")
    out += ["", f"{name}: {summary['devices']} devices checked at {when}: {summary['ok']} ok, "
                f"{summary['failed']} failed, {summary['warnings']} warnings"]
    return "\n".join(out)
