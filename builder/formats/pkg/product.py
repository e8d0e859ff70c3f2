"""Distribution: the XML that makes a product archive (which components, in what order, on which OS).

Parsed into plain data and rendered in productbuild's shape (flat-package-format.md §4.2). The
parts a wrapper cannot understand but must not change (volume/installation checks, JavaScript,
per-pkg-ref children such as must-close, UI resources) are kept as their exact source text, so a
vendor's Distribution can be merged into ours without re-escaping its scripts.

Install order is the choices-outline's: Installer walks its lines depth first, a line's own choice
before the lines inside it, and installs each selected choice's pkg-refs in order, each id once
(format doc §4.3). A pkg-ref id may be described by several elements (top level or inside a
choice); their onConclusion values add up to the strongest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from ...errors import FormatError
from . import conclusion, xmlsafe


@dataclass(frozen=True)
class PkgRef:
    id: str
    version: str | None = None
    install_kbytes: int | None = None
    auth: str | None = None
    on_conclusion: str | None = None
    path: str | None = None  # "#name.pkg" for a component inside this archive
    extra_attributes: tuple[tuple[str, str], ...] = ()
    children: tuple[str, ...] = ()  # verbatim XML (bundle-version, must-close, relocate...)

    @property
    def archive_prefix(self) -> str | None:
        """"name.pkg/" when the path points inside this archive, else None."""
        if self.path and self.path.startswith("#") and len(self.path) > 1:
            return unquote(self.path[1:]) + "/"  # a URL fragment: productbuild escapes spaces as %20
        return None


@dataclass(frozen=True)
class Choice:
    id: str
    attributes: tuple[tuple[str, str], ...] = ()  # title, visible, customLocation... in order
    pkg_refs: tuple[PkgRef, ...] = ()  # the <pkg-ref> elements it installs, in order (mostly id only)
    children: tuple[str, ...] = ()  # other children, verbatim

    @property
    def attribute_map(self) -> dict[str, str]:
        return dict(self.attributes)


@dataclass(frozen=True)
class Line:
    choice: str
    children: tuple["Line", ...] = ()


@dataclass(frozen=True)
class OsVersion:
    min: str | None = None
    before: str | None = None


@dataclass(frozen=True)
class Distribution:
    title: str | None = None
    min_spec_version: str = "1"
    product: tuple[tuple[str, str], ...] = ()  # <product id=".." version=".."/> attributes
    options: tuple[tuple[str, str], ...] = ()  # customize, require-scripts, hostArchitectures...
    domains: tuple[tuple[str, str], ...] | None = None
    allowed_os_versions: tuple[OsVersion, ...] = ()  # top-level <allowed-os-versions> only
    volume_check: str | None = None  # verbatim <volume-check> element
    installation_check: str | None = None  # verbatim <installation-check> element
    scripts: tuple[str, ...] = ()  # verbatim <script> elements
    choices_outline: tuple[Line, ...] = ()
    choices: tuple[Choice, ...] = ()
    pkg_refs: tuple[PkgRef, ...] = ()  # document order; an id may appear more than once
    extra_elements: tuple[str, ...] = ()  # title resources, background, license... verbatim
    root_tag: str = "installer-gui-script"
    root_extra_attributes: tuple[tuple[str, str], ...] = ()

    @property
    def option_map(self) -> dict[str, str]:
        return dict(self.options)

    def all_pkg_refs(self) -> list[PkgRef]:
        """Every <pkg-ref> element: the top-level ones in document order, then those inside choices."""
        return list(self.pkg_refs) + [ref for choice in self.choices for ref in choice.pkg_refs]

    def components(self) -> list[PkgRef]:
        """The pkg-refs that carry a path, in document order (top level first), one per id."""
        seen: set[str] = set()
        out = []
        for ref in self.all_pkg_refs():
            if ref.path and ref.id not in seen:
                seen.add(ref.id)
                out.append(ref)
        return out

    def choice(self, choice_id: str) -> Choice | None:
        return next((c for c in self.choices if c.id == choice_id), None)

    def install_order(self) -> list[str]:
        """pkg-ref ids in the order Installer installs them (the choices-outline walked depth first);
        without an outline, the pkg-refs that carry a path, in document order."""
        if not self.choices_outline:
            return [ref.id for ref in self.components()]
        order: dict[str, None] = {}

        def walk(lines: tuple[Line, ...]) -> None:
            for line in lines:
                choice = self.choice(line.choice)
                for ref in choice.pkg_refs if choice else ():
                    order.setdefault(ref.id)
                walk(line.children)

        walk(self.choices_outline)
        return list(order)

    def on_conclusion(self, pkg_id: str) -> str:
        """The strongest onConclusion any pkg-ref element of this id declares (None when none does)."""
        return conclusion.strongest(ref.on_conclusion for ref in self.all_pkg_refs() if ref.id == pkg_id)

    def os_requirements(self) -> tuple[OsVersion, ...]:
        """Allowed OS versions wherever they are declared (top level or inside volume-check)."""
        found = list(self.allowed_os_versions)
        if self.volume_check:
            inner = xmlsafe.parse(self.volume_check.encode("utf-8"), where="Distribution",
                                  what="volume-check").root
            found += [OsVersion(v.get("min"), v.get("before")) for v in inner.iter("os-version")]
        return tuple(found)


def _line(el, where: str, depth: int = 0) -> Line:
    if el.tag != "line" or not el.get("choice"):
        raise FormatError(f"Distribution choices-outline holds <{el.tag}> without a choice", where=where)
    return Line(el.get("choice"), tuple(_line(c, where, depth + 1) for c in el))


_PKG_REF_ATTRS = {"id": "id", "version": "version", "installKBytes": "install_kbytes", "auth": "auth",
                  "onConclusion": "on_conclusion"}


def _pkg_ref(doc, el, where: str) -> PkgRef:
    if not el.get("id"):
        raise FormatError("Distribution has a <pkg-ref> without an id", where=where)
    a = dict(el.attrib)
    return PkgRef(
        id=a["id"], version=a.get("version"),
        install_kbytes=xmlsafe.whole_number(a.get("installKBytes"), "Distribution pkg-ref installKBytes", where),
        auth=a.get("auth"), on_conclusion=a.get("onConclusion"), path=(el.text or "").strip() or None,
        extra_attributes=tuple((k, v) for k, v in a.items() if k not in _PKG_REF_ATTRS),
        children=tuple(doc.text_of(c) for c in el))


def parse_distribution(data: bytes, *, where: str = "Distribution") -> Distribution:
    doc = xmlsafe.parse(data, where=where, what="Distribution")
    root = doc.root
    if root.tag not in ("installer-gui-script", "installer-script"):
        raise FormatError(f"Distribution root element is <{root.tag}>, expected <installer-gui-script>",
                          where=where)
    fields: dict = {"root_tag": root.tag, "min_spec_version": root.get("minSpecVersion", "1"),
                    "root_extra_attributes": tuple((k, v) for k, v in root.attrib.items()
                                                   if k != "minSpecVersion")}
    pkg_refs, choices, scripts, extra, os_versions = [], [], [], [], []
    for child in root:
        tag = child.tag
        if tag == "title" and "title" not in fields and len(child) == 0:
            fields["title"] = child.text or ""
        elif tag == "options" and "options" not in fields and len(child) == 0:
            fields["options"] = tuple(child.attrib.items())
        elif tag == "domains" and "domains" not in fields and len(child) == 0:
            fields["domains"] = tuple(child.attrib.items())
        elif tag == "product" and "product" not in fields and len(child) == 0:
            fields["product"] = tuple(child.attrib.items())
        elif tag == "allowed-os-versions":
            for v in child:
                if v.tag != "os-version":
                    raise FormatError(f"Distribution allowed-os-versions holds <{v.tag}>", where=where)
                os_versions.append(OsVersion(v.get("min"), v.get("before")))
        elif tag == "volume-check" and "volume_check" not in fields:
            fields["volume_check"] = doc.text_of(child)
        elif tag == "installation-check" and "installation_check" not in fields:
            fields["installation_check"] = doc.text_of(child)
        elif tag == "script":
            scripts.append(doc.text_of(child))
        elif tag == "choices-outline" and "choices_outline" not in fields:
            fields["choices_outline"] = tuple(_line(c, where) for c in child)
        elif tag == "choice":
            if not child.get("id"):
                raise FormatError("Distribution has a <choice> without an id", where=where)
            refs = tuple(_pkg_ref(doc, c, where) for c in child if c.tag == "pkg-ref")
            others = tuple(doc.text_of(c) for c in child if c.tag != "pkg-ref")
            choices.append(Choice(child.get("id"), tuple((k, v) for k, v in child.attrib.items() if k != "id"),
                                  refs, others))
        elif tag == "pkg-ref":
            pkg_refs.append(_pkg_ref(doc, child, where))
        else:
            extra.append(doc.text_of(child))
    fields.update(pkg_refs=tuple(pkg_refs), choices=tuple(choices), scripts=tuple(scripts),
                  extra_elements=tuple(extra), allowed_os_versions=tuple(os_versions))
    return Distribution(**fields)


def _render_line(line: Line, indent: str) -> list[str]:
    if not line.children:
        return [f'{indent}<line choice="{xmlsafe.attr(line.choice)}"/>']
    out = [f'{indent}<line choice="{xmlsafe.attr(line.choice)}">']
    for c in line.children:
        out += _render_line(c, indent + "    ")
    return out + [f"{indent}</line>"]


def _render_pkg_ref(ref: PkgRef, indent: str = "    ") -> list[str]:
    pairs = (("id", ref.id), ("version", ref.version),
             ("onConclusion", ref.on_conclusion),
             ("installKBytes", None if ref.install_kbytes is None else str(ref.install_kbytes)),
             ("auth", ref.auth)) + ref.extra_attributes
    head = f"{indent}<pkg-ref{xmlsafe.attrs(pairs)}"
    if ref.children:
        lines = [head + ">"] + [f"{indent}    {c}" for c in ref.children]
        if ref.path:
            lines.append(f"{indent}    {xmlsafe.text(ref.path)}")
        return lines + [f"{indent}</pkg-ref>"]
    if ref.path:
        return [f"{head}>{xmlsafe.text(ref.path)}</pkg-ref>"]
    return [head + "/>"]


def render_distribution(dist: Distribution) -> bytes:
    """productbuild-shaped Distribution bytes; the same Distribution always gives the same bytes."""
    root_attrs = (("minSpecVersion", dist.min_spec_version),) + dist.root_extra_attributes
    lines = ['<?xml version="1.0" encoding="utf-8"?>', f"<{dist.root_tag}{xmlsafe.attrs(root_attrs)}>"]
    if dist.title is not None:
        lines.append(f"    <title>{xmlsafe.text(dist.title)}</title>")
    if dist.options:
        lines.append(f"    <options{xmlsafe.attrs(dist.options)}/>")
    if dist.domains is not None:
        lines.append(f"    <domains{xmlsafe.attrs(dist.domains)}/>")
    lines += [f"    {x}" for x in dist.extra_elements]
    if dist.allowed_os_versions:
        lines.append("    <allowed-os-versions>")
        lines += [f"        <os-version{xmlsafe.attrs((('min', v.min), ('before', v.before)))}/>"
                  for v in dist.allowed_os_versions]
        lines.append("    </allowed-os-versions>")
    for verbatim in (dist.installation_check, dist.volume_check, *dist.scripts):
        if verbatim:
            lines.append(f"    {verbatim}")
    if dist.choices_outline:
        lines.append("    <choices-outline>")
        for line in dist.choices_outline:
            lines += _render_line(line, "        ")
        lines.append("    </choices-outline>")
    for choice in dist.choices:
        head = f"    <choice{xmlsafe.attrs((('id', choice.id),) + choice.attributes)}"
        if not choice.pkg_refs and not choice.children:
            lines.append(head + "/>")
            continue
        lines.append(head + ">")
        for ref in choice.pkg_refs:
            lines += _render_pkg_ref(ref, "        ")
        lines += [f"        {c}" for c in choice.children]
        lines.append("    </choice>")
    for ref in dist.pkg_refs:
        lines += _render_pkg_ref(ref)
    if dist.product:
        lines.append(f"    <product{xmlsafe.attrs(dist.product)}/>")
    lines.append(f"</{dist.root_tag}>")
    return "\n".join(lines).encode("utf-8")


def describe_distribution(dist: Distribution) -> dict:
    """The JSON-friendly summary `fleetpkg inspect` prints."""
    order = dist.install_order()
    return {
        "title": dist.title,
        "product": dict(dist.product) or None,
        "options": dict(dist.options),
        "host_architectures": [a for a in dist.option_map.get("hostArchitectures", "").split(",") if a],
        "allowed_os_versions": [{"min": v.min, "before": v.before} for v in dist.os_requirements()],
        "choices_outline": [_outline_dict(line) for line in dist.choices_outline],
        "choices": [{"id": c.id, "pkg_refs": [r.id for r in c.pkg_refs], **dict(c.attributes)} for c in dist.choices],
        "pkg_refs": [{"id": r.id, "version": r.version, "install_kbytes": r.install_kbytes, "auth": r.auth,
                      "on_conclusion": r.on_conclusion, "path": r.path} for r in dist.components()],
        "install_order": [{"id": i, "on_conclusion": dist.on_conclusion(i)} for i in order],
        "on_conclusion": conclusion.strongest(dist.on_conclusion(i) for i in order),
        "has_volume_check": dist.volume_check is not None,
        "has_installation_check": dist.installation_check is not None,
        "scripts": len(dist.scripts),
    }


def _outline_dict(line: Line) -> dict:
    return {"choice": line.choice, "children": [_outline_dict(c) for c in line.children]}
