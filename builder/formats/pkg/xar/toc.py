"""The TOC's XML, shared by the reader, the writer and resign: namespace-blind element lookups and
bounded number parsing for reading it; element builders and a serialiser for writing it."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from typing import Sequence

from ....errors import FormatError, UnsupportedError
from ..xmlsafe import attr as escape_attr  # the one attribute escaper of flat packages' XML
from .model import XMLDSIG_NS

MAX_NUMBER_DIGITS = 20


def local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[1] if tag.startswith("{") else tag


def children_named(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if isinstance(c.tag, str) and local_name(c.tag) == name]


def child_named(el: ET.Element, name: str) -> ET.Element | None:
    found = children_named(el, name)
    return found[-1] if found else None


def child_text(el: ET.Element, name: str) -> str | None:
    c = child_named(el, name)
    return None if c is None else (c.text or "").strip()


def parse_number(text: str | None, what: str, where: str, *, base: int = 10) -> int | None:
    if text is None:
        return None
    if not text or len(text) > MAX_NUMBER_DIGITS or not text.isascii() or not text.isdigit():
        raise FormatError(f"{what} is not a non-negative number: {text[:40]!r}", where=where)
    if base == 8 and any(ch in "89" for ch in text):
        raise FormatError(f"{what} is not an octal number: {text!r}", where=where)
    value = int(text, base)
    if value >= 1 << 63:
        raise FormatError(f"{what} is out of range: {text}", where=where)
    return value


def required(value: int | None, what: str, where: str) -> int:
    if value is None:
        raise FormatError(f"missing <{what}>", where=where)
    return value


def escape_text(s: str) -> str:
    if "&" in s or "<" in s or ">" in s or "\r" in s:  # most TOC text needs none: skip the copies
        return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return s


def _split_tag(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, local = tag[1:].split("}", 1)
        return ns, local
    return "", tag


def toc_bytes(root: ET.Element) -> bytes:
    """Serialise a TOC tree with a default-namespace xmlns where needed (no ns0: prefixes)."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n']
    _emit(root, "", out)
    out.append("\n")
    return "".join(out).encode("utf-8")


def element_xml(el: ET.Element, level: int) -> str:
    """One element of a TOC whose default namespace is none, indented as ET.indent(space=" ")
    indents it at `level` (its depth below <xar>), as toc_bytes writes it (without its tail)."""
    ET.indent(el, space=" ", level=level)
    out: list[str] = []
    _emit(el, "", out)
    return "".join(out)


def _emit(el: ET.Element, default_ns: str, out: list[str]) -> None:
    """One element and its subtree (a function of the module, not a closure: a recursive closure
    is a reference cycle that only the cyclic collector frees, with whatever it holds)."""
    ns, local = _split_tag(el.tag)
    attrs = ""
    if ns != default_ns:
        attrs = f' xmlns="{escape_attr(ns)}"'
    for key, value in el.attrib.items():
        if key.startswith("{"):
            raise UnsupportedError(f"namespaced attribute {key!r} in TOC")
        attrs += f' {key}="{escape_attr(value)}"'
    if el.text is None and len(el) == 0:
        out.append(f"<{local}{attrs}/>")
    else:
        out.append(f"<{local}{attrs}>")
        if el.text:
            out.append(escape_text(el.text))
        for child in el:
            if isinstance(child.tag, str):
                _emit(child, ns, out)
            if child.tail:
                out.append(escape_text(child.tail))
        out.append(f"</{local}>")


def sub_element(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    el.text = text
    return el


def signature_element(tag: str, style: str, offset: int, size: int, certs: Sequence[bytes]) -> ET.Element:
    el = ET.Element(tag, {"style": style})
    sub_element(el, "offset", str(offset))
    sub_element(el, "size", str(size))
    key_info = sub_element(el, f"{{{XMLDSIG_NS}}}KeyInfo")
    x509 = sub_element(key_info, f"{{{XMLDSIG_NS}}}X509Data")
    for der in certs:
        b64 = base64.b64encode(der).decode("ascii")
        wrapped = "\n".join(b64[i:i + 72] for i in range(0, len(b64), 72))  # as productsign does
        sub_element(x509, f"{{{XMLDSIG_NS}}}X509Certificate", wrapped)
    return el
