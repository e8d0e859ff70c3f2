"""`fleetpkg demo [DIR]`: write the built-in demo fleet and build it, offline, in seconds."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("demo")
@click.argument("folder", required=False, default="fleetpkg-demo",
                type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--jobs", type=click.IntRange(min=1), metavar="N", help="Worker processes (default: CPU count).")
def command(folder: Path, as_json: bool, jobs: int | None) -> int:
    """Write a complete example fleet into FOLDER (default ./fleetpkg-demo) and build it."""
    from ..buildreport import report_build
    from ...fleet.demo import write_demo

    if not as_json:
        click.echo(f"Writing the demo fleet (test CA, 3 Macs, stand-in 1E Client package) into {folder}/ ...",
                   err=True)
    config = write_demo(folder)
    status = report_build(config, out_dir=None, as_json=as_json, jobs=jobs, at_text=None,
                          skip_failed_devices=False, allow_foreign_vendor=False, ask_password=False,
                          quiet=False)
    if not as_json and status == 0:
        click.echo(f"""
Next steps:
  - read {folder}/dist/*/DEPLOY.md: what each artifact is and how to deploy it with Jamf, Intune or Munki
  - fleetpkg verify {folder}/dist/*/            re-check checksums, signatures and profiles
  - fleetpkg inspect {folder}/dist/*/*.pkg      what the wrapper installs
  - fleetpkg init my-fleet && edit my-fleet/fleet.toml for your real fleet""")
    return status
