"""`fleetpkg sign IN.pkg -o OUT.pkg`: (re-)sign a flat package like productsign, from Linux.

Only the TOC is rewritten; the file data is checked and copied through, so signing costs about
one sequential copy. The identity is a .p12 (`--identity`) or PEM/DER certificate + key (+ chain);
passwords come from an environment variable, a file or a hidden prompt, never the command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ...errors import EXIT_OK, SigningError


def _password(env: str | None, file: Path | None, label: str, *, prompt: bool) -> bytes | None:
    from ...fleet.passwords import PasswordSource

    if env and file:
        raise SigningError("give the password with only one of --password-env and --password-file")
    if env:
        return bytes(PasswordSource("env", env).resolve(f"password for {label}"))
    if file:
        return bytes(PasswordSource("file", str(file)).resolve(f"password for {label}"))
    if prompt and sys.stdin.isatty():
        return bytes(PasswordSource("prompt", label).resolve())
    return None


@click.command("sign")
@click.argument("package", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the signed package (written atomically).")
@click.option("--identity", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="P12",
              help="Developer ID Installer identity exported as .p12/.pfx.")
@click.option("--password-env", metavar="VAR", help="Environment variable holding the .p12 password.")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="File whose first line is the .p12 password.")
@click.option("--certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="PEM",
              help="Signing certificate (PEM/DER), with --key.")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="PEM",
              help="Private key of --certificate (PEM/DER).")
@click.option("--chain", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              metavar="PEM", help="Issuer certificates (Developer ID CA, Apple Root CA); repeatable.")
@click.option("--key-password-env", metavar="VAR", help="Environment variable holding --key's password.")
@click.option("--timestamp-url", metavar="URL",
              help="RFC 3161 timestamp authority (e.g. http://timestamp.apple.com/ts01); needs network.")
@click.option("--check-data", is_flag=True,
              help="Read and check every member before signing (refuses damaged input; one more pass).")
def command(package: Path, output: Path, identity: Path | None, password_env: str | None,
            password_file: Path | None, certificate: Path | None, key: Path | None,
            chain: tuple[Path, ...], key_password_env: str | None, timestamp_url: str | None,
            check_data: bool) -> int:
    """Sign PACKAGE with a Developer ID Installer identity, writing OUTPUT."""
    from ...formats.pkg.signing import PackageSigner, sign_package
    from ...certs.signing_identity import load_signing_identity

    if identity is None and (certificate is None or key is None):
        raise SigningError("no signing identity", hint="pass --identity X.p12, or --certificate and --key")
    if identity is not None and (certificate is not None or key is not None or key_password_env):
        raise SigningError("give either --identity or --certificate/--key, not both")
    if identity is not None:
        password = _password(password_env, password_file, str(identity), prompt=True)
    else:
        if password_env or password_file:
            raise SigningError("--password-env/--password-file are for --identity; use --key-password-env")
        password = _password(key_password_env, None, str(key), prompt=False)
    ident = load_signing_identity(identity, password, certificate=certificate, key=key, chain=chain)
    for warning in ident.warnings:
        click.echo(f"fleetpkg: warning: {warning}", err=True)
    sign_package(package, output, ident, timestamp_url=timestamp_url, check_data=check_data)
    signer = PackageSigner(ident)
    names = " -> ".join(c.subject.rfc4514_string() for c in (ident.certificate, *ident.chain))
    click.echo(f"signed {output} (RSA {ident.key.key_size}, {len(signer.certificates)} certificates: {names})")
    return EXIT_OK
