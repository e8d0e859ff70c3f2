"""PackageInfo model against pkgbuild's real output (extracted with bsdtar, parsed with ElementTree)."""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET

import pytest

from builder.errors import FormatError
from builder.formats.pkg.component import Bundle, PackageInfo, parse_package_info, render_package_info, scripts_for
from tests.conftest import FIXTURES, require_tool

PKGS = sorted(p for p in (FIXTURES / "pkg").glob("*.pkg") if p.name != "homebrew-container.pkg")


def package_infos(path):
    """(xar path, bytes) of every PackageInfo in a fixture, found and extracted by bsdtar."""
    bsdtar = require_tool("bsdtar")
    names = subprocess.run([bsdtar, "-tf", path], check=True, capture_output=True, text=True).stdout.split()
    out = []
    for name in names:
        if name.split("/")[-1] == "PackageInfo":
            data = subprocess.run([bsdtar, "-xOf", path, name], check=True, capture_output=True).stdout
            out.append((name, data))
    assert out, f"{path} has no PackageInfo"
    return out


@pytest.mark.parametrize("pkg", PKGS, ids=lambda p: p.name)
def test_parse_matches_elementtree(pkg):
    for _, data in package_infos(pkg):
        ref = ET.fromstring(data)
        info = parse_package_info(data)
        assert info.identifier == ref.get("identifier")
        assert info.version == ref.get("version")
        assert info.install_location == ref.get("install-location")
        assert info.auth == ref.get("auth")
        assert info.format_version == ref.get("format-version") == "2"
        assert info.relocatable is (ref.get("relocatable") == "true")
        payload = ref.find("payload")
        assert info.payload_files == int(payload.get("numberOfFiles"))
        assert info.install_kbytes == int(payload.get("installKBytes"))
        scripts = ref.find("scripts")
        expected = [(s.tag, s.get("file")) for s in scripts] if scripts is not None else []
        assert list(info.scripts) == expected
        assert [b.id for b in info.bundles] == [b.get("id") for b in ref.findall("bundle")]
        relocate = [b.get("id") for b in ref.find("relocate")]
        assert dict(info.bundle_lists)["relocate"] == tuple(relocate)
        extra = {k: v for k, v in ref.attrib.items() if k == "preserve-xattr"}
        assert dict(info.extra_attributes) == extra


@pytest.mark.parametrize("pkg", PKGS, ids=lambda p: p.name)
def test_render_reproduces_pkgbuild_bytes(pkg):
    for _, data in package_infos(pkg):
        assert render_package_info(parse_package_info(data)) == data


def test_known_fixture_facts():
    info = parse_package_info(package_infos(FIXTURES / "pkg" / "rtrouton-Fix_Zoom_Vulnerability.pkg")[0][1])
    assert info.identifier == "com.github.fix_zoom_vulnerability"
    assert info.install_location is None  # pkgbuild omits it for this payload-free package
    assert info.script_names == ("postinstall",)


def test_render_our_shape_is_pkgbuild_like():
    info = PackageInfo("com.acme.x", "1.0", install_location="/", scripts=scripts_for(["postinstall", "x", "preinstall"]),
                       payload_files=3, install_kbytes=12)
    data = render_package_info(info)
    root = ET.fromstring(data)
    assert data.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<pkg-info overwrite-permissions="true" '
                           b'relocatable="false" identifier="com.acme.x" postinstall-action="none" version="1.0" '
                           b'format-version="2" install-location="/" auth="root">')
    assert root.find("relocate") is not None and len(root.find("relocate")) == 0
    assert [(s.tag, s.get("file")) for s in root.find("scripts")] == [
        ("preinstall", "./preinstall"), ("postinstall", "./postinstall")]
    assert root.find("payload").attrib == {"numberOfFiles": "3", "installKBytes": "12"}
    assert parse_package_info(data) == info
    assert render_package_info(info) == data


def test_unknown_content_survives():
    src = (b'<pkg-info identifier="a" version="1" followSymLinks="true">'
           b'<payload numberOfFiles="1" installKBytes="0"/>'
           b'<bundle id="b" path="./B.app"><bundle id="c" path="./B.app/C.framework"/></bundle>'
           b'<dont-obsolete><file path="/x &amp; y"/></dont-obsolete></pkg-info>')
    info = parse_package_info(src)
    assert info.bundles == (Bundle((("id", "b"), ("path", "./B.app")), (Bundle((("id", "c"), ("path", "./B.app/C.framework"))),)),)
    assert info.extra_elements == ('<dont-obsolete><file path="/x &amp; y"/></dont-obsolete>',)
    again = parse_package_info(render_package_info(info))
    assert again == info
    assert ET.fromstring(render_package_info(info)).find("dont-obsolete/file").get("path") == "/x & y"


@pytest.mark.parametrize("declaration, flag", [(b'<?xml version="1.0" encoding="utf-8"?>', None),
                                               (b'<?xml version="1.0" encoding="utf-8" standalone="no"?>', False),
                                               (b'<?xml version="1.0" encoding="utf-8" standalone="yes"?>', True)])
def test_xml_declaration_standalone_survives(declaration, flag):
    """Older pkgbuild (InstallCmds-502, the KeychainMinder fixture) declares standalone="no"."""
    src = declaration + b'\n<pkg-info identifier="a" version="1"/>'
    info = parse_package_info(src)
    assert info.xml_standalone is flag
    assert render_package_info(info).split(b"\n", 1)[0] == declaration
    assert parse_package_info(render_package_info(info)) == info


def test_attribute_escaping():
    info = PackageInfo('com.a"b<c>&d', "1\n2")
    root = ET.fromstring(render_package_info(info))
    assert root.get("identifier") == 'com.a"b<c>&d' and root.get("version") == "1\n2"


@pytest.mark.parametrize("data,needle", [
    (b'<!DOCTYPE x [<!ENTITY a "b">]><pkg-info identifier="&a;" version="1"/>', "DOCTYPE"),
    (b'<!DOCTYPE x SYSTEM "file:///etc/passwd"><pkg-info identifier="a" version="1"/>', "DOCTYPE"),
    (b'<pkg-info identifier="&x;" version="1"/>', "not well-formed"),
    (b'<pkg-info version="1"/>', "identifier"),
    (b'<pkg-nfo identifier="a" version="1"/>', "pkg-info"),
    (b'<pkg-info identifier="a" version="1"><payload numberOfFiles="-1"/></pkg-info>', "numberOfFiles"),
    (b'<pkg-info identifier="a" version="1" relocatable="maybe"/>', "relocatable"),
    (b'<pkg-info identifier="a" version="1"><scripts><evil file="x"/></scripts></pkg-info>', "evil"),
    (b"", "well-formed"),
    (b"\xff\xfe<", "UTF-8"),
])
def test_bad_package_info(data, needle):
    with pytest.raises(FormatError) as exc:
        parse_package_info(data, where="x.pkg/PackageInfo")
    assert needle in str(exc.value) and str(exc.value).startswith("x.pkg/PackageInfo: ")


def test_billion_laughs_refused_quickly():
    lol = b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10) for i in range(1, 10)
    ) + b']><pkg-info identifier="&lol9;" version="1"/>'
    with pytest.raises(FormatError, match="DOCTYPE"):
        parse_package_info(lol)
