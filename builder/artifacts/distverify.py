"""Re-reading a finished build: does dist/<fleet>-<version>/ still hold exactly what was built?

Checks, each reported by name: manifest.json and SHA256SUMS agree with each other and with the
files (no missing, changed or unlisted file), secret artifacts are still mode 0600, every package
opens with valid TOC and file checksums (and valid signatures when signed), every profile parses
and verifies, every Munki pkginfo is a valid plist pointing at a package that exists.

A sealed build (builder/artifacts/seal.py) is checked as far as it can be without a key: the
artifacts listed as sealed may be absent (they are inside secrets.tar.age, which must be there,
be an age file and match its checksum); any that were restored next to it are checked like the
rest. The notes say what is sealed.
"""

from __future__ import annotations

import hashlib
import plistlib
import stat
from pathlib import Path, PurePosixPath
from typing import Sequence

from .dist import MANIFEST, SUMS, read_manifest, sha256_file
from ..errors import BuildError


def _read_sums(root: Path, problems: list[str]) -> dict[str, str]:
    sums: dict[str, str] = {}
    try:
        text = (root / SUMS).read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(f"{SUMS} is missing")
        return sums
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(f"{SUMS} line {number} is malformed")
            continue
        sums[name] = digest
    return sums


def _safe(root: Path, rel: str) -> Path | None:
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        return None
    return root.joinpath(*pure.parts)


def verify_dist(root: Path, trust_roots: Sequence = ()) -> dict:
    """{"path", "ok", "problems", "notes", "artifacts", "packages", "profiles"}; never raises for damage."""
    root = Path(root)
    if not root.is_dir():
        raise BuildError("not a folder", where=str(root))
    problems: list[str] = []
    notes: list[str] = []
    try:
        manifest = read_manifest(root)
    except BuildError as exc:
        return {"path": str(root), "ok": False, "problems": [exc.message], "notes": [], "artifacts": 0,
                "packages": [], "profiles": []}
    artifacts = manifest.get("artifacts") if isinstance(manifest, dict) else None
    if not isinstance(artifacts, list):
        problems.append(f"{MANIFEST} has no artifact list")
        artifacts = []
    sums = _read_sums(root, problems)
    listed: dict[str, dict] = {}
    for art in artifacts:
        if not isinstance(art, dict) or not isinstance(art.get("path"), str):
            problems.append(f"{MANIFEST} holds a malformed artifact entry")
            continue
        listed[art["path"]] = art
    sealed = {rel for rel, art in listed.items() if art.get("sealed")}
    for missing in sorted(set(listed) - set(sums) - sealed):
        problems.append(f"{missing}: in {MANIFEST} but not in {SUMS}")
    for rel in sorted(sealed & set(sums)):
        problems.append(f"{rel}: sealed in {MANIFEST} but listed in {SUMS}")
    restored = _check_seal(root, manifest, listed, sealed, problems, notes)
    for extra in sorted(set(sums) - set(listed)):
        problems.append(f"{extra}: in {SUMS} but not in {MANIFEST}")

    on_disk = {str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file() or p.is_symlink()}
    for unlisted in sorted(on_disk - set(listed) - {MANIFEST, SUMS}):
        problems.append(f"{unlisted}: file is not listed in {MANIFEST}")

    packages, profiles = [], []
    for rel in sorted(listed):
        art = listed[rel]
        path = _safe(root, rel)
        if path is None:
            problems.append(f"{rel}: unsafe path in {MANIFEST}")
            continue
        if rel in sealed and rel not in restored:
            continue  # inside secrets.tar.age
        if path.is_symlink() or not path.is_file():
            problems.append(f"{rel}: missing")
            continue
        digest = sha256_file(path)
        if digest != art.get("sha256") or (rel in sums and digest != sums[rel]):
            problems.append(f"{rel}: sha256 does not match the manifest (changed after the build)")
        if art.get("size") != path.stat().st_size:
            problems.append(f"{rel}: size does not match the manifest")
        if art.get("secret") and stat.S_IMODE(path.stat().st_mode) & 0o077:
            problems.append(f"{rel}: holds a private key but is readable by others "
                            f"(mode {stat.S_IMODE(path.stat().st_mode):04o}; chmod 600)")
        if rel.endswith(".pkg"):
            packages.append(_check_package(rel, path, trust_roots, problems, notes))
        elif rel.endswith(".mobileconfig"):
            profiles.append(_check_profile(rel, path, trust_roots, problems, notes))
        elif rel.endswith(".plist") and "/pkgsinfo/" in f"/{rel}":
            _check_pkginfo(root, rel, path, problems, sealed - restored)
    return {"path": str(root), "ok": not problems, "problems": problems, "notes": notes,
            "artifacts": len(listed), "sealed": len(sealed), "packages": packages, "profiles": profiles}


