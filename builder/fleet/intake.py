"""Find the vendor's 1E Client .pkg inside what the vendor ships: a zip, a .dmg, or the .pkg itself.

1E ships a zip holding a .dmg holding the .pkg and a scripts/ folder. Everything read here is
untrusted: zip members are checked for path traversal, links and sizes before anything is written,
and everything is extracted into a caller-owned temporary folder only. Disk images are read with
`pydmg` (UDIF with HFS+/APFS/FAT inside), the one place that library is used so it can be swapped;
7-Zip (`7zz`/`7z`) is the fallback when pydmg cannot read an image.
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import BuildError, FormatError

MAX_MEMBER_BYTES = 4 << 30  # a vendor package is ~100 MB; refuse absurd members (zip bombs)
MAX_TOTAL_BYTES = 8 << 30
_CLIENT_NAME = re.compile(r"1e[._ -]?client", re.IGNORECASE)


@dataclass(frozen=True)
class VendorSource:
    package: Path  # the flat .pkg to read
    scripts_dir: Path | None  # the vendor's scripts/ folder when the container had one
    origin: str  # human description, e.g. "1e.zip > 1e.client.dmg > 1e.client.pkg"


def resolve_vendor_package(path: Path, workdir: Path) -> VendorSource:
    """Return the .pkg to use for `path`, extracting from zip/dmg containers into workdir."""
    path = Path(path)
    if not path.is_file():
        raise BuildError("vendor package not found", where=str(path),
                         hint="set [vendor] package to the vendor's .pkg, .dmg or .zip")
    kind = _sniff(path)
    if kind == "pkg":
        return VendorSource(path, None, path.name)
    if kind == "zip":
        return _from_zip(path, workdir)
    if kind == "dmg":
        return _from_dmg(path, workdir, origin=path.name)
    raise FormatError("not a .pkg, .dmg or .zip", where=str(path),
                      hint="point [vendor] package at the 1E Client package the vendor ships")


def _sniff(path: Path) -> str:
    with path.open("rb") as fh:
        head = fh.read(4)
        if head == b"xar!":
            return "pkg"
        if head[:2] == b"PK":
            return "zip"
        size = fh.seek(0, 2)
        if size >= 512:
            fh.seek(size - 512)
            if fh.read(4) == b"koly":
                return "dmg"
    return "unknown"


def _pick(candidates: list[str], container: Path) -> str:
    """The 1E Client package among several .pkg names."""
    pkgs = [c for c in candidates if c.lower().endswith(".pkg")]
    if len(pkgs) == 1:
        return pkgs[0]
    named = [c for c in pkgs if _CLIENT_NAME.search(PurePosixPath(c).name)]
    if len(named) == 1:
        return named[0]
    if not pkgs:
        raise BuildError("holds no .pkg", where=str(container),
                         hint="extract the 1E Client .pkg by hand and point [vendor] package at it")
    raise BuildError(f"holds several packages ({', '.join(sorted(pkgs))}) and none is clearly the 1E Client",
                     where=str(container), hint="point [vendor] package at the right .pkg")


def _safe_relpath(name: str, container: Path) -> PurePosixPath:
    if "\0" in name or "\\" in name:
        raise FormatError(f"unsafe member name {name!r}", where=str(container))
    rel = PurePosixPath(name)
    if rel.is_absolute() or any(part == ".." for part in rel.parts):
        raise FormatError(f"member {name!r} would be written outside the extraction folder",
                          where=str(container), hint="the archive is corrupt or malicious")
    return rel


def _from_zip(path: Path, workdir: Path) -> VendorSource:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise FormatError(f"corrupt zip: {exc}", where=str(path)) from None
    with archive:
        infos = archive.infolist()
        total = 0
        for info in infos:  # validate everything before writing anything
            _safe_relpath(info.filename, path)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise FormatError(f"member {info.filename!r} is a symbolic link; refusing to extract",
                                  where=str(path))
            if info.file_size > MAX_MEMBER_BYTES:
                raise FormatError(f"member {info.filename!r} is implausibly large", where=str(path))
            total += info.file_size
        if total > MAX_TOTAL_BYTES:
            raise FormatError("archive expands to more than 8 GiB", where=str(path))
        names = [i.filename for i in infos if not i.is_dir()]
        inner_pkgs = [n for n in names if n.lower().endswith(".pkg")]
        dmgs = [n for n in names if n.lower().endswith(".dmg")]
        if inner_pkgs:
            chosen = _pick(inner_pkgs, path)
        elif len(dmgs) == 1:
            chosen = dmgs[0]
        elif dmgs:
            named = [d for d in dmgs if _CLIENT_NAME.search(d)]
            if len(named) != 1:
                raise BuildError(f"holds several disk images ({', '.join(sorted(dmgs))})", where=str(path),
                                 hint="extract the 1E Client .dmg or .pkg and point [vendor] package at it")
            chosen = named[0]
        else:
            raise BuildError("holds no .pkg or .dmg", where=str(path),
                             hint="is this the 1E Client download? Point [vendor] package at the .pkg")
        dest_root = workdir / "zip"
        chosen_rel = _safe_relpath(chosen, path)
        # extract the chosen member and a sibling scripts/ folder, nothing else
        scripts_dir = chosen_rel.parent / "scripts"
        wanted = [i for i in infos if i.filename == chosen or
                  (not i.is_dir() and PurePosixPath(i.filename).is_relative_to(scripts_dir))]
        for info in wanted:
            _extract_member(archive, info, dest_root, path)
    target = dest_root / chosen_rel
    origin = f"{path.name} > {chosen}"
    if chosen.lower().endswith(".dmg"):
        return _from_dmg(target, workdir, origin=origin)
    scripts = target.parent / "scripts"
    return VendorSource(target, scripts if scripts.is_dir() else None, origin)


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, dest_root: Path, src: Path) -> None:
    out = dest_root / _safe_relpath(info.filename, src)
    if not out.resolve().is_relative_to(dest_root.resolve()):
        raise FormatError(f"member {info.filename!r} escapes the extraction folder", where=str(src))
    out.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    try:
        with archive.open(info) as fin, out.open("wb") as fout:
            while chunk := fin.read(1 << 20):
                written += len(chunk)
                if written > info.file_size:
                    raise FormatError(f"member {info.filename!r} is larger than declared", where=str(src))
                fout.write(chunk)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
        raise FormatError(f"cannot extract {info.filename!r}: {exc}", where=str(src)) from None


def _from_dmg(path: Path, workdir: Path, *, origin: str) -> VendorSource:
    dest = workdir / "dmg"
    dest.mkdir(parents=True, exist_ok=True)
    image = _DiskImage(path)
    try:
        names = image.list_files()
    except BuildError:
        return _from_dmg_7zip(path, dest, origin)
    chosen = _pick([n for n in names if not PurePosixPath(n).name.startswith(".")], path)
    scripts_prefix = str(PurePosixPath(chosen).parent / "scripts").rstrip("/") + "/"
    wanted = [chosen] + [n for n in names if n.startswith(scripts_prefix)]
    for name in wanted:
        image.extract(name, dest / _safe_relpath(name.lstrip("/"), path))
    target = dest / _safe_relpath(chosen.lstrip("/"), path)
    scripts = target.parent / "scripts"
    return VendorSource(target, scripts if scripts.is_dir() else None, f"{origin} > {chosen.lstrip('/')}")


class _DiskImage:
    """pydmg behind three verbs: which file system, list every file, extract one."""

    MAX_ENTRIES = 100_000

    def __init__(self, path: Path):
        self.path = path
        self._fat_dir: Path | None = None

    def _pydmg(self):
        try:
            import pydmg
        except ImportError:
            raise BuildError("pydmg is not installed", where=str(self.path)) from None
        return pydmg

    def list_files(self) -> list[str]:
        pydmg = self._pydmg()
        try:
            return self._walk_apple(pydmg)
        except Exception as apple_exc:  # pydmg raises plain exceptions from its native core
            try:
                entries = pydmg.list_fat32_entries(self.path)
            except Exception:
                raise BuildError(f"pydmg cannot read the image: {apple_exc}", where=str(self.path)) from None
            self.fs = "fat"
            return sorted("/" + e["path"].lstrip("/") for e in entries if not e["is_dir"])

    def _walk_apple(self, pydmg) -> list[str]:
        self.fs = "apple"
        files: set[str] = set()
        pending, seen = ["/"], set()
        while pending:
            folder = pending.pop()
            if folder in seen:
                continue
            seen.add(folder)
            for entry in pydmg.list_apple_entries(self.path, folder):
                name = entry["path"]
                if len(files) + len(seen) > self.MAX_ENTRIES:
                    raise BuildError("disk image lists too many entries", where=str(self.path))
                if entry["is_dir"]:
                    if not PurePosixPath(name).name.startswith((".", "\x00")):
                        pending.append(name)
                else:
                    files.add(name)
        return sorted(files)

    def extract(self, name: str, out: Path) -> None:
        pydmg = self._pydmg()
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.fs == "apple":
                pydmg.extract_apple_file(self.path, name, out)
                return
            if self._fat_dir is None:
                self._fat_dir = out.parent / ".fat-extract"
                pydmg.extract_fat32(self.path, self._fat_dir)
            shutil.copyfile(self._fat_dir / _safe_relpath(name.lstrip("/"), self.path), out)
        except (FormatError, BuildError):
            raise
        except Exception as exc:
            raise FormatError(f"cannot extract {name!r} from the disk image: {exc}", where=str(self.path)) from None


def _from_dmg_7zip(path: Path, dest: Path, origin: str) -> VendorSource:
    tool = shutil.which("7zz") or shutil.which("7z")
    if tool is None:
        raise BuildError("cannot read this disk image (pydmg could not, and 7-Zip is not installed)",
                         where=str(path),
                         hint="open the .dmg on a Mac, copy the 1E Client .pkg out and point [vendor] package at it")
    result = subprocess.run([tool, "x", "-y", f"-o{dest}", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError("7-Zip could not extract the disk image", where=str(path),
                         hint="extract the 1E Client .pkg by hand")
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*.pkg") if p.is_file())
    for p in dest.rglob("*"):
        if not p.resolve().is_relative_to(dest.resolve()):
            raise FormatError("disk image content escapes the extraction folder", where=str(path))
    chosen = _pick(found, path)
    target = dest / chosen
    scripts = target.parent / "scripts"
    return VendorSource(target, scripts if scripts.is_dir() else None, f"{origin} > {chosen}")
