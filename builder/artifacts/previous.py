"""The previous build of a fleet: finding it, deciding whether to trust it, and reading a device's
sealed identity back from it.

Found: `--previous DIR`, else the newest earlier build of the same fleet in the output folder
(newest by the time its manifest.json was published; folders of other fleets and hidden
`.fleetpkg-*` work folders are passed over).

Trusted only when everything it vouches for holds: its manifest is of this fleetpkg's format and
of the same fleet, SHA256SUMS lists exactly the manifest's files with the same digests, and every
listed file exists with its listed size and SHA-256 (each file hashed once, however many hard
links it has). Any failure makes the whole build untrusted, with a one-line reason: nothing is
carried forward from it and every device is re-minted. The hashing runs in worker processes
(check_part, on parts of the files grouped by name); for a large build, beside the build itself,
whose verdict is awaited before publishing (builder/artifacts/pipeline.py, _LateCheck).

Where the sealed identity comes from: the previous build's unsigned device profile, which already
holds the PKCS#12 and its password (and is a secret, 0600 artifact), so carrying forward needs no
extra secret file. sealed_identity() is the one reader.

A sealed previous build (secrets.tar.age) is opened with the identity files the build was given
(`--previous-identity`): open_sealed() decrypts it in memory, member by member, checks every
member against the manifest as the trust check checks files, and keeps the files a rebuild may
carry in an encrypted spool (builder/artifacts/seal.py) that the workers read. No identity, or
none of the recipients': nothing is carried (one line says why). A member that disagrees with the
manifest, or a damaged archive: the build is not trusted.
"""

from __future__ import annotations

import hashlib
import json
import os
import plistlib
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

from ..errors import FleetpkgError
from .changes import MANIFEST_FORMAT, build_name, device_records
from .dist import MANIFEST, PARTIAL_PREFIX, SUMS, sha256_of
from .verified import Known

PKCS12 = "com.apple.security.pkcs12"
CA_TYPES = ("com.apple.security.root", "com.apple.security.pkcs1")  # roots first, as in the profile


@dataclass(frozen=True)
class PreviousBuild:
    root: Path
    manifest: dict
    files: dict  # dist-relative path -> (sha256, size), as the manifest (and SHA256SUMS) list them
    devices: dict  # case-folded hostname -> the manifest's device record
    untrusted: str | None = None  # why nothing may be carried forward from it; None = trusted so far
    sealed: bool = False  # its secret files are in secrets.tar.age, not in the folder: no identity to carry

    @property
    def name(self) -> str:
        return build_name(self.manifest)

    def distrust(self, reason: str) -> "PreviousBuild":
        return PreviousBuild(self.root, self.manifest, self.files, self.devices, self.untrusted or reason, self.sealed)


def _manifest_time(path: Path) -> int | None:
    try:
        return (path / MANIFEST).stat().st_mtime_ns
    except OSError:
        return None


def candidates(out_dir: Path, fleet: str) -> list[Path]:
    """Build folders that may belong to `fleet` in out_dir, newest manifest first."""
    try:
        entries = [e for e in os.scandir(out_dir) if e.is_dir(follow_symlinks=False)]
    except OSError:
        return []
    found = []
    for entry in entries:
        if entry.name.startswith((".", PARTIAL_PREFIX)) or not entry.name.startswith(f"{fleet}-"):
            continue
        found.append((_manifest_time(Path(entry.path)) or 0, entry.name, Path(entry.path)))
    return [p for _, _, p in sorted(found, reverse=True)]


def _read_json(path: Path) -> dict:
    with path.open("rb") as fh:
        doc = json.load(fh)
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    return doc


def locate(out_dir: Path, fleet: str, explicit: Path | None) -> tuple[PreviousBuild | None, list[str]]:
    """The previous build to compare with (or None) and one-line notes about what was passed over."""
    if explicit is not None:
        prev, why = open_build(Path(explicit), fleet)
        return prev, [why] if why else []
    notes = []
    for path in candidates(out_dir, fleet):
        prev, why = open_build(path, fleet)
        if prev is not None:
            return prev, notes + ([why] if why else [])
        if why and "is a build of fleet" not in why:
            notes.append(why)
    return None, notes


