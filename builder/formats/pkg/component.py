"""PackageInfo: the XML that names a component package (identifier, version, where it installs).

Parsed into plain data and rendered back in pkgbuild's shape (flat-package-format.md §3.2): the
same attribute order, `relocatable="false"` with an empty `<relocate/>` for what we build (so
Installer never moves our payload onto another copy of a bundle), and every element or attribute
we do not model kept as written so a vendor's PackageInfo survives a parse/render round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import FormatError
from . import xmlsafe

SCRIPT_NAMES = ("preinstall", "postinstall")
# bundle lists pkgbuild always writes, in its order; each holds <bundle id=".."/> children
BUNDLE_LISTS = ("bundle-version", "upgrade-bundle", "update-bundle", "atomic-update-bundle",
                "strict-identifier", "relocate")
# pkgbuild's attribute order; anything else follows in source order
_ATTR_ORDER = ("overwrite-permissions", "relocatable", "identifier", "postinstall-action", "version",
               "format-version", "generator-version", "install-location", "auth")


@dataclass(frozen=True)
class Bundle:
    """A `<bundle>` element: attributes in order (id, path, CFBundle...) and nested bundles."""

    attributes: tuple[tuple[str, str], ...]
    children: tuple["Bundle", ...] = ()

    @property
    def id(self) -> str | None:
        return dict(self.attributes).get("id")


@dataclass(frozen=True)
class PackageInfo:
    identifier: str
    version: str
    install_location: str | None = "/"
    auth: str | None = "root"
    format_version: str | None = "2"
    relocatable: bool | None = False
    overwrite_permissions: bool | None = True
    postinstall_action: str | None = "none"
    generator_version: str | None = None
    scripts: tuple[tuple[str, str], ...] = ()  # (("preinstall", "./preinstall"), ...)
    bundles: tuple[Bundle, ...] = ()
    bundle_lists: tuple[tuple[str, tuple[str, ...]], ...] = tuple((n, ()) for n in BUNDLE_LISTS)
    payload_files: int | None = 0  # None: no <payload> element
    install_kbytes: int | None = 0
    extra_attributes: tuple[tuple[str, str], ...] = ()  # e.g. preserve-xattr, followSymLinks
    extra_elements: tuple[str, ...] = field(default=())  # unknown children, verbatim XML
    xml_standalone: bool | None = None  # pkgbuild of 2015 wrote standalone="no"; today's writes none

    @property
    def script_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.scripts)


def _bool(value: str | None, name: str, where: str) -> bool | None:
    if value is None:
        return None
    if value in ("true", "false"):
        return value == "true"
    raise FormatError(f"PackageInfo attribute {name}={value!r} is not true/false", where=where)


def _bundle(el) -> Bundle:
    return Bundle(tuple(el.attrib.items()), tuple(_bundle(c) for c in el if c.tag == "bundle"))


def parse_package_info(data: bytes, *, where: str = "PackageInfo") -> PackageInfo:
    doc = xmlsafe.parse(data, where=where, what="PackageInfo")
    root = doc.root
    if root.tag != "pkg-info":
        raise FormatError(f"PackageInfo root element is <{root.tag}>, expected <pkg-info>", where=where)
    a = dict(root.attrib)
    for required in ("identifier", "version"):
        if not a.get(required):
            raise FormatError(f"PackageInfo has no {required} attribute", where=where)
    known = set(_ATTR_ORDER)
    scripts: list[tuple[str, str]] = []
    bundles: list[Bundle] = []
    lists: dict[str, tuple[str, ...]] = {}
    extra: list[str] = []
    payload_files = install_kbytes = None
    for child in root:
        if child.tag == "payload":
            payload_files = xmlsafe.whole_number(child.get("numberOfFiles"), "PackageInfo <payload numberOfFiles>", where)
            install_kbytes = xmlsafe.whole_number(child.get("installKBytes"), "PackageInfo <payload installKBytes>", where)
        elif child.tag == "scripts":
            for s in child:
                if s.tag in SCRIPT_NAMES and s.get("file"):
                    scripts.append((s.tag, s.get("file")))
                else:
                    raise FormatError(f"PackageInfo <scripts> holds an unknown <{s.tag}>", where=where)
        elif child.tag == "bundle":
            bundles.append(_bundle(child))
        elif (child.tag in BUNDLE_LISTS and child.tag not in lists
              and all(b.tag == "bundle" and set(b.attrib) == {"id"} and len(b) == 0 for b in child)):
            lists[child.tag] = tuple(b.get("id") for b in child)
        else:
            extra.append(doc.text_of(child))
    order = {n: i for i, n in enumerate(SCRIPT_NAMES)}
    return PackageInfo(
        identifier=a["identifier"],
        version=a["version"],
        install_location=a.get("install-location"),
        auth=a.get("auth"),
        format_version=a.get("format-version"),
        relocatable=_bool(a.get("relocatable"), "relocatable", where),
        overwrite_permissions=_bool(a.get("overwrite-permissions"), "overwrite-permissions", where),
        postinstall_action=a.get("postinstall-action"),
        generator_version=a.get("generator-version"),
        scripts=tuple(sorted(scripts, key=lambda s: order[s[0]])),
        bundles=tuple(bundles),
        bundle_lists=tuple(lists.items()),
        payload_files=payload_files,
        install_kbytes=install_kbytes,
        extra_attributes=tuple((k, v) for k, v in root.attrib.items() if k not in known),
        extra_elements=tuple(extra),
        xml_standalone=doc.standalone,
    )


def _tf(value: bool | None) -> str | None:
    return None if value is None else ("true" if value else "false")


def _render_bundle(b: Bundle, indent: str) -> list[str]:
    if not b.children:
        return [f"{indent}<bundle{xmlsafe.attrs(b.attributes)}/>"]
    lines = [f"{indent}<bundle{xmlsafe.attrs(b.attributes)}>"]
    for c in b.children:
        lines += _render_bundle(c, indent + "    ")
    return lines + [f"{indent}</bundle>"]


def render_package_info(info: PackageInfo) -> bytes:
    """pkgbuild-shaped PackageInfo bytes; the same PackageInfo always gives the same bytes."""
    known = (
        ("overwrite-permissions", _tf(info.overwrite_permissions)),
        ("relocatable", _tf(info.relocatable)),
        ("identifier", info.identifier),
        ("postinstall-action", info.postinstall_action),
        ("version", info.version),
        ("format-version", info.format_version),
        ("generator-version", info.generator_version),
        ("install-location", info.install_location),
        ("auth", info.auth),
    )
    standalone = "" if info.xml_standalone is None else f' standalone="{"yes" if info.xml_standalone else "no"}"'
    lines = [f'<?xml version="1.0" encoding="utf-8"{standalone}?>',
             f"<pkg-info{xmlsafe.attrs(known + info.extra_attributes)}>"]
    if info.payload_files is not None or info.install_kbytes is not None:
        payload = (("numberOfFiles", _num(info.payload_files)), ("installKBytes", _num(info.install_kbytes)))
        lines.append(f"    <payload{xmlsafe.attrs(payload)}/>")
    for b in info.bundles:
        lines += _render_bundle(b, "    ")
    for name, ids in info.bundle_lists:
        if ids:
            lines.append(f"    <{name}>")
            lines += [f'        <bundle id="{xmlsafe.attr(i)}"/>' for i in ids]
            lines.append(f"    </{name}>")
        else:
            lines.append(f"    <{name}/>")
    if info.scripts:
        lines.append("    <scripts>")
        lines += [f'        <{name} file="{xmlsafe.attr(path)}"/>' for name, path in info.scripts]
        lines.append("    </scripts>")
    lines += [f"    {x}" for x in info.extra_elements]
    lines.append("</pkg-info>")
    return "\n".join(lines).encode("utf-8")


def _num(value: int | None) -> str | None:
    return None if value is None else str(value)


def scripts_for(names) -> tuple[tuple[str, str], ...]:
    """The <scripts> entries for the install-time scripts present among `names`."""
    present = set(names)
    return tuple((n, f"./{n}") for n in SCRIPT_NAMES if n in present)
