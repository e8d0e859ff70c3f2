"""Distribution model against productbuild's real output (bsdtar-extracted, ElementTree as reference)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from builder.errors import FormatError
from builder.formats.pkg.product import (Choice, Distribution, Line, OsVersion, PkgRef, describe_distribution,
                                 parse_distribution, render_distribution)
from tests.conftest import FIXTURES, require_tool

PRODUCTS = [FIXTURES / "pkg" / "relic-dummy.pkg", FIXTURES / "pkg" / "installomator-Installomator-0.5-c53f9d1b.pkg"]


def distribution_bytes(path) -> bytes:
    return subprocess.run([require_tool("bsdtar"), "-xOf", path, "Distribution"], check=True,
                          capture_output=True).stdout


def _outline(el):
    return tuple((line.get("choice"), _outline(line)) for line in el)


def _lines(lines):
    return tuple((line.choice, _lines(line.children)) for line in lines)


@pytest.mark.parametrize("pkg", PRODUCTS, ids=lambda p: p.name)
def test_parse_matches_elementtree(pkg):
    data = distribution_bytes(pkg)
    ref = ET.fromstring(data)
    dist = parse_distribution(data)
    assert dist.min_spec_version == ref.get("minSpecVersion")
    assert dist.title == (ref.findtext("title"))
    assert dict(dist.options) == ref.find("options").attrib
    assert dict(dist.product) == ref.find("product").attrib
    assert [(r.id, r.version, r.install_kbytes, r.on_conclusion, r.path) for r in dist.pkg_refs] == [
        (r.get("id"), r.get("version"), int(r.get("installKBytes")) if r.get("installKBytes") else None,
         r.get("onConclusion"), (r.text or "").strip() or None) for r in ref.findall("pkg-ref")]
    assert [c.id for c in dist.choices] == [c.get("id") for c in ref.findall("choice")]
    assert [tuple((r.id, r.on_conclusion, r.path) for r in c.pkg_refs) for c in dist.choices] == [
        tuple((p.get("id"), p.get("onConclusion"), (p.text or "").strip() or None) for p in c.findall("pkg-ref"))
        for c in ref.findall("choice")]
    assert _lines(dist.choices_outline) == _outline(ref.find("choices-outline"))
    reparsed = parse_distribution(render_distribution(dist))
    assert reparsed == dist


def test_relic_facts_and_verbatim_volume_check():
    data = distribution_bytes(PRODUCTS[0])
    dist = parse_distribution(data)
    # the volume-check element is kept exactly as it appears in the source bytes
    start = data.index(b"<volume-check>")
    end = data.index(b"</volume-check>") + len(b"</volume-check>")
    assert dist.volume_check == data[start:end].decode()
    assert dist.os_requirements() == (OsVersion("11.0", None),)
    assert dist.allowed_os_versions == ()
    assert [r.archive_prefix for r in dist.components()] == ["com.sas.dummy.pkg/"]
    described = describe_distribution(dist)
    assert described["host_architectures"] == ["arm64", "x86_64"]
    assert described["pkg_refs"][0]["install_kbytes"] == 172


def test_scripts_and_checks_survive_byte_for_byte():
    js = "function check() { return a < b && c > d; }"
    src = ("<installer-gui-script minSpecVersion=\"1\">"
           "<installation-check script=\"check() &amp;&amp; x &gt; 1\"/>"
           f"<script><![CDATA[{js}]]></script>"
           "<welcome file=\"Welcome.rtf\" mime-type=\"text/rtf\"/>"
           "<pkg-ref id=\"a\"><must-close><app id=\"com.a\"/></must-close></pkg-ref>"
           "<pkg-ref id=\"a\" version=\"1\" auth=\"Root\">#a.pkg</pkg-ref>"
           "</installer-gui-script>").encode()
    dist = parse_distribution(src)
    assert dist.scripts == (f"<script><![CDATA[{js}]]></script>",)
    assert dist.installation_check == '<installation-check script="check() &amp;&amp; x &gt; 1"/>'
    assert dist.extra_elements == ('<welcome file="Welcome.rtf" mime-type="text/rtf"/>',)
    out = render_distribution(dist)
    assert f"<![CDATA[{js}]]>".encode() in out
    root = ET.fromstring(out)
    assert root.find("installation-check").get("script") == "check() && x > 1"
    assert root.find("script").text == js
    assert parse_distribution(out) == dist


def test_render_productbuild_shape():
    dist = Distribution(
        title="ACME 1E Client",
        product=(("id", "com.acme.1e"), ("version", "5.1-1")),
        options=(("customize", "never"), ("require-scripts", "false"), ("hostArchitectures", "x86_64,arm64")),
        domains=(("enable_anywhere", "false"), ("enable_currentUserHome", "false"), ("enable_localSystem", "true")),
        allowed_os_versions=(OsVersion(min="11.0"),),
        choices_outline=(Line("default", (Line("com.acme.prepare"), Line("com.1e.client"))),),
        choices=(Choice("default"), Choice("com.acme.prepare", (("visible", "false"),), (PkgRef("com.acme.prepare"),)),
                 Choice("com.1e.client", (("visible", "false"),), (PkgRef("com.1e.client"),))),
        pkg_refs=(PkgRef("com.acme.prepare", "5.1-1", 0, "Root", "none", "#prepare.pkg"),
                  PkgRef("com.1e.client", "5.1.0.12", 4000, "Root", "none", "#vendor.pkg")),
    )
    data = render_distribution(dist)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<installer-gui-script minSpecVersion="1">\n'
                           b"    <title>ACME 1E Client</title>\n")
    assert (b'<pkg-ref id="com.1e.client" version="5.1.0.12" onConclusion="none" installKBytes="4000" '
            b'auth="Root">#vendor.pkg</pkg-ref>') in data
    root = ET.fromstring(data)
    assert [c.tag for c in root] == ["title", "options", "domains", "allowed-os-versions", "choices-outline",
                                     "choice", "choice", "choice", "pkg-ref", "pkg-ref", "product"]
    assert root.find("allowed-os-versions/os-version").attrib == {"min": "11.0"}
    assert parse_distribution(data) == dist
    assert render_distribution(dist) == data


@pytest.mark.parametrize("data,needle", [
    (b'<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><installer-gui-script>&x;</installer-gui-script>',
     "DOCTYPE"),
    (b"<installer-gui-script><pkg-ref>#a.pkg</pkg-ref></installer-gui-script>", "without an id"),
    (b'<installer-gui-script><pkg-ref id="a" installKBytes="lots"/></installer-gui-script>', "installKBytes"),
    (b"<installer-gui-script><choices-outline><line/></choices-outline></installer-gui-script>", "choice"),
    (b"<pkg-info/>", "installer-gui-script"),
    (b"<installer-gui-script>", "well-formed"),
    (b"<a>" * 100 + b"</a>" * 100, "nested"),
])
def test_bad_distribution(data, needle):
    with pytest.raises(FormatError) as exc:
        parse_distribution(data, where="vendor.pkg/Distribution")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


NESTED = b"""<installer-gui-script minSpecVersion="1">
    <choices-outline>
        <line choice="default">
            <line choice="b"/>
            <line choice="group">
                <line choice="a"/>
                <line choice="b"/>
            </line>
        </line>
    </choices-outline>
    <choice id="default"/>
    <choice id="a"><pkg-ref id="com.a" onConclusion="RequireLogout"/></choice>
    <choice id="b" visible="false"><pkg-ref id="com.b"/><pkg-ref id="com.c"/></choice>
    <choice id="group" title="G"><pkg-ref id="com.g"/></choice>
    <choice id="unused"><pkg-ref id="com.u"/></choice>
    <pkg-ref id="com.a" version="1" onConclusion="none">#a.pkg</pkg-ref>
    <pkg-ref id="com.c" onConclusion="RequireRestart">#c.pkg</pkg-ref>
    <pkg-ref id="com.b" onConclusion="requirerestart">#b.pkg</pkg-ref>
    <pkg-ref id="com.g">#g.pkg</pkg-ref>
    <pkg-ref id="com.u" onConclusion="RequireShutdown">#u.pkg</pkg-ref>
