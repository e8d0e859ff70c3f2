"""Facts about the vendor's 1E Client package, read from the package itself.

The wrapper's scripts need the conf path, the LaunchDaemon plist and its Label, the client
binary and its architectures. They are read from the vendor payload; the vendor guide's paths
are used only when the payload does not say, and every such fallback is reported in `notes`
so the build output can tell the admin.

A product archive's components are taken in the order its choices-outline installs them, with the
choices, constraints and restart needs the wrapper carries over (vendorchoices.py).
"""

from __future__ import annotations

import plistlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..errors import BuildError, FleetpkgError, FormatError
from ..scratch import scratch
from ..formats.pkg.conclusion import NONE, from_postinstall_action, strongest, words
from .intake import VendorSource

GUIDE_CONF = "/Library/Application Support/1E/Client/1E.Client.conf"
GUIDE_LABEL = "com.1e.pkg.1E.Client"
GUIDE_PLIST = "/Library/LaunchDaemons/com.1e.pkg.1E.Client.plist"
GUIDE_BINARY = "/Library/Application Support/1E/Client/1E.Client"
CLIENT_IDENTIFIER = "com.1e.pkg.1E.Client"
BINARY_NAME = "1E.Client"
CONF_NAME = "1E.Client.conf"
MAX_SMALL_FILE = 4 << 20  # conf and plist files are a few KB
MAX_BINARY = 512 << 20


@dataclass(frozen=True)
class VendorComponent:
    identifier: str
    version: str
    prefix: str  # "" for a component package, "name.pkg/" inside a product archive
    install_location: str
    install_kbytes: int
    payload_files: int
    auth: str | None
    ref_id: str = ""  # the vendor's pkg-ref id for it (its choices name it); the identifier by default
    on_conclusion: str = NONE  # strongest of its pkg-refs' onConclusion and its postinstall-action
    ref_attributes: tuple[tuple[str, str], ...] = ()  # carried onto the wrapper's pkg-ref (active...)
    ref_children: tuple[str, ...] = ()  # must-close, bundle-version, relocate, verbatim


@dataclass(frozen=True)
class VendorPackage:
    source: VendorSource
    kind: str  # "component" | "product"
    components: tuple[VendorComponent, ...]
    distribution: object | None  # builder.formats.pkg.product.Distribution of a vendor product archive
    identifier: str
    version: str
    conf_path: str
    default_conf: bytes | None
    daemon_plist: str
    daemon_label: str
    binary_path: str
    architectures: tuple[str, ...]
    team_id: str | None
    code_identifier: str | None
    is_client: bool
    notes: tuple[str, ...] = field(default=())
    outline: tuple = ()  # choices-outline lines the wrapper splices between prepare and configure
    choices: tuple = ()  # the vendor choices those lines name (builder.formats.pkg.product.Choice)

    @property
    def needs_rosetta(self) -> bool:
        return "arm64" not in self.architectures and "arm64e" not in self.architectures

    @property
    def on_conclusion(self) -> str:
        """What Installer asks of the Mac after installing the vendor's components (RequireRestart...)."""
        return strongest(c.on_conclusion for c in self.components)

    def summary(self) -> str:
        """"com.1e.pkg.1E.Client 5.1.0.12 (x86_64; needs Rosetta 2; restart required after installing)"."""
        facts = [", ".join(self.architectures)] + (["needs Rosetta 2"] if self.needs_rosetta else [])
        if self.on_conclusion != NONE:
            facts.append(f"{words(self.on_conclusion)} after installing")
        return f"{self.identifier} {self.version} ({'; '.join(facts)})"


def _join(install_location: str, cpio_name: str) -> str:
    rel = PurePosixPath(cpio_name.lstrip("."))
    return str(PurePosixPath(install_location or "/") / str(rel).lstrip("/"))


def _read_payload_facts(reader, comp: VendorComponent, found: dict, scratch: Path) -> None:
    """Stream one component's payload once, keeping only the few files we need."""
    from ..formats.pkg import cpio, payload

    member = comp.prefix + "Payload"
    entry = reader.get(member)
    if entry is None or entry.data is None:
        return
    stream = payload.open_payload(reader.iter_data(entry))
    for item, data in cpio.iter_cpio(stream):
        if not _is_regular(item.mode):
            continue
        path = _join(comp.install_location, item.name)
        name = PurePosixPath(path).name
        if name == CONF_NAME and "conf" not in found:
            found["conf"] = (path, _take(data, item.size, MAX_SMALL_FILE, path))
        elif path.startswith("/Library/LaunchDaemons/") and name.endswith(".plist"):
            found.setdefault("plists", []).append((path, _take(data, item.size, MAX_SMALL_FILE, path)))
        elif name == BINARY_NAME and "binary" not in found:
            out = scratch / f"binary-{len(found)}"
            with out.open("wb") as fh:
                for chunk in _chunks(data, item.size, MAX_BINARY, path):
                    fh.write(chunk)
            found["binary"] = (path, out, comp.identifier)


def _is_regular(mode: int) -> bool:
    return (mode & 0o170000) == 0o100000


def _chunks(data, size: int, limit: int, path: str):
    if size > limit:
        raise FormatError(f"{path} is implausibly large ({size} bytes)", where="vendor payload")
    if callable(data):
        data = data()
    if isinstance(data, (bytes, bytearray)):
        yield bytes(data)
        return
    remaining = size
    while remaining > 0:
        chunk = data.read(min(remaining, 1 << 20))
        if not chunk:
            raise FormatError(f"{path} is truncated", where="vendor payload")
        remaining -= len(chunk)
        yield chunk


