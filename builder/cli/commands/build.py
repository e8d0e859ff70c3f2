"""`fleetpkg build CONFIG`: check every device, then build every artifact into dist/."""

from __future__ import annotations

import os
from pathlib import Path

import click

PREVIOUS_IDENTITY_ENV = "FLEETPKG_PREVIOUS_IDENTITY"


@click.command("build")
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Folder that receives <fleet>-<version>/ (default: dist/ beside fleet.toml).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--jobs", type=click.IntRange(min=1), metavar="N", help="Worker processes (default: CPU count).")
@click.option("--at", "at_text", metavar="DATE", help="Check certificate validity at this date (default: now).")
@click.option("--skip-failed-devices", is_flag=True, help="Build the devices that pass and list the others.")
@click.option("--allow-foreign-vendor", is_flag=True, help="Accept a vendor package that is not the 1E Client.")
@click.option("--ask-password", is_flag=True, help="Prompt (hidden) for passwords with no env/file source.")
@click.option("--seal-to", "seal_to", multiple=True, metavar="RECIPIENT",
              help="Seal every secret file into secrets.tar.age for this age recipient (age1... or an "
                   "ssh-ed25519/ssh-rsa public key); repeatable, adds to [secrets] recipients.")
@click.option("--previous", "previous", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="The previous build to carry unchanged Macs forward from (default: the newest earlier "
                   "build of the fleet in the output folder).")
@click.option("--previous-identity", "previous_identities", multiple=True, metavar="KEYFILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the private key of a recipient the previous build is sealed to (age-keygen's "
                   "output or an unencrypted OpenSSH key), so its unchanged Macs keep their identity; repeatable. "
                   "Default: the file FLEETPKG_PREVIOUS_IDENTITY names. Never the key itself.")
@click.option("--fresh", is_flag=True, help="Mint every Mac's identity anew (e.g. after a suspected leak); "
                                            "the change set still compares with the previous build.")
@click.option("--quiet", "-q", is_flag=True, help="Only errors.")
def command(config: Path, out_dir: Path | None, as_json: bool, jobs: int | None, at_text: str | None,
            skip_failed_devices: bool, allow_foreign_vendor: bool, ask_password: bool, seal_to: tuple[str, ...],
            previous: Path | None, previous_identities: tuple[Path, ...], fresh: bool, quiet: bool) -> int:
    """Build the wrapper package, profiles, identity packages and deployment files for CONFIG.

    Macs whose inputs are unchanged since the previous build keep their identity (byte-identical
    profiles); changes.json and DEPLOY.md say what changed."""
    from ..buildreport import report_build

    if not previous_identities and os.environ.get(PREVIOUS_IDENTITY_ENV, "").strip():
        previous_identities = (Path(os.environ[PREVIOUS_IDENTITY_ENV]),)  # one file's name, never split

    return report_build(config, out_dir=out_dir, as_json=as_json, jobs=jobs, at_text=at_text,
                        skip_failed_devices=skip_failed_devices, allow_foreign_vendor=allow_foreign_vendor,
                        ask_password=ask_password, seal_to=seal_to, quiet=quiet, previous=previous, fresh=fresh,
                        previous_identities=previous_identities)
