"""Command-line entry point: parses arguments, runs a command, maps errors to exit codes.

Each command lives in its own module under builder/cli/commands/ and exposes a click command named
`command`; modules are imported only when their command runs, so `fleetpkg inspect` starts fast.
"""

from __future__ import annotations

import atexit
import importlib
import os
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



def run() -> None:
    """The `fleetpkg` program: main(), then the exit handlers, then the process ends without
    freeing its objects one by one: a large fleet's build holds millions of them (its previous
    build's manifest, 60,000 artifact records), and the interpreter's tear-down of them took a
    tenth of an unchanged rebuild. Callers that go on running (tests) call main() instead."""
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 1  # a closed pipe: what would have failed at interpreter exit
    atexit._run_exitfuncs()  # worker pools, temporary folders: what an ordinary exit runs
    os._exit(code or 0)
