"""Installer packages as a whole: open one (product or component), build components and products.

A component package is a xar holding PackageInfo, Bom, Payload and optionally Scripts at its
root; a product archive holds a Distribution plus one `NAME.pkg/` directory per component
(flat-package-format.md §0). Opening reads the xar TOC and the small XML members only; payloads
are streamed on demand. Building writes Payload/Scripts to temporary files (streamed) -- or,
when every input is already in memory and small (scripts, a few certificates), builds them in
memory and writes the package as its only file -- and a product can embed another package's component by copying its stored heap bytes unchanged, so the
vendor's receipt and BOM stay exactly as the vendor made them.
"""

from __future__ import annotations

import functools
import io
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from ... import repro
from ...errors import BuildError, FormatError
from .component import PackageInfo, parse_package_info, render_package_info, scripts_for
from .product import Distribution, parse_distribution, render_distribution

MAX_XML_MEMBER = 4 * 1024 * 1024
IN_MEMORY_MAX = 8 * 1024 * 1024  # in-memory inputs up to this total are built without temp files
MAX_BOM = 256 * 1024 * 1024
MEMBERS = ("Bom", "Payload", "Scripts", "PackageInfo")  # Apple's heap order inside a component
SCRIPT_MODE = 0o755
DIR_MODE = 0o700  # productbuild's synthesized NAME.pkg/ directories
FILE_MODE = 0o644


@dataclass(frozen=True)
class Component:
    archive_prefix: str  # "" for a component package, "name.pkg/" inside a product archive
    info: PackageInfo
    has_payload: bool
    has_scripts: bool
    has_bom: bool
    payload_format: str  # gzip-cpio | pbzx | cpio | apple-archive | unknown | none

    def member(self, name: str) -> str:
        return self.archive_prefix + name


@dataclass
class Package:
    path: str
    kind: str  # "product" | "component"
    components: list[Component]
    distribution: Distribution | None
    signed: bool
    toc_checksum: str
    reader: object = field(repr=False)

    def close(self) -> None:
        close = getattr(self.reader, "close", None)
        if close:
            close()

    def __enter__(self) -> "Package":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.cache
def _xar():
    from . import xar  # imported lazily: `inspect` of a Mach-O should not pay for it
    return xar


def _is_file(reader, path: str) -> bool:
    entry = reader.get(path)
    return entry is not None and entry.type == "file"


def _read_member(reader, path: str, max_size: int) -> bytes:
    return reader.read(path, max_size)  # the reader's errors name the archive and the member


def _component(reader, prefix: str, where: str) -> Component:
    info_bytes = _read_member(reader, prefix + "PackageInfo", MAX_XML_MEMBER)
    info = parse_package_info(info_bytes, where=f"{where}: {prefix}PackageInfo")
    has_payload = _is_file(reader, prefix + "Payload")
    fmt = "none"
    if has_payload:
        from .payload import payload_kind
        fmt = payload_kind(reader.iter_data(prefix + "Payload"))
    return Component(prefix, info, has_payload, _is_file(reader, prefix + "Scripts"),
                     _is_file(reader, prefix + "Bom"), fmt)


def open_package(path: str | os.PathLike) -> Package:
    """Open an installer package; FormatError when the xar is not one (no PackageInfo/Distribution)."""
    where = str(path)
    reader = _xar().XarReader(path)
    try:
        return _describe(reader, where)
    except BaseException:
        close = getattr(reader, "close", None)
        if close:
            close()
        raise


def _describe(reader, where: str) -> Package:
    signed = reader.signature is not None or reader.x_signature is not None
    if _is_file(reader, "Distribution"):
        dist = parse_distribution(_read_member(reader, "Distribution", MAX_XML_MEMBER),
                                  where=f"{where}: Distribution")
        prefixes = _product_prefixes(reader, dist, where)
        comps = [_component(reader, p, where) for p in prefixes]
        return Package(where, "product", comps, dist, signed, reader.checksum_alg, reader)
    if _is_file(reader, "PackageInfo"):
        return Package(where, "component", [_component(reader, "", where)], None, signed,
                       reader.checksum_alg, reader)
    raise FormatError("not an installer package: the xar archive has neither a Distribution nor a "
                      "PackageInfo", where=where, hint="give a component package or product archive (.pkg)")


