"""What the wrapper carries of a vendor's Distribution, and the one-line refusals for what it cannot
(the end-to-end cases, through `fleetpkg build` and `check`, are in test_pipeline.py)."""

from __future__ import annotations

import pytest

from builder.errors import UnsupportedError
from builder.fleet.vendorchoices import component_choices, product_choices
from builder.formats.pkg.product import Line, parse_distribution

IN_ARCHIVE = {"a.pkg/", "b.pkg/"}.__contains__


def plan(xml: str):
    return product_choices(parse_distribution(f'<installer-gui-script minSpecVersion="1">{xml}'
                                              f"</installer-gui-script>".encode()), IN_ARCHIVE, "v.pkg: Distribution")


def refused(xml: str) -> str:
    with pytest.raises(UnsupportedError) as exc:
        plan(xml)
    text = str(exc.value)
    assert text.startswith("v.pkg: Distribution: ") and "\n" not in text
    return text


def test_outline_without_the_productbuild_root_is_kept_as_is():
    carried = plan('<choices-outline><line choice="y"/><line choice="x"/></choices-outline>'
                   '<choice id="x"><pkg-ref id="a"/></choice><choice id="y" selected="f()"><pkg-ref id="b"/></choice>'
                   '<pkg-ref id="a">#a.pkg</pkg-ref><pkg-ref id="b" onConclusion="RequireShutdown">#b.pkg</pkg-ref>')
    assert carried.outline == (Line("y"), Line("x"))
    assert [c.id for c in carried.choices] == ["y", "x"] and carried.choices[0].attributes == (("selected", "f()"),)
    assert [(r.id, r.prefix, r.on_conclusion, r.choice) for r in carried.refs] == [
        ("b", "b.pkg/", "RequireShutdown", "y"), ("a", "a.pkg/", "None", "x")]


def test_no_outline_installs_every_component_in_document_order():
    carried = plan('<pkg-ref id="b">#b.pkg</pkg-ref><pkg-ref id="a" onConclusion="RequireLogout">#a.pkg</pkg-ref>')
    assert carried.outline == (Line("b"), Line("a"))
    assert [(r.id, r.on_conclusion) for r in carried.refs] == [("b", "None"), ("a", "RequireLogout")]


def test_component_package_is_one_hidden_choice():
    carried = component_choices("com.x", "logout")
    assert carried.outline == (Line("com.x"),)
    assert carried.choices[0].attributes == (("visible", "false"),)
    assert [(r.id, r.prefix, r.on_conclusion) for r in carried.refs] == [("com.x", "", "RequireLogout")]


@pytest.mark.parametrize("xml,needle", [
    ('<choices-outline><line choice="x"/></choices-outline><choice id="x"><pkg-ref id="a"/></choice>'
     '<choice id="x"/><pkg-ref id="a">#a.pkg</pkg-ref>', 'defines choice "x" twice'),
    ('<choices-outline><line choice="x"><line choice="default"/></line></choices-outline>'
     '<choice id="x"><pkg-ref id="a"/></choice><choice id="default"/><pkg-ref id="a">#a.pkg</pkg-ref>',
     'choice "default" is nested'),
    ('<choices-outline><line choice="default"/></choices-outline>'
     '<choice id="default"><pkg-ref id="a"/></choice><pkg-ref id="a">#a.pkg</pkg-ref>',
     'choice "default" installs pkg-ref "a"'),
    ('<choices-outline><line choice="x"/></choices-outline><choice id="x"><pkg-ref id="a"/></choice>',
     'pkg-ref "a" (choice "x") has no path'),
    ('<choices-outline><line choice="x"/></choices-outline><choice id="x"><pkg-ref id="a"/></choice>'
     '<pkg-ref id="a">#c.pkg</pkg-ref>', "points at '#c.pkg', which is not a component inside the archive"),
    ('<choices-outline><line choice="x"/></choices-outline><choice id="x"><pkg-ref id="a"/><pkg-ref id="b"/>'
     '</choice><pkg-ref id="a">#a.pkg</pkg-ref><pkg-ref id="b">#a.pkg</pkg-ref>',
     'pkg-refs "a" and "b" both install a.pkg'),
    ('<choices-outline><line choice="x"/></choices-outline><choice id="x">'
     '<pkg-ref id="a" onConclusionScript="r()"/></choice><pkg-ref id="a">#a.pkg</pkg-ref>',
     'pkg-ref "a" (choice "x") has onConclusionScript="r()"'),
])
def test_refusals_name_the_element_and_the_choice(xml, needle):
    assert needle in refused(xml)
