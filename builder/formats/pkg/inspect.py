"""What a flat package holds, as plain JSON-ready data and as lines for people (`fleetpkg inspect`)."""

from __future__ import annotations

import os
from typing import Any

from .conclusion import NONE, words


def describe_package(path: str | os.PathLike) -> dict[str, Any]:
    """A package's components in install order, each with what Installer asks after installing it
    (its pkg-refs' onConclusion and its PackageInfo postinstall-action); the product needs the
    strongest of those it installs."""
    from . import conclusion
    from .package import bom_entries, open_package, script_names
    from .product import describe_distribution
    with open_package(path) as pkg:
        dist = pkg.distribution
        paths = {ref.archive_prefix: ref.id for ref in dist.components()} if dist else {}
        installed = set(dist.install_order()) if dist else None
        packages, needs = [], []
        for comp in pkg.components:
            info = comp.info
            ref_id = paths.get(comp.archive_prefix)
            action = conclusion.strongest((dist.on_conclusion(ref_id) if ref_id else None,
                                           conclusion.from_postinstall_action(info.postinstall_action)))
            if installed is None or ref_id in installed:
                needs.append(action)
            packages.append({
                "identifier": info.identifier,
                "version": info.version,
                "install_location": info.install_location,
                "archive_path": comp.archive_prefix.rstrip("/"),
                "auth": info.auth,
                "payload": {"format": comp.payload_format if comp.has_payload else "none",
                            "files": info.payload_files, "install_kbytes": info.install_kbytes},
                "scripts": script_names(pkg, comp),
                "bom_entries": len(bom_entries(pkg, comp)),
                "bundles": [b.id for b in info.bundles],
                "postinstall_action": info.postinstall_action,
                "on_conclusion": action,
            })
        return {
            "kind": pkg.kind,
            "toc_checksum": pkg.toc_checksum,
            "signed": pkg.signed,
            "on_conclusion": conclusion.strongest(needs),
            "packages": packages,
            "distribution": describe_distribution(dist) if dist else None,
        }


def package_summary_lines(doc: dict[str, Any]) -> list[str]:
    """Human-readable summary of a describe_package() result."""
    kind = doc["kind"]
    lines = [f"{kind} package, TOC checksum {doc['toc_checksum']}, "
             f"{'signed' if doc['signed'] else 'unsigned'}"]
    dist = doc.get("distribution")
    if dist:
        if dist.get("title"):
            lines.append(f"title: {dist['title']}")
        if dist.get("host_architectures"):
            lines.append(f"host architectures: {', '.join(dist['host_architectures'])}")
        for v in dist.get("allowed_os_versions", []):
            bounds = [f">= {v['min']}"] if v.get("min") else []
            bounds += [f"< {v['before']}"] if v.get("before") else []
            lines.append(f"macOS {' and '.join(bounds)}")
    action = doc.get("on_conclusion") or NONE
    by = [p["identifier"] for p in doc["packages"] if p.get("on_conclusion") == action]
    lines.append(f"after installing: {words(action)}" + (f" ({action}: {', '.join(by)})" if action != NONE else ""))
    for p in doc["packages"]:
        where = f" [{p['archive_path']}]" if p["archive_path"] else ""
        lines.append(f"- {p['identifier']} {p['version']}{where}")
        if (p.get("on_conclusion") or NONE) != NONE:
            lines.append(f"    on conclusion: {p['on_conclusion']}")
        lines.append(f"    install location: {p['install_location'] or '(not set)'}")
        pay = p["payload"]
        if pay["format"] == "none":
            lines.append("    payload: none")
        else:
            lines.append(f"    payload: {pay['format']}, {pay['files']} files, {pay['install_kbytes']} KiB")
        lines.append(f"    scripts: {', '.join(p['scripts']) if p['scripts'] else '(none)'}")
        lines.append(f"    BOM entries: {p['bom_entries']}")
    return lines