def _product_prefixes(reader, dist: Distribution, where: str) -> list[str]:
    """Components in install order, then those the Distribution names but does not install, then any
    other NAME.pkg/ directory holding a PackageInfo."""
    out: list[str] = []
    paths = {ref.id: ref for ref in dist.components()}
    installed = [paths[i] for i in dist.install_order() if i in paths]
    for ref in installed + dist.components():
        prefix = ref.archive_prefix
        if prefix is None:
            continue  # a pkg-ref pointing outside the archive (file: URL); nothing to read here
        if "/" in prefix[:-1] or prefix in ("../", "./"):
            raise FormatError(f"pkg-ref {ref.id!r} points at {ref.path!r}, not a component in this archive",
                              where=where)
        if not _is_file(reader, prefix + "PackageInfo"):
            raise FormatError(f"pkg-ref {ref.id!r} names {ref.path!r} but the archive has no "
                              f"{prefix}PackageInfo", where=where)
        if prefix not in out:
            out.append(prefix)
    for entry in reader.entries:
        if entry.name == "PackageInfo" and entry.path.count("/") == 1:
            prefix = entry.path.rsplit("/", 1)[0] + "/"
            if prefix not in out:
                out.append(prefix)
    return out


# ---- reading a component's members ---------------------------------------------------------------

def iter_payload(pkg: Package, comp: Component) -> Iterator[tuple[object, object]]:
    """(CpioEntry, data reader) for each payload member, streamed."""
    if not comp.has_payload:
        return iter(())
    return _iter_archive(pkg, comp.member("Payload"))


def _iter_archive(pkg: Package, member: str):
    """Stream a cpio member; a decoding failure caused by damaged bytes is reported as the
    ChecksumError it really is (the xar checksum is only known once the member is read to the end)."""
    from ...errors import ChecksumError
    from .cpio import iter_cpio
    from .payload import open_payload
    where = f"{pkg.path}: {member}"
    try:
        yield from iter_cpio(open_payload(pkg.reader.iter_data(member), where=where), where=where)
    except ChecksumError:
        raise
    except FormatError:
        for _ in pkg.reader.iter_stored(member):  # raises ChecksumError if the stored bytes are damaged
            pass
        raise


def list_payload(pkg: Package, comp: Component) -> list:
    return [entry for entry, _ in iter_payload(pkg, comp)]


def list_scripts(pkg: Package, comp: Component) -> list:
    """CpioEntry list of the Scripts archive ([] when there is none)."""
    if not comp.has_scripts:
        return []
    return [entry for entry, _ in _iter_archive(pkg, comp.member("Scripts"))]


def script_names(pkg: Package, comp: Component) -> list[str]:
    """Files in the Scripts archive, as paths relative to it ("postinstall", "lib/helper.sh")."""
    return sorted(e.name[2:] if e.name.startswith("./") else e.name
                  for e in list_scripts(pkg, comp) if stat.S_ISREG(e.mode))


def bom_entries(pkg: Package, comp: Component) -> list:
    if not comp.has_bom:
        return []
    from .bom import read_bom
    member = comp.member("Bom")
    data = _read_member(pkg.reader, member, MAX_BOM)
    return read_bom(data, where=f"{pkg.path}: {member}")


# ---- building --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltComponent:
    path: Path
    info: PackageInfo
    sha256: str | None = None  # of the file written, when it was made in memory
    size: int | None = None
    data: bytes | None = None  # the package itself, when build_component(None, ...) wrote no file


def _payload_entries(root, where: str) -> list:
    from .tree import check_tree, scan_tree
    if isinstance(root, (str, os.PathLike)):
        return scan_tree(Path(root))
    return check_tree(list(root))


