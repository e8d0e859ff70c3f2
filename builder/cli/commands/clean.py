"""`fleetpkg clean OUTPUT_DIR`: remove what interrupted builds left in an output folder.

A build killed with SIGKILL cannot clean up after itself: its private staging folder (mode 0700,
holding the secret files written so far) stays until the next build into the same folder removes
it. This command does the same for people who will not build again, and removes the work folders
such builds (and checks) left in the system's temporary folder. Folders of builds or unseals
still running are left alone.
"""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import EXIT_OK


@click.command("clean")
@click.argument("output_dir", type=click.Path(file_okay=False, path_type=Path))
def command(output_dir: Path) -> int:
    """Remove the unfinished build folders (.fleetpkg-partial-*) that killed builds left in OUTPUT_DIR,
    and their work folders in the system's temporary folder."""
    from ...artifacts.dist import describe_removed, remove_stale
    from ...scratch import describe_scratch, remove_stale_scratch
    from ...errors import BuildError

    if not output_dir.is_dir():
        raise BuildError("no such folder", where=str(output_dir))
    lines = describe_removed(remove_stale(output_dir)) + describe_scratch(remove_stale_scratch())
    for line in lines:
        click.echo(line)
    if not lines:
        click.echo(f"{output_dir}: nothing left over by interrupted builds")
    return EXIT_OK
