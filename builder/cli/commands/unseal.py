"""`fleetpkg unseal DIST --identity KEYFILE [-o DIR]`: restore a sealed build's secret files."""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import EXIT_OK


@click.command("unseal")
@click.argument("dist", type=click.Path(file_okay=False, path_type=Path))
@click.option("-i", "--identity", "identities", multiple=True, required=True, metavar="KEYFILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="File holding a recipient's private key: age-keygen's output or an unencrypted OpenSSH "
                   "private key; repeatable. The key itself is never taken on the command line.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Restore into this folder instead of DIST.")
def command(dist: Path, identities: tuple[Path, ...], out_dir: Path | None) -> int:
    """Decrypt DIST/secrets.tar.age and restore every secret file (mode 0600), each checked
    against DIST/manifest.json. On any error (wrong key, damaged file, unexpected member)
    nothing is written."""
    from ...artifacts.seal import unseal

    result = unseal(dist, identities, out_dir)
    click.echo(f"restored {len(result.files)} secret file(s) into {result.dest} (mode 0600, checked against "
               f"manifest.json); delete them once uploaded")
    return EXIT_OK