def _script_entries(scripts) -> list:
    """Scripts as a tree; preinstall/postinstall are forced executable (Installer runs them)."""
    from .tree import entries_from_mapping, scan_tree
    if isinstance(scripts, (str, os.PathLike)):
        entries = scan_tree(Path(scripts))
    else:
        mapping = {}
        for name, value in scripts.items():
            content, mode = value if isinstance(value, tuple) else (value, None)
            if mode is None:
                mode = SCRIPT_MODE if name.strip("./") in ("preinstall", "postinstall") else FILE_MODE
            mapping[name] = (content, mode)
        entries = entries_from_mapping(mapping)
    out = []
    for e in entries:
        if e.path in ("./preinstall", "./postinstall"):
            if e.kind != "file":
                raise BuildError("install script must be a regular file", where=e.path)
            if e.mode != SCRIPT_MODE:
                e = replace(e, mode=SCRIPT_MODE)
        out.append(e)
    return out


def _gz_archive(entries, tmpdir: str, name: str) -> Path:
    from .payload import write_payload
    path = Path(tmpdir) / name
    with open(path, "wb") as out:
        write_payload(out, entries, compression="gzip", checksums=False)
    return path


def _all_in_memory(*trees) -> bool:
    """Every file's content is held in memory (no file on disk to stream) and the total is small."""
    total = 0
    for tree in trees:
        for e in tree or ():
            if e.kind == "file" and e.data is None:
                return False
            total += e.size
    return total <= IN_MEMORY_MAX


def build_component(dest: str | os.PathLike | None, *, identifier: str, version: str,
                    root: str | os.PathLike | Sequence | None,
                    scripts: str | os.PathLike | Mapping[str, bytes | tuple[bytes, int]] | None = None,
                    install_location: str | None = "/", auth: str = "root",
                    postinstall_action: str = "none", compression: str = "gzip",
                    bundles: tuple = (), checksum_alg: str = "sha1", mode: int = 0o644) -> BuiltComponent:
    """Write a component package (pkgbuild's layout) to `dest`, atomically and reproducibly,
    with permission bits `mode` (0o600 for a package holding secrets).

    `root` is a directory or a list of TreeEntry (kept in its order, "." first); None makes a
    payload-free package shaped like `pkgbuild --nopayload`: its Bom and Payload hold only the "."
    directory, as Apple's own output does (fixture rtrouton-Fix_Zoom_Vulnerability.pkg), so tools
    that expect those members (receipts, `pkgutil --files`) keep working.

    dest None builds a small all-in-memory package without touching the disk and returns it as
    `data` (a sealed build's identity packages).
    """
    if not identifier or not version:
        raise BuildError("a component needs an identifier and a version", where=str(dest))
    if root is None:
        entries = _bare_root(repro.build_epoch())
        if scripts is None:
            raise BuildError("a payload-free component needs scripts", where=str(dest))
    else:
        entries = _payload_entries(root, str(dest))
    script_entries = _script_entries(scripts) if scripts is not None else None
    installs = scripts_for(e.path[2:] for e in script_entries or () if e.kind == "file")
    if script_entries is not None and not installs and root is None:
        raise BuildError("scripts hold neither preinstall nor postinstall", where=str(dest))
    from .payload import write_payload
    in_memory = _all_in_memory(entries, script_entries)
    if dest is None and not in_memory:
        raise BuildError("internal error: only a small in-memory package can be built without a file",
                         where=identifier)
    dest = Path(dest) if dest is not None else None

    def info_for(stats) -> PackageInfo:
        return PackageInfo(
            identifier=identifier, version=version, install_location=install_location, auth=auth,
            postinstall_action=postinstall_action, scripts=installs,
            bundles=tuple(bundles), payload_files=stats.files,
            install_kbytes=0 if root is None else stats.install_kbytes)

    if in_memory:
        # the same members, byte for byte, without temporary files: the package is the only file
        payload_bytes, bom, stats = _payload_members(tuple(entries), compression)
        members: dict[str, bytes | Path] = {"Bom": bom, "Payload": payload_bytes}
        if script_entries:
            scripts_gz = io.BytesIO()
            write_payload(scripts_gz, script_entries, compression="gzip", checksums=False)
            members["Scripts"] = scripts_gz.getvalue()
        info = info_for(stats)
        members["PackageInfo"] = render_package_info(info)
        with _xar().XarWriter(dest, checksum_alg=checksum_alg, in_memory=True, mode=mode) as w:
            _add_members(w, "", members)
        sha256, size = w.written or (None, None)
        return BuiltComponent(dest, info, sha256, size, w.data)
    import tempfile
    with tempfile.TemporaryDirectory(prefix=".fleetpkg-", dir=dest.parent) as tmp:
        payload_path = Path(tmp) / "Payload"
        with open(payload_path, "wb") as out:
            stats = write_payload(out, entries, compression=compression)
        bom = _bom_bytes(entries, stats)
        scripts_path = _gz_archive(script_entries, tmp, "Scripts") if script_entries else None
        info = info_for(stats)
        members = {"Bom": bom, "Payload": payload_path, "PackageInfo": render_package_info(info)}
        if scripts_path:
            members["Scripts"] = scripts_path
        with _xar().XarWriter(dest, checksum_alg=checksum_alg, mode=mode) as w:
            _add_members(w, "", members)
    return BuiltComponent(dest, info)


