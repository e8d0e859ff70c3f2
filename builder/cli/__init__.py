"""Command-line entry point: parses arguments, runs a command, maps errors to exit codes.

Each command lives in its own module under builder/cli/commands/ and exposes a click command named
`command`; modules are imported only when their command runs, so `fleetpkg inspect` starts fast.
"""

from __future__ import annotations

import importlib
import sys
import traceback

import click

from .. import __version__
from ..errors import EXIT_USAGE, FleetpkgError

# command name -> module under builder.cli.commands (kept in the order `--help` shows them)
COMMANDS = {
    "demo": "demo",
    "init": "init",
    "check": "check",
    "enroll": "enroll",
    "build": "build",
    "inspect": "inspect",
    "verify": "verify",
    "unseal": "unseal",
    "clean": "clean",
    "diff": "diff",
    "sign": "sign",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        mod = COMMANDS.get(name)
        if mod is None:
            return None
        return importlib.import_module(f"builder.cli.commands.{mod}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fleetpkg")
@click.option("--debug", is_flag=True, help="Show a traceback on errors.")
def cli(debug: bool) -> None:
    """Build 1E Client deployment artifacts for macOS fleets."""


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        rv = cli.main(args=args, prog_name="fleetpkg", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("fleetpkg: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except FleetpkgError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"fleetpkg: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:
        if debug:
            traceback.print_exc()
        name = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        click.echo(f"fleetpkg: error: {name}{exc.strerror or exc}", err=True)
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("fleetpkg: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)