def open_build(path: Path, fleet: str) -> tuple[PreviousBuild | None, str | None]:
    """(build, None) when it may be compared with; (build, reason) when it is the same fleet's but
    not to be trusted; (None, reason) when it cannot be read or is another fleet's."""
    try:
        manifest = _read_json(path / MANIFEST)
    except FileNotFoundError:
        return None, f"previous build {path}: no manifest.json (not a fleetpkg build): every device is minted anew"
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        what = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        return None, f"previous build {path}: cannot read its manifest.json ({what}): every device is minted anew"
    if manifest.get("fleet") != fleet:
        return None, (f"previous build {path} is a build of fleet {manifest.get('fleet')!r}, not {fleet!r}: "
                      "every device is minted anew")
    files = _listed(manifest.get("artifacts") or ())
    prev = PreviousBuild(path, manifest, files, device_records(manifest), sealed=bool(manifest.get("sealed_to")))
    fmt = manifest.get("format", 1)
    if fmt != MANIFEST_FORMAT:
        who = "an older" if isinstance(fmt, int) and fmt < MANIFEST_FORMAT else "another"
        return _untrusted(prev, f"made by {who} fleetpkg (manifest format {fmt}, this one writes {MANIFEST_FORMAT})")
    problem = _sums_problem(path, files)
    if problem:
        return _untrusted(prev, problem)
    return prev, None


def _listed(artifacts) -> dict[str, tuple[str | None, int | None]]:
    """path -> (sha256, size) of the artifacts in the folder (a sealed build's secrets are not)."""
    try:  # a manifest as fleetpkg writes it: every artifact a dict with these keys
        return {a["path"]: (a["sha256"], a["size"]) for a in artifacts if not a["sealed"] and type(a["path"]) is str}
    except (KeyError, TypeError):
        pass
    files = {}
    for art in artifacts:
        if isinstance(art, dict) and isinstance(art.get("path"), str) and not art.get("sealed"):
            files[art["path"]] = (art.get("sha256"), art.get("size"))
    return files


def _untrusted(prev: PreviousBuild, reason: str) -> tuple[PreviousBuild, str]:
    prev = prev.distrust(reason)
    return prev, untrusted_note(prev)


def untrusted_note(prev: PreviousBuild) -> str:
    return f"previous build {prev.name} is not trusted ({prev.untrusted}): every device gets a new identity"


def _sums_problem(root: Path, files: dict) -> str | None:
    try:
        text = (root / SUMS).read_text(encoding="utf-8")
    except OSError as exc:
        return f"{SUMS} cannot be read ({exc.strerror or exc})"
    except UnicodeDecodeError:
        return f"{SUMS} is not text"
    if text == "".join([f"{digest}  {rel}\n" for rel, (digest, _size) in files.items()]) \
            and all(map(_plain, files)):
        return None  # as fleetpkg writes it (the manifest's order): nothing to look at line by line
    sums = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep:
            return f"{SUMS} is malformed"
        sums[name] = digest
    if len(sums) != len(files):
        return f"{SUMS} lists {len(sums)} files, manifest.json {len(files)}"
    agree = sums == {rel: digest for rel, (digest, _size) in files.items()}  # compared in C; the loop names one
    for rel, (digest, _size) in files.items():
        if not agree and sums.get(rel) != digest:
            return f"{SUMS} and manifest.json disagree about {rel}"
        if not _plain(rel):
            return f"manifest.json lists an unsafe path {rel!r}"
    return None