@functools.lru_cache(maxsize=8)
def _bare_root(epoch: int) -> tuple:
    """A payload-free package's tree: the "." folder alone."""
    from .tree import entries_from_mapping
    return tuple(entries_from_mapping({}, dir_mode=0o755, mtime=epoch))


def _payload_members(entries: tuple, compression: str):
    """(Payload, Bom, stats) of an in-memory tree; a payload-free package's (the "." folder
    alone, the same for every identity package of a build) is made once per process."""
    if len(entries) == 1 and entries[0].kind == "dir":
        return _empty_payload_members(entries, compression)
    return _make_payload_members(entries, compression)


def _make_payload_members(entries: tuple, compression: str):
    from .payload import write_payload
    payload = io.BytesIO()
    stats = write_payload(payload, list(entries), compression=compression)
    return payload.getvalue(), _bom_bytes(list(entries), stats), stats


_empty_payload_members = functools.lru_cache(maxsize=8)(_make_payload_members)


def _bom_bytes(entries, stats) -> bytes:
    from .bom import write_bom
    return write_bom(entries, checksums=stats.checksums)


def _add_members(w, prefix: str, members: Mapping[str, bytes | Path]) -> None:
    """Apple's encodings: Bom/PackageInfo zlib ("x-gzip"), Payload/Scripts stored as is."""
    for name in MEMBERS:
        if name not in members:
            continue
        value = members[name]
        compress = name in ("Bom", "PackageInfo")
        if isinstance(value, (bytes, bytearray)):
            w.add_bytes(prefix + name, bytes(value), compress=compress, mode=FILE_MODE)
        else:
            w.add_file(prefix + name, value, compress=compress)


@dataclass(frozen=True)
class EmbedComponent:
    """A component copied byte-for-byte from an open package (XarReader) at `prefix`."""

    reader: object
    prefix: str = ""
    name: str | None = None  # NAME.pkg directory in the product; default: prefix's or "component.pkg"


@dataclass(frozen=True)
class DirectoryComponent:
    """An expanded component (a directory holding Bom, PackageInfo, Payload, Scripts files)."""

    path: Path
    name: str


@dataclass(frozen=True)
class NewComponent:
    """A component to build from a payload tree and/or scripts (build_component's arguments)."""

    name: str  # NAME.pkg inside the product
    identifier: str
    version: str
    root: object = None  # directory, list of TreeEntry, or None (payload-free)
    scripts: object = None
    install_location: str | None = "/"


ComponentSource = EmbedComponent | DirectoryComponent | NewComponent


def _normalize(source) -> ComponentSource:
    """Also accept (reader, prefix) and (reader, prefix, name) tuples for embedding."""
    if isinstance(source, tuple) and len(source) in (2, 3):
        return EmbedComponent(*source)
    if isinstance(source, (EmbedComponent, DirectoryComponent, NewComponent)):
        return source
    raise BuildError(f"cannot use {type(source).__name__} as a product component")