def _check_package(rel: str, path: Path, trust_roots, problems: list[str], notes: list[str]) -> dict:
    from ..formats.pkg.verify import NOT_APPLE, NOT_SIGNED, verify_package_signature

    report = verify_package_signature(path, trust_roots)
    for problem in report.problems:
        if problem == NOT_SIGNED:
            notes.append(f"{rel}: unsigned")
        elif problem == NOT_APPLE and not trust_roots:
            notes.append(f"{rel}: signed by a certificate that does not chain to Apple Root CA "
                         f"(pass --trust-root to check it against your CA)")
        else:
            problems.append(f"{rel}: {problem}")
    return {"path": rel, "signed": report.signed, "anchored_at": report.anchored_at,
            "files_checked": report.files_checked}


def _check_profile(rel: str, path: Path, trust_roots, problems: list[str], notes: list[str]) -> dict:
    from ..errors import FleetpkgError
    from ..profiles import verify_profile

    try:
        result = verify_profile(path.read_bytes(), trust_roots)
    except FleetpkgError as exc:
        problems.append(f"{rel}: {exc.message}")
        return {"path": rel, "ok": False}
    for problem in result.get("problems", []):
        if not trust_roots and ("not a trusted root" in problem or "no issuer found" in problem):
            notes.append(f"{rel}: {problem}")
        else:
            problems.append(f"{rel}: {problem}")
    return {"path": rel, "signed": result.get("signed"), "identifier": result.get("identifier")}


def _check_seal(root: Path, manifest: dict, listed: dict, sealed: set[str], problems: list[str],
                notes: list[str]) -> set[str]:
    """Check secrets.tar.age (without opening it); returns the sealed artifacts restored here."""
    from .seal import SEALED_NAME
    from ..formats.age import is_age_file

    if not sealed:
        return set()
    archive = root / SEALED_NAME
    if SEALED_NAME not in listed:
        problems.append(f"{SEALED_NAME}: {MANIFEST} lists sealed artifacts but not {SEALED_NAME}")
    elif archive.is_file() and not archive.is_symlink() and not is_age_file(archive):
        problems.append(f"{SEALED_NAME}: not an age-encrypted file")
    restored = {rel for rel in sealed if (p := _safe(root, rel)) is not None and p.is_file()}
    recipients = manifest.get("sealed_to") if isinstance(manifest.get("sealed_to"), list) else []
    notes.append(f"{len(sealed)} secret artifact(s) are sealed in {SEALED_NAME} for {len(recipients)} "
                 f"recipient(s); checked here: its checksum, not its contents (`fleetpkg unseal` checks each "
                 f"against {MANIFEST} with a recipient's key)")
    if restored:
        notes.append(f"{len(restored)} of them are restored in this folder and checked like the other files")
    return restored


def _check_pkginfo(root: Path, rel: str, path: Path, problems: list[str], sealed: set[str] = frozenset()) -> None:
    try:
        doc = plistlib.loads(path.read_bytes())
    except Exception:
        problems.append(f"{rel}: not a valid property list")
        return
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str):
        problems.append(f"{rel}: pkginfo has no name")
        return
    location = doc.get("installer_item_location")
    if location is None:
        return
    repo = next((p.parent for p in path.parents if p.name == "pkgsinfo"), None)  # munki/pkgsinfo/.../x.plist
    if repo is None:
        problems.append(f"{rel}: pkginfo is not inside a pkgsinfo/ folder")
        return
    target = _safe(repo / "pkgs", str(location)) if isinstance(location, str) else None
    if target is not None and target.relative_to(root).as_posix() in sealed:
        return  # the package is inside secrets.tar.age
    if target is None or not target.is_file():
        problems.append(f"{rel}: installer_item_location {location!r} does not exist under pkgs/")
        return
    expected = doc.get("installer_item_hash")
    if expected is not None and hashlib.sha256(target.read_bytes()).hexdigest() != expected:
        problems.append(f"{rel}: installer_item_hash does not match {location}")
