"""`fleetpkg verify PATH`: is this package (or profile, or build folder) intact and trusted?

Exit 0 when valid, 1 when any problem is found (each named on its own line), 2 for bad usage.
A package whose certificate has expired still passes when its signature carries a valid
timestamp from while the certificate was valid (that is how Installer treats productsign
packages); the expiry is shown as a note.
"""

from __future__ import annotations

from pathlib import Path

import click

from ...errors import EXIT_FINDINGS, EXIT_OK


@click.command("verify")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--trust-root", "trust_root_files", multiple=True, metavar="FILE",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Also accept chains ending at this root (PEM/DER); repeatable.")
def command(path: Path, as_json: bool, trust_root_files: tuple[Path, ...]) -> int:
    """Verify a signed .pkg (TOC and file checksums, RSA and CMS signatures, certificate chain),
    a .mobileconfig, or a dist/ build folder."""
    from ...formats.pkg.verify import load_trust_roots

    roots = load_trust_roots(trust_root_files)
    if path.is_dir():
        from ...artifacts.distverify import verify_dist

        return _emit_dict(verify_dist(path, roots), as_json, str(path))
    if path.suffix.lower() == ".mobileconfig":
        from ...profiles.verify import verify_profile

        result = dict(verify_profile(path.read_bytes(), roots))
        result.setdefault("path", str(path))
        return _emit_dict(result, as_json, str(path))
    return _verify_package(path, roots, as_json)


def _emit_dict(result: dict, as_json: bool, name: str) -> int:
    ok = bool(result.get("ok")) and not result.get("problems")
    if as_json:
        from ..output import emit_json

        emit_json(result)
    else:
        for note in result.get("notes", []) or []:
            click.echo(f"note: {note}")
        for problem in result.get("problems", []) or []:
            click.echo(f"problem: {problem}")
        click.echo(f"{name}: {'valid' if ok else 'INVALID'}")
    return EXIT_OK if ok else EXIT_FINDINGS


def _mark(flag: bool) -> str:
    return "ok" if flag else "FAILED"


def _verify_package(path: Path, roots, as_json: bool) -> int:
    from ...formats.pkg.verify import verify_package_signature

    report = verify_package_signature(path, roots)
    if as_json:
        from ..output import emit_json

        emit_json(report.to_json())
        return EXIT_OK if report.ok else EXIT_FINDINGS
    lines = [f"{path}:", f"  TOC checksum:   {_mark(report.toc_checksum_ok)}"]
    if report.toc_checksum_ok:
        lines.append(f"  file data:      {_mark(report.files_ok)} ({report.files_checked} files)")
        if report.signed:
            lines += [f"  RSA signature:  {_mark(report.rsa_ok)}", f"  CMS signature:  {_mark(report.cms_ok)}"]
            anchor = {"apple-root": "Apple Root CA", "trusted-root": "a --trust-root",
                      "untrusted": "an untrusted root"}.get(report.anchored_at or "", "-")
            lines.append(f"  chain:          {_mark(report.chain_ok)} (ends at {anchor})")
            for cert in report.chain:
                lines.append(f"    {cert['subject']}  (expires {cert['not_after'][:10]})")
            if report.timestamp:
                ts = report.timestamp
                lines.append(f"  timestamp:      {ts['time'] or '?'} by {ts['tsa'] or '?'}"
                             f"{'' if ts['ok'] else ' (not trusted)'}")
        else:
            lines.append("  signature:      none")
    lines += [f"  note: {n}" for n in report.notes]
    lines += [f"  problem: {p}" for p in report.problems]
    lines.append(f"{path}: {'valid' if report.ok else 'INVALID'}")
    click.echo("\n".join(lines))
    return EXIT_OK if report.ok else EXIT_FINDINGS
