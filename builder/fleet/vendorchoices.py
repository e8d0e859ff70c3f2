"""The vendor's part of the wrapper's Distribution: its install order, its choices, its restart needs.

The wrapper installs prepare, then the vendor's components exactly as the vendor's own
choices-outline installs them, then configure. The vendor's outline lines are spliced between ours
(nesting kept) and the choices they name are carried whole, under their own ids:

- carried: every attribute of those choices (selected, enabled, visible, start_selected,
  start_enabled, start_visible, customLocation, title...) and their pkg-ref elements with all their
  attributes (active...). JavaScript in them keeps working because the vendor's <script>,
  installation-check and volume-check travel with them, and keeping the ids keeps
  `choices.<id>` references valid. On the wrapper's own pkg-ref of each vendor component:
  onConclusion (the strongest of every pkg-ref element of that id and of the component's
  PackageInfo postinstall-action), the other attributes of the vendor's top-level pkg-refs
  (active, packageIdentifier...) and their children (must-close, bundle-version, relocate).
- dropped: the UI-only attributes of the vendor's root line's choice (productbuild's "default",
  whose title and versStr would clash with the wrapper's own root choice), and the choices and
  components the outline never reaches (Installer would not install them either).
- refused, in one line naming the element, attribute and choice: an onConclusionScript (the restart
  need would be decided by JavaScript at install time, but Munki and DEPLOY.md need it now), an
  onConclusion value Apple does not define, an install-affecting attribute or pkg-ref on the vendor's
  root choice, a line naming an undefined choice, a choice defined twice, a pkg-ref with no component
  inside the archive (no path, a file: URL, a missing NAME.pkg/), two pkg-ref ids for one component,
  and a customLocation that moves a component away from its PackageInfo install-location (the wrapper
  reads the client's paths from the payload at that location).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Callable, NoReturn, Sequence

from ..errors import UnsupportedError
from ..formats.pkg import conclusion
from ..formats.pkg.product import Choice, Distribution, Line, PkgRef

ROOT = "default"  # the wrapper's own root choice (productbuild's name, which vendors use too)
UI_ONLY = frozenset({"title", "description", "description-mime-type", "tooltip", "versStr", "visible",
                     "start_visible"})
_HINT = ("ask the vendor for a package without it, or expand the package (pkgutil --expand), change its "
         "Distribution and flatten it again (pkgutil --flatten)")


@dataclass(frozen=True)
class CarriedRef:
    """One vendor component as the wrapper's Distribution names it."""

    id: str  # the vendor's pkg-ref id (its choices refer to it)
    prefix: str  # "NAME.pkg/" in the vendor archive, "" for a component package
    on_conclusion: str  # strongest onConclusion of the vendor's pkg-ref elements of this id
    attributes: tuple[tuple[str, str], ...] = ()  # other attributes of its top-level pkg-refs
    children: tuple[str, ...] = ()  # verbatim children of the first top-level pkg-ref that has some
    choice: str = ""  # id of the (first) choice installing it
    location: str | None = None  # that choice's customLocation


@dataclass(frozen=True)
class VendorChoices:
    outline: tuple[Line, ...]  # lines to splice between the wrapper's prepare and configure
    choices: tuple[Choice, ...]  # the choices those lines name, in outline order
    refs: tuple[CarriedRef, ...]  # install order


def component_choices(identifier: str, postinstall_action: str | None) -> VendorChoices:
    """A component package: one hidden choice installing it (productbuild's shape)."""
    return VendorChoices((Line(identifier),), (Choice(identifier, (("visible", "false"),), (PkgRef(identifier),)),),
                         (CarriedRef(identifier, "", conclusion.from_postinstall_action(postinstall_action),
                                     choice=identifier),))


