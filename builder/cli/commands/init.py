"""`fleetpkg init [DIR]`: write a commented fleet.toml and devices.csv to start from.

Never overwrites: if either file exists, nothing is written (exit 2), so a half-edited fleet is
never clobbered.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from ...errors import EXIT_OK, ConfigError

FILES = {"fleet.toml": "fleet.toml.j2", "devices.csv": "devices.csv.j2"}


def fleet_name_for(folder: Path) -> str:
    """A valid [fleet] name from the folder's name (lowercase, [a-z0-9-]), else "my-fleet"."""
    slug = re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")[:64].strip("-")
    return slug or "my-fleet"


def render_scaffold(name: str) -> dict[str, str]:
    """File name -> text, from templates/ (pure; no I/O beyond reading the templates)."""
    import jinja2

    from ...artifacts.resources import templates_dir

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir())),
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False,
    )
    values = {"name": name, "organization": "Example Corp",
              "identifier": f"com.example.{name}"}
    return {out: env.get_template(tpl).render(**values) for out, tpl in FILES.items()}


@click.command("init")
@click.argument("directory", required=False, default=".",
                type=click.Path(file_okay=False, path_type=Path))
def command(directory: Path) -> int:
    """Write a commented fleet.toml and devices.csv into DIRECTORY (default: here)."""
    for out in FILES:
        target = directory / out
        if target.exists() or target.is_symlink():
            raise ConfigError("already exists; not overwriting it", where=str(target),
                              hint="edit it, or run init in an empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    texts = render_scaffold(fleet_name_for(directory))
    for out, text in texts.items():
        target = directory / out
        try:
            with target.open("x", encoding="utf-8", newline="\n") as fh:
                fh.write(text)
        except FileExistsError:
            raise ConfigError("already exists; not overwriting it", where=str(target)) from None
        click.echo(f"wrote {target}", err=True)
    click.echo(
        f"next: put the vendor package, CA files and .pfx files where {directory / 'fleet.toml'} "
        "says, then run `fleetpkg check` on it", err=True)
    return EXIT_OK