def _take(data, size: int, limit: int, path: str) -> bytes:
    return b"".join(_chunks(data, size, limit, path))


def _daemon_from_plists(plists: list[tuple[str, bytes]], binary_path: str | None) -> tuple[str, str] | None:
    """(plist path, Label) of the LaunchDaemon that runs the client."""
    candidates = []
    for path, raw in plists:
        try:
            doc = plistlib.loads(raw)
        except Exception:
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("Label"), str):
            continue
        program = doc.get("Program") or (doc.get("ProgramArguments") or [None])[0]
        score = 2 if binary_path and program == binary_path else 1 if "1e" in doc["Label"].lower() else 0
        candidates.append((score, path, doc["Label"]))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    if candidates and candidates[0][0] > 0:
        return candidates[0][1], candidates[0][2]
    return None


def inspect_vendor(source: VendorSource, *, allow_foreign: bool = False) -> VendorPackage:
    from ..formats.macho import read_macho
    from ..formats.pkg.component import parse_package_info
    from ..formats.pkg.product import parse_distribution
    from ..formats.pkg.xar import XarReader
    from .vendorchoices import check_location, component_choices, product_choices

    where = str(source.package)
    try:
        reader = XarReader(source.package)
    except FleetpkgError as exc:
        raise type(exc)(exc.message, where=where, hint=exc.hint) from None
    with reader, scratch("vendor") as tmp:
        names = {e.path for e in reader.entries}
        distribution = None
        notes: list[str] = []
        infos: dict = {}
        if "Distribution" in names:
            kind = "product"
            distribution = parse_distribution(reader.read("Distribution"), where=f"{where}: Distribution")
            plan = product_choices(distribution, lambda prefix: prefix + "PackageInfo" in names,
                                   f"{where}: Distribution")
            if not plan.refs:
                raise FormatError("product archive installs no component packages", where=where)
            left_out = sorted({n.split("/", 1)[0] for n in names if n.endswith(".pkg/PackageInfo")
                               and n.count("/") == 1} - {r.prefix.rstrip("/") for r in plan.refs})
            if left_out:
                notes.append(f"the vendor's Distribution never installs {', '.join(left_out)}: the wrapper "
                             f"leaves {'it' if len(left_out) == 1 else 'them'} out, as Installer would")
        elif "PackageInfo" in names:
            kind = "component"
            infos[""] = parse_package_info(reader.read("PackageInfo"), where=f"{where}: PackageInfo")
            plan = component_choices(infos[""].identifier, infos[""].postinstall_action)
        else:
            raise FormatError("not an installer package (no PackageInfo or Distribution)", where=where,
                              hint="point [vendor] package at the 1E Client .pkg")
        components = []
        for ref in plan.refs:
            info = infos.get(ref.prefix) or parse_package_info(reader.read(ref.prefix + "PackageInfo"),
                                                               where=f"{where}: {ref.prefix}PackageInfo")
            check_location(ref, info.install_location, f"{where}: Distribution")
            components.append(VendorComponent(
                identifier=info.identifier, version=info.version, prefix=ref.prefix,
                install_location=info.install_location or "/", install_kbytes=info.install_kbytes or 0,
                payload_files=info.payload_files or 0, auth=info.auth, ref_id=ref.id,
                on_conclusion=strongest((ref.on_conclusion, from_postinstall_action(info.postinstall_action))),
                ref_attributes=ref.attributes, ref_children=ref.children))
        found: dict = {}
        for comp in components:
            _read_payload_facts(reader, comp, found, Path(tmp))
        binary_path, arches, team, code_id, binary_owner = GUIDE_BINARY, ("x86_64",), None, None, None
        if "binary" in found:
            binary_path, binary_file, binary_owner = found["binary"]
            info = read_macho(binary_file)
            arches, team, code_id = tuple(info.architectures), info.team_id, info.identifier
        else:
            notes.append(f"no {BINARY_NAME} binary in the payload: using the vendor guide's path "
                         f"{GUIDE_BINARY!r} and assuming it is Intel-only (Rosetta 2 will be installed)")
        if "conf" in found:
            conf_path, default_conf = found["conf"]
        else:
            conf_path, default_conf = GUIDE_CONF, None
            notes.append(f"no {CONF_NAME} in the payload: using the vendor guide's path {GUIDE_CONF!r}")
        daemon = _daemon_from_plists(found.get("plists", []), binary_path if "binary" in found else None)
        if daemon:
            plist_path, label = daemon
        else:
            plist_path, label = GUIDE_PLIST, GUIDE_LABEL
            notes.append(f"no LaunchDaemon plist for the client in the payload: using the vendor guide's "
                         f"{GUIDE_PLIST!r} with Label {GUIDE_LABEL!r}")
    ids = [c.identifier for c in components]
    primary = next((c for c in components if c.identifier == CLIENT_IDENTIFIER), None) or \
        next((c for c in components if c.identifier == binary_owner), None) or components[0]
    is_client = CLIENT_IDENTIFIER in ids or "binary" in found
    if not is_client and not allow_foreign:
        raise BuildError(f"not a 1E Client package (identifiers: {', '.join(ids)}; no {BINARY_NAME} binary)",
                         where=where, hint="use the vendor's 1E Client .pkg, or pass --allow-foreign-vendor")
    return VendorPackage(
        source=source, kind=kind, components=tuple(components), distribution=distribution,
        identifier=primary.identifier, version=primary.version, conf_path=conf_path,
        default_conf=default_conf, daemon_plist=plist_path, daemon_label=label, binary_path=binary_path,
        architectures=arches, team_id=team, code_identifier=code_id, is_client=is_client, notes=tuple(notes),
        outline=plan.outline, choices=plan.choices)