</installer-gui-script>"""


def test_install_order_walks_the_outline_not_the_document():
    dist = parse_distribution(NESTED)
    # depth first, a line's own choice before the lines inside it, each id once; "unused" is never reached
    assert dist.install_order() == ["com.b", "com.c", "com.g", "com.a"]
    assert [r.id for r in dist.components()] == ["com.a", "com.c", "com.b", "com.g", "com.u"]  # document order
    no_outline = parse_distribution(NESTED.replace(b"<choices-outline>", b"<!--").replace(b"</choices-outline>", b"-->"))
    assert no_outline.install_order() == ["com.a", "com.c", "com.b", "com.g", "com.u"]


def test_on_conclusion_is_the_strongest_of_every_element_of_an_id():
    dist = parse_distribution(NESTED)
    # the top-level "none" and the choice's RequireLogout add up; spelling is Apple's whatever the source's
    assert dist.on_conclusion("com.a") == "RequireLogout"
    assert dist.on_conclusion("com.b") == "RequireRestart"
    assert dist.on_conclusion("com.g") == "None"
    described = describe_distribution(dist)
    assert described["install_order"] == [{"id": "com.b", "on_conclusion": "RequireRestart"},
                                          {"id": "com.c", "on_conclusion": "RequireRestart"},
                                          {"id": "com.g", "on_conclusion": "None"},
                                          {"id": "com.a", "on_conclusion": "RequireLogout"}]
    assert described["on_conclusion"] == "RequireRestart"  # com.u's RequireShutdown is not: it is never installed
    assert described["choices"][1] == {"id": "a", "pkg_refs": ["com.a"]}


def test_pkg_refs_inside_choices_keep_their_attributes():
    src = (b'<installer-gui-script minSpecVersion="1"><choice id="c" start_selected="f()">'
           b'<pkg-ref id="x" onConclusion="RequireRestart" active="g()"><must-close><app id="com.x"/></must-close>'
           b'</pkg-ref><pkg-ref id="y">#y.pkg</pkg-ref></choice></installer-gui-script>')
    dist = parse_distribution(src)
    x, y = dist.choices[0].pkg_refs
    assert (x.on_conclusion, x.extra_attributes, x.children) == (
        "RequireRestart", (("active", "g()"),), ('<must-close><app id="com.x"/></must-close>',))
    assert y.path == "#y.pkg" and [r.id for r in dist.components()] == ["y"]
    out = render_distribution(dist)
    refs = ET.fromstring(out).find("choice").findall("pkg-ref")
    assert [r.attrib for r in refs] == [{"id": "x", "onConclusion": "RequireRestart", "active": "g()"}, {"id": "y"}]
    assert refs[0].find("must-close/app").get("id") == "com.x" and refs[1].text == "#y.pkg"
    assert parse_distribution(out) == dist
