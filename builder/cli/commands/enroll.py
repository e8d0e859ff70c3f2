"""`fleetpkg enroll CONFIG`: request, renew or keep every device's certificate over SCEP and
write the .pfx files `check` and `build` use. Exit 0 every device kept or enrolled and no
certificate fails a rule, 1 a device failed or a certificate fails a rule (e.g. the CA
template's), 2 the run could not start (config, CA unreachable, fingerprint mismatch)."""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import EXIT_FINDINGS, EXIT_OK, ConfigError


@click.command("enroll")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--jobs", type=click.IntRange(min=1, max=64), metavar="N", default=None,
              help="Devices enrolled at the same time (default 4: gentle on the CA).")
@click.option("--renew-within", "renew_within", type=click.IntRange(min=0, max=3650), metavar="DAYS",
              help="Renew certificates expiring within DAYS (default: [enroll] renew_within_days).")
@click.option("--dry-run", is_flag=True,
              help="Say what would be enrolled or renewed; checks the CA, sends no request, "
                   "writes nothing.")
@click.option("--only", "only", multiple=True, metavar="HOST",
              help="Only this device (repeat, or separate with commas).")
def command(config: Path, as_json: bool, jobs: int | None, renew_within: int | None,
            dry_run: bool, only: tuple[str, ...]) -> int:
    """Enrol CONFIG's devices' certificates over SCEP (RFC 8894), as [enroll] says."""
    from ...enroll.fleet import DEFAULT_JOBS, enroll_fleet
    from ...fleet.config import load_config
    from ..progress import ProgressBar, wanted

    fleet = load_config(config)
    for device in fleet.devices:  # enroll writes each .pfx, but creates no folder an inventory names
        if not device.pfx.parent.is_dir():
            raise ConfigError(f"{device.pfx.parent}: no such folder for {device.pfx.name}", where=device.where,
                              hint="create the folder; paths are relative to the file that names them")
    hosts = tuple(h.strip() for item in only for h in item.split(",") if h.strip())
    count = len(hosts) or len(fleet.devices)
    bar = ProgressBar("devices") if wanted(as_json=as_json) and count > 1 else None
    try:
        run = enroll_fleet(fleet, only=hosts, renew_within_days=renew_within,
                           jobs=jobs or DEFAULT_JOBS, dry_run=dry_run,
                           progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()
    if as_json:
        from ..output import emit_json

        emit_json(run.to_json())
    else:
        click.echo(render(run))
    return EXIT_OK if run.ok else EXIT_FINDINGS


def render(run) -> str:
    from ..output import table

    rows = []
    for o in run.outcomes:
        rules = ", ".join(dict.fromkeys(f.rule for f in o.findings if f.severity == "error"))
        expiry = o.not_after.date().isoformat() if o.not_after else "-"
        rows.append([o.hostname, o.action, expiry, rules or "-", o.reason])
    out = [table(rows, ["device", "action", "expiry", "failed rules", "reason"])]
    template = run.template
    if template:
        out += ["", "The CA's certificate template causes these findings (a new request would "
                    "get the same; fix the template, then renew with --renew-within):"]
        for t in template:
            n = len(t.hostnames)
            out.append(f"  {t.rule} ({n} device{'s' if n != 1 else ''}): {t.fix}")
    s = run.summary
    head = f"{run.fleet}: " + ("dry run: " if run.dry_run else "")
    out += ["", head + ", ".join(f"{s[a]} {a}" for a in ("enrolled", "renewed", "kept", "failed"))
            + f" (renewal window {run.renew_within_days} days)"]
    return "\n".join(out)