def record_build(root: Path) -> bool:
    """After a build is published (builder/artifacts/dist.py, in the background): check its files
    against its own manifest as the next build's trust check would, and record the stat of those
    that hold (builder/artifacts/verified.py), so that check need not hash them again."""
    from .verified import write_record

    def listing() -> list[tuple[str, str]] | None:
        try:
            manifest = _read_json(root / MANIFEST)
        except (OSError, ValueError, UnicodeDecodeError):
            return None
        files = _listed(manifest.get("artifacts") or ())
        if manifest.get("format", 1) != MANIFEST_FORMAT or _sums_problem(root, files) \
                or not all(isinstance(digest, str) for digest, _size in files.values()):
            return None
        return [(rel, digest) for rel, (digest, _size) in files.items()]

    return write_record(root, listing, _sha256)


def _plain(rel: str) -> bool:
    """A relative path inside the build: no leading '/', no '..' part (checked without pathlib)."""
    return (bool(rel) and rel[0] != "/" and (".." not in rel or ".." not in rel.split("/"))
            and "\0" not in rel)


# -- file checks (run in worker processes) -----------------------------------------------------------

def check_files(root: Path, items: Sequence[tuple[str, str | None, int]], known: Known | None = None) -> list[str]:
    """Problems with (path, sha256 or None, size) items: missing, other size, other digest (hashed
    only when a digest is given, and only when `known`, the build's record of its files as
    published, does not vouch for the file: builder/artifacts/verified.py). Hard links of one
    file are hashed once."""
    return [problem for _position, problem in check_part(root, items, range(len(items)), known)]


def check_part(root: Path, items: Sequence[tuple[str, str | None, int]],
               positions: Sequence[int], known: Known | None = None) -> list[tuple[int, str]]:
    """check_files over the items at `positions`, each problem with its item's position (the
    problems of several parts are then put back in the items' order)."""
    problems = []
    hashed: dict[tuple[int, int], str] = {}
    base = os.fspath(root).rstrip("/")
    for position in positions:
        rel, digest, size = items[position]
        path = f"{base}/{rel}"
        try:
            st = os.stat(path)
        except OSError:
            problems.append((position, f"{rel} is missing"))
            continue
        if st.st_size != size:
            problems.append((position, f"{rel} is {st.st_size} bytes, manifest.json says {size}"))
            continue
        if digest is None or (known is not None and known.matches(position, st)):
            continue
        key = (st.st_dev, st.st_ino)
        if key not in hashed:
            try:
                hashed[key] = _sha256(path)
            except OSError as exc:
                problems.append((position, f"{rel} cannot be read ({exc.strerror or exc})"))
                continue
        if hashed[key] != digest:
            problems.append((position, f"{rel} does not match its manifest.json digest"))
    return problems


def _sha256(path: str) -> str:
    return sha256_of(path)


