"""`fleetpkg diff OLD_DIST NEW_DIST`: what changed between two builds of a fleet.

The same comparison a build writes to its changes.json (builder/artifacts/changes.py): Macs added,
changed (with the reasons), removed and unchanged, the wrapper's status, and every file added,
changed, removed or unchanged. Read from the two manifests, so it works for any two builds,
including copies moved elsewhere. When NEW's own changes.json was made against OLD, its --fresh
flag and notes (not trusted; sealed identities not read) are taken over, so both documents agree.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from ...errors import EXIT_OK


@click.command("diff")
@click.argument("old", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("new", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (changes.json's shape) on stdout.")
def command(old: Path, new: Path, as_json: bool) -> int:
    """Compare two build folders (dist/<fleet>-<version>/): devices and files added, changed, removed."""
    from ...artifacts.changes import build_name, change_set
    from ...artifacts.dist import read_manifest
    from ...errors import BuildError

    docs = []
    for path in (old, new):
        doc = read_manifest(path)
        if not isinstance(doc, dict) or not isinstance(doc.get("artifacts"), list):
            raise BuildError("manifest.json has no artifact list: not a fleetpkg build folder", where=str(path))
        docs.append(doc)
    fresh, note, sealed_note, sealed = False, None, None, None
    try:
        own = json.loads((new / "changes.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        own = None
    if isinstance(own, dict) and own.get("previous") == build_name(docs[0]):
        fresh, note, sealed_note = bool(own.get("fresh")), own.get("note"), own.get("sealed_note")
        sealed = bool(sealed_note)  # a sealed OLD whose seal the build opened carried identities like any
    changes = change_set(docs[0], docs[1], fresh=fresh, untrusted=note, sealed_note=sealed_note, sealed=sealed)
    if as_json:
        from ..output import emit_json

        emit_json(changes)
    else:
        click.echo(render(build_name(docs[0]), build_name(docs[1]), changes))
    return EXIT_OK


def render(old_name: str, new_name: str, changes: dict) -> str:
    devices, files = changes["devices"], changes["artifacts"]
    counts = lambda groups: ", ".join(f"{len(groups[k])} {k}" for k in ("added", "changed", "removed", "unchanged"))
    lines = [f"{old_name} -> {new_name}" + (" (--fresh)" if changes["fresh"] else "")]
    if changes.get("note"):
        lines.append(f"note: {changes['note']}")
    if changes.get("sealed_note"):
        lines.append(f"note: its sealed identities were not read: {changes['sealed_note']}")
    lines += [f"wrapper: {changes['wrapper']}", f"devices: {counts(devices)}"]
    for status in ("added", "changed", "removed"):
        for host in devices[status]:
            why = changes["reasons"].get(host)
            lines.append(f"  {status:<8} {host}" + (f": {'; '.join(why)}" if why else ""))
    lines.append(f"files: {counts(files)}")
    for status in ("added", "changed", "removed"):
        lines += [f"  {status:<8} {path}" for path in files[status]]
    return "\n".join(lines)
