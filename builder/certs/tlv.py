"""Lazy, one-level-at-a-time TLV access on top of builder/der.py's Node.

der.parse validates a whole tree eagerly and Node.children() validates every descendant again at
each call, so walking down a structure costs O(nodes x depth): for a .pfx that was the largest
cost after the key derivation. Here each level is split (and bounds-checked) only when reached,
so malformed input still ends in FormatError, just at the point where it is read. BER
indefinite lengths, which need a full walk to find their end, are left to der.py.
"""

from __future__ import annotations

import functools

from .. import der
from ..errors import FormatError


def root(data: bytes) -> der.Node:
    """One TLV spanning all of `data`, its insides left for kids() to split on demand (each
    level bounds-checked as it is reached). BER indefinite lengths go through der.parse."""
    nodes = _split(bytes(data), None)
    if nodes is None:
        return der.parse(data)
    if len(nodes) != 1:
        raise FormatError("ASN.1 value followed by unexpected bytes" if nodes else "empty ASN.1 input")
    return nodes[0]


@functools.lru_cache(maxsize=256)
def _decode_oid(value: bytes) -> str:
    return der.decode_oid(value)


def oid(node: der.Node) -> str:
    """node.as_oid(), cached: a .pfx names the same dozen OIDs over and over."""
    node.expect(der.OID, "object identifier")
    return _decode_oid(node.value)


def kids(node: der.Node) -> list[der.Node]:
    """node.children() for a node from an already-parsed tree, without re-validating its
    descendants: der.parse checked the whole tree once, and der's children() would check each
    subtree again at every level (O(nodes x depth), the main cost of reading a .pfx after the KDF).
    Lengths are still bounds-checked; BER indefinite lengths go through der.py."""
    if not node.constructed:
        raise FormatError(f"ASN.1 tag 0x{node.tag:02x} is primitive, expected a constructed value")
    nodes = _split(node.value, node)
    return node.children() if nodes is None else nodes


def _split(data: bytes, parent: der.Node | None) -> list[der.Node] | None:
    """The TLVs laid end to end in `data`; None when one has an indefinite length."""
    out: list[der.Node] = []
    pos, end = 0, len(data)
    while pos < end:
        start = pos
        if pos + 2 > end:
            raise FormatError("ASN.1 truncated: missing length")
        tag, first = data[pos], data[pos + 1]
        if tag & 0x1F == 0x1F:
            raise FormatError("ASN.1 high tag numbers are not supported")
        pos += 2
        if first < 0x80:
            length = first
        elif first == 0x80:
            return None
        else:
            count = first & 0x7F
            if count > 8 or pos + count > end:
                raise FormatError("ASN.1 length field is invalid or truncated")
            length = int.from_bytes(data[pos:pos + count], "big")
            pos += count
        if pos + length > end:
            raise FormatError("ASN.1 truncated: value runs past the end of its container")
        out.append(der.Node(tag, data[pos:pos + length], data[start:pos + length]))
        pos += length
    return out


def kid(node: der.Node, index: int) -> der.Node:
    children = kids(node)
    if index >= len(children):
        raise FormatError(f"ASN.1 structure too short: no element {index} in tag 0x{node.tag:02x}")
    return children[index]