def parts(items: Sequence[tuple[str, str | None, int]], count: int) -> list[list[int]]:
    """The items' positions in `count` parts of about equal size for check_part in parallel, in
    the order of their file names: a Mac's profile and its hard-linked copies under jamf/ and
    intune/ (one inode, one name) are then hashed by one worker, once, not by each."""
    names = [rel.rpartition("/")[2] for rel, _digest, _size in items]
    order = sorted(range(len(items)), key=names.__getitem__)
    size = max(1, -(-len(order) // max(1, count)))
    return [order[i:i + size] for i in range(0, len(order), size)]


def listed_files(prev: PreviousBuild) -> list[tuple[str, str, int]]:
    """Every file the previous build's manifest lists, with its digest and size: what the trust
    check verifies (each file hashed once, however many hard links it has)."""
    return [(rel, digest, size) for rel, (digest, size) in prev.files.items()]


# -- the sealed identity ------------------------------------------------------------------------------

@dataclass(frozen=True)
class SealedIdentity:
    """A device's macOS PKCS#12 and password from the previous build, with the CA certificates
    (DER, roots first) its profile carried. Neither secret appears in repr/str."""

    p12: bytes
    password: str
    ca_ders: tuple[bytes, ...]

    def __repr__(self) -> str:
        return f"SealedIdentity({len(self.ca_ders)} CA certificates)"


def sealed_identity(root: Path, profile: str, sha256: str, secrets=None) -> SealedIdentity | None:
    """The sealed identity in the previous build's unsigned device profile `profile` (read from
    `secrets`, a SpoolView, when the previous build is sealed), or None when that file is not
    exactly what the manifest vouched for or holds no identity (the caller then mints a new one)."""
    try:
        data = secrets.read(profile) if secrets is not None else (root / profile).read_bytes()
    except (OSError, KeyError):
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        doc = plistlib.loads(data)
        payloads = doc["PayloadContent"]
        p12 = [p for p in payloads if p.get("PayloadType") == PKCS12]
        cas = [p["PayloadContent"] for t in CA_TYPES for p in payloads if p.get("PayloadType") == t]
        if len(p12) != 1 or not isinstance(p12[0].get("PayloadContent"), bytes) \
                or not isinstance(p12[0].get("Password"), str) or not all(isinstance(c, bytes) for c in cas):
            return None
    except Exception:  # a damaged plist of any shape: mint anew instead
        return None
    return SealedIdentity(p12[0]["PayloadContent"], p12[0]["Password"], tuple(cas))


# -- a sealed previous build ---------------------------------------------------------------------------

IDENTITY_OPTION = "--previous-identity KEYFILE or FLEETPKG_PREVIOUS_IDENTITY"


def sealed_listing(prev: PreviousBuild) -> dict[str, tuple[str, int]]:
    """The sealed artifacts the previous build's manifest lists: path -> (sha256, size) of the
    plaintext inside its secrets.tar.age."""
    from .seal import sealed_artifacts

    try:
        arts = sealed_artifacts(prev.manifest, MANIFEST)
    except FleetpkgError:
        return {}
    return {rel: (a.get("sha256"), a.get("size")) for rel, a in arts.items()}


@dataclass
class OpenedSeal:
    """What open_sealed found: the spool of the files a rebuild may carry, or why there is none.
    `unopened`: no identity opens it (nothing carried, the build still trusted); `problem`: the
    archive disagrees with the manifest (the build not trusted)."""

    spool: object | None = None  # seal.SecretSpool (shared), closed by the caller
    unopened: str | None = None
    problem: str | None = None


def open_sealed(prev: PreviousBuild, identities: Sequence, folder: Path, wanted: Collection[str]) -> OpenedSeal:
    """Decrypt the previous build's secrets.tar.age in memory, check every member against its
    manifest (listed as sealed, same size and sha256, every sealed artifact present) and keep the
    `wanted` files (and the members they are copies of) in a shared spool in `folder`, encrypted
    under a key that only this process and its workers hold."""
    from ..formats.age import NotARecipient
    from .seal import SEALED_NAME, SecretSpool, lacking, sealed_artifacts, spool_sealed

    if not identities:
        return OpenedSeal(unopened=f"no identity was given to open its {SEALED_NAME} ({IDENTITY_OPTION})")
    try:
        sealed = sealed_artifacts(prev.manifest, MANIFEST)
    except FleetpkgError as exc:
        return OpenedSeal(problem=exc.message)
    if SEALED_NAME not in prev.files:
        return OpenedSeal(problem=f"manifest.json does not list {SEALED_NAME}")
    keep = {sealed[rel].get("sha256") for rel in wanted if rel in sealed}
    spool, opened = SecretSpool(folder, shared=True), OpenedSeal()
    try:
        problem = lacking(sealed, spool_sealed(prev.root / SEALED_NAME, identities, sealed, spool, keep, SEALED_NAME))
        opened = OpenedSeal(problem=problem) if problem else OpenedSeal(spool=spool)
    except NotARecipient:
        opened = OpenedSeal(unopened=f"none of the identities given opens its {SEALED_NAME} (it is sealed to other "
                                     "recipients)")
    except FleetpkgError as exc:
        opened = OpenedSeal(problem=str(exc))
    except OSError as exc:
        opened = OpenedSeal(problem=f"{SEALED_NAME} cannot be read ({exc.strerror or exc})")
    finally:
        if opened.spool is None:
            spool.close()
    return opened


def unopened_note(prev: PreviousBuild, why: str) -> str:
    return f"previous build {prev.name} is sealed and {why}: every Mac gets a new identity"
