"""`fleetpkg inspect FILE [--json] [--password-env VAR]`: what a .pkg, Mach-O, profile or .pfx holds.

The .pfx password comes only from the environment variable named by --password-env, never from
argv, where any user on the machine could read it in the process list.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ...errors import EXIT_OK, ConfigError


@click.command("inspect")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding a .pfx password.")
def command(file: Path, as_json: bool, password_env: str | None) -> int:
    """Read FILE (.pkg, Mach-O, .mobileconfig, .pfx/.p12) and print what it holds."""
    from ..describe import describe_file, summary_lines

    password = None
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise ConfigError("environment variable is not set", where=password_env,
                              hint="export it with the .pfx password, or omit --password-env")
        password = value.encode("utf-8")
    doc = describe_file(file, password=password)
    if as_json:
        from ..output import emit_json
        emit_json(doc)
    else:
        click.echo(f"{file}:")
        for line in summary_lines(doc):
            click.echo(f"  {line}")
    return EXIT_OK