def _component_name(source) -> str:
    name = source.name
    if name is None and isinstance(source, EmbedComponent) and source.prefix:
        name = source.prefix.rstrip("/")
    if not name:
        raise BuildError("an embedded component needs a NAME.pkg name")
    if not name.endswith(".pkg") or "/" in name or name in (".pkg",) or name.startswith("."):
        raise BuildError(f"component name {name!r} must look like NAME.pkg")
    return name


def build_product(dest: str | os.PathLike, *, distribution: Distribution | bytes,
                  components: Sequence[ComponentSource | tuple],
                  resources: Mapping[str, bytes] | None = None, checksum_alg: str = "sha1") -> Path:
    """Write a product archive: each component under NAME.pkg/, then Resources/, Distribution last.

    Every `#NAME.pkg` the Distribution references must be supplied and vice versa, since Installer
    otherwise fails late with "Package Authoring Error" (format doc §9 P8).
    """
    dest = Path(dest)
    components = [_normalize(c) for c in components]
    dist_bytes = distribution if isinstance(distribution, bytes) else render_distribution(distribution)
    dist = parse_distribution(dist_bytes, where=f"{dest}: Distribution")
    names = [_component_name(c) for c in components]
    if len(set(names)) != len(names):
        raise BuildError(f"component names repeat: {sorted(names)}", where=str(dest))
    referenced = {ref.archive_prefix[:-1] for ref in dist.components() if ref.archive_prefix}
    if referenced != set(names):
        raise BuildError(f"Distribution references {sorted(referenced)} but the components are "
                         f"{sorted(names)}", where=str(dest),
                         hint="every pkg-ref '#NAME.pkg' needs a component of that name")
    import tempfile
    readers = []  # opened on components built here; closed only once the writer is done
    with tempfile.TemporaryDirectory(prefix=".fleetpkg-", dir=dest.parent) as tmp:
        try:
            with _xar().XarWriter(dest, checksum_alg=checksum_alg) as w:
                for i, (source, name) in enumerate(zip(components, names)):
                    w.add_directory(name, mode=DIR_MODE)
                    if isinstance(source, NewComponent):
                        built = build_component(Path(tmp) / f"{i}.pkg", identifier=source.identifier,
                                                version=source.version, root=source.root,
                                                scripts=source.scripts, install_location=source.install_location)
                        readers.append(_xar().XarReader(built.path))
                        source = EmbedComponent(readers[-1], "", name)
                    if isinstance(source, EmbedComponent):
                        _embed(w, source, name)
                    else:
                        _add_directory_component(w, source, name)
                for rpath, data in sorted((resources or {}).items()):
                    from .tree import normalize_path
                    rel = normalize_path(rpath, where=rpath)[2:]
                    w.add_bytes(f"Resources/{rel}", data, compress=True, mode=FILE_MODE)
                w.add_bytes("Distribution", dist_bytes, compress=True, mode=FILE_MODE)
        finally:
            for reader in readers:
                reader.close()
    return dest


def _embed(w, source: EmbedComponent, name: str) -> None:
    reader, prefix = source.reader, source.prefix
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if not _is_file(reader, prefix + "PackageInfo"):
        raise BuildError(f"no {prefix}PackageInfo to embed", where=name)
    for member in MEMBERS:
        entry = reader.get(prefix + member)
        if entry is not None and entry.type == "file":
            w.add_stored(f"{name}/{member}", reader, entry)


def _add_directory_component(w, source: DirectoryComponent, name: str) -> None:
    folder = Path(source.path)
    if not (folder / "PackageInfo").is_file():
        raise BuildError("expanded component has no PackageInfo", where=str(folder))
    parse_package_info((folder / "PackageInfo").read_bytes(), where=str(folder / "PackageInfo"))
    members = {m: folder / m for m in MEMBERS if (folder / m).is_file()}
    _add_members(w, f"{name}/", members)