def product_choices(dist: Distribution, has_component: Callable[[str], bool], where: str) -> VendorChoices:
    """What the wrapper carries of a vendor product's Distribution; UnsupportedError for what it cannot."""
    if not dist.choices_outline:  # legacy: no outline, every pkg-ref with a path in document order
        refs = dist.components()
        dist = Distribution(choices_outline=tuple(Line(r.id) for r in refs), pkg_refs=tuple(dist.all_pkg_refs()),
                            choices=tuple(Choice(r.id, (("visible", "false"),), (PkgRef(r.id),)) for r in refs))
    defined: dict[str, Choice] = {}
    for choice in dist.choices:
        if choice.id in defined:
            _refuse(f'defines choice "{choice.id}" twice', where)
        defined[choice.id] = choice
    outline = _splice_root(dist.choices_outline, defined, where)
    carried: dict[str, Choice] = {}

    def walk(lines: Sequence[Line]) -> None:
        for line in lines:
            choice = defined.get(line.choice)
            if choice is None:
                _refuse(f'choices-outline names choice "{line.choice}", which no <choice> defines', where)
            if choice.id == ROOT:
                _refuse(f'choice "{ROOT}" is nested in the outline, and the wrapper\'s root choice has that id', where)
            carried.setdefault(choice.id, choice)
            walk(line.children)

    walk(outline)
    owners: dict[str, Choice] = {}
    for choice in carried.values():
        for ref in choice.pkg_refs:
            owners.setdefault(ref.id, choice)
    refs = [_carried_ref(dist, pkg_id, owner, has_component, where) for pkg_id, owner in owners.items()]
    seen: dict[str, str] = {}
    for ref in refs:
        if ref.prefix in seen:
            _refuse(f'pkg-refs "{seen[ref.prefix]}" and "{ref.id}" both install {ref.prefix.rstrip("/")}', where)
        seen[ref.prefix] = ref.id
    return VendorChoices(tuple(outline), tuple(carried.values()), tuple(refs))


def check_location(ref: CarriedRef, install_location: str | None, where: str) -> None:
    """A customLocation must agree with the component's own install-location (see the module doc)."""
    if ref.location is None:
        return
    own = install_location or "/"
    if PurePosixPath(ref.location) != PurePosixPath(own):
        _refuse(f'choice "{ref.choice}" has customLocation="{ref.location}", which moves "{ref.id}" away from '
                f'its PackageInfo install-location "{own}", where the wrapper reads the client\'s files', where)


def _splice_root(lines: tuple[Line, ...], defined: dict[str, Choice], where: str) -> list[Line]:
    """The vendor's top-level lines, its root choice's line replaced by the lines inside it."""
    out: list[Line] = []
    for line in lines:
        if line.choice != ROOT:
            out.append(line)
            continue
        root = defined.get(ROOT)
        if root is not None:
            for name, value in root.attributes:
                if name not in UI_ONLY:
                    _refuse(f'choice "{ROOT}" has {name}="{value}", which cannot be carried: the wrapper\'s '
                            f"own root choice has that id", where)
            if root.pkg_refs or root.children:
                what = f'pkg-ref "{root.pkg_refs[0].id}"' if root.pkg_refs else root.children[0]
                _refuse(f'choice "{ROOT}" installs {what}, which cannot be carried: the wrapper\'s own root '
                        f"choice has that id", where)
        out.extend(line.children)
    return out


def _carried_ref(dist: Distribution, pkg_id: str, owner: Choice, has_component: Callable[[str], bool],
                 where: str) -> CarriedRef:
    elements = [r for r in dist.all_pkg_refs() if r.id == pkg_id]
    label = f'pkg-ref "{pkg_id}" (choice "{owner.id}")'
    for ref in elements:
        script = dict(ref.extra_attributes).get("onConclusionScript")
        if script is not None:
            _refuse(f'{label} has onConclusionScript="{script}", which cannot be carried: the restart it asks '
                    f"for is decided at install time, but the build must know it (Munki, DEPLOY.md)", where)
        if conclusion.canonical(ref.on_conclusion) is None:
            _refuse(f'{label} has onConclusion="{ref.on_conclusion}", which is none of '
                    f"{', '.join(conclusion.ACTIONS)}", where)
    path_ref = next((r for r in elements if r.path), None)
    if path_ref is None:
        _refuse(f"{label} has no path: there is no component to install", where)
    prefix = path_ref.archive_prefix
    if prefix is None or "/" in prefix[:-1] or prefix in ("./", "../") or not has_component(prefix):
        _refuse(f"{label} points at {path_ref.path!r}, which is not a component inside the archive", where)
    top = [r for r in dist.pkg_refs if r.id == pkg_id]
    attributes: dict[str, str] = {}
    for ref in top:
        for name, value in ref.extra_attributes:
            attributes.setdefault(name, value)
    children = next((r.children for r in top if r.children), ())
    return CarriedRef(pkg_id, prefix, conclusion.strongest(r.on_conclusion for r in elements),
                      tuple(attributes.items()), children, owner.id, owner.attribute_map.get("customLocation"))


def _refuse(message: str, where: str) -> NoReturn:
    raise UnsupportedError(message, where=where, hint=_HINT)
