"""Hostile-input XML parsing for PackageInfo and Distribution, keeping each element's source text.

A vendor's Distribution carries JavaScript checks a wrapper must copy unchanged, and ElementTree
would re-escape them and drop CDATA; so the tree is built by expat directly, recording the byte
span of every element. DOCTYPE (hence any entity declaration: no XXE, no billion laughs) is
refused, and input size is bounded by the caller.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.parsers import expat

from ...errors import FormatError

MAX_XML = 4 * 1024 * 1024
MAX_DEPTH = 64


class _Refused(Exception):
    pass


@dataclass
class ParsedXml:
    root: ET.Element
    source: bytes
    spans: dict[int, tuple[int, int]]  # id(element) -> (start, end) byte offsets in source
    standalone: bool | None = None  # the XML declaration's standalone="yes"/"no"; None if absent

    def text_of(self, element: ET.Element) -> str:
        """The element exactly as written in the source (tags, CDATA, comments, whitespace)."""
        start, end = self.spans[id(element)]
        return self.source[start:end].decode("utf-8")


def parse(data: bytes, *, where: str, what: str) -> ParsedXml:
    if len(data) > MAX_XML:
        raise FormatError(f"{what} is {len(data)} bytes, more than the {MAX_XML} allowed", where=where)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError(f"{what} is not UTF-8 text", where=where) from None
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate()
    spans: dict[int, tuple[int, int]] = {}
    pending: list[ET.Element] = []  # elements whose end tag ends where the next event starts
    depth = 0
    standalone: bool | None = None

    def declaration(_version, _encoding, flag):
        nonlocal standalone
        standalone = None if flag == -1 else bool(flag)

    def mark() -> None:
        if pending:
            pos = parser.CurrentByteIndex
            for el in pending:
                spans[id(el)] = (spans[id(el)][0], pos)
            pending.clear()

    def start(tag, attrs):
        nonlocal depth
        mark()
        depth += 1
        if depth > MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}")
        el = builder.start(tag, attrs)
        spans[id(el)] = (parser.CurrentByteIndex, -1)

    def end(tag):
        nonlocal depth
        mark()
        depth -= 1
        pending.append(builder.end(tag))

    def chars(text):
        mark()
        builder.data(text)

    def other(*_args):
        mark()

    def refuse_doctype(*_args):
        raise _Refused("DOCTYPE declarations are not allowed")

    def refuse_entity(*_args):
        raise _Refused("entity declarations are not allowed")

    parser.buffer_text = False
    parser.ordered_attributes = False
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.CommentHandler = other
    parser.ProcessingInstructionHandler = other
    parser.StartCdataSectionHandler = other
    parser.EndCdataSectionHandler = other
    parser.XmlDeclHandler = declaration
    parser.StartDoctypeDeclHandler = refuse_doctype
    parser.EntityDeclHandler = refuse_entity
    parser.UnparsedEntityDeclHandler = refuse_entity
    parser.ExternalEntityRefHandler = refuse_entity
    try:
        parser.Parse(data, True)
        root = builder.close()
    except _Refused as exc:
        raise FormatError(f"{what} refused: {exc}", where=where) from None
    except expat.ExpatError as exc:
        raise FormatError(f"{what} is not well-formed XML: {exc}", where=where) from None
    except (AssertionError, IndexError) as exc:  # TreeBuilder on a document with no root
        raise FormatError(f"{what} is not well-formed XML ({exc})", where=where) from None
    # the last element(s) end at the end of the document, minus trailing whitespace
    if pending:
        tail = len(data.rstrip())
        for el in pending:
            spans[id(el)] = (spans[id(el)][0], tail)
    return ParsedXml(root, data, spans, standalone)


_ATTR_SPECIAL = re.compile('[&<>"\n\r\t]')


def attr(value: str) -> str:
    """An attribute value escaped for double quotes, keeping newlines and tabs as character refs."""
    if _ATTR_SPECIAL.search(value) is None:
        return value  # the usual case: nothing to escape
    return (value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;").replace("\t", "&#9;"))


def text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def attrs(pairs) -> str:
    return "".join(f' {k}="{attr(v)}"' for k, v in pairs if v is not None)


def whole_number(value: str | None, what: str, where: str) -> int | None:
    """An optional non-negative integer attribute (counts, sizes); None when absent."""
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise FormatError(f"{what}={value!r} is not a whole number", where=where)
    return number
