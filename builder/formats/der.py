"""Minimal ASN.1 DER/BER reader and DER writer.

`cryptography` does the cryptography, but it cannot parse a PKCS#12 without an RSA key check
that costs ~30 ms per device, cannot build Apple's SHA-1 CMS without signed attributes, and has
no CMS verify API. Those structures are small, so this module reads and writes their TLVs; the
callers know the ASN.1 schemas. Input is hostile: every length is bounded by its container,
each level is split only when a caller reaches it (so a walk costs O(nodes)), BER nesting is
limited, and malformed data raises FormatError wherever it is read.
"""

from __future__ import annotations

import functools
from operator import itemgetter

from ..errors import FormatError

# Universal tags (class universal, as the full identifier octet for primitive/constructed use)
BOOLEAN = 0x01
INTEGER = 0x02
BIT_STRING = 0x03
OCTET_STRING = 0x04
NULL = 0x05
OID = 0x06
UTF8_STRING = 0x0C
PRINTABLE_STRING = 0x13
IA5_STRING = 0x16
UTC_TIME = 0x17
GENERALIZED_TIME = 0x18
BMP_STRING = 0x1E
SEQUENCE = 0x30
SET = 0x31

MAX_DEPTH = 64


class Node(tuple):
    """One TLV. `raw` is the whole encoding (tag+length+value), `value` the contents octets.

    For BER indefinite-length constructed values, `value` holds the contents without the
    end-of-contents octets. A node holds offsets into the buffer it was read from, not copies:
    `value` and `raw` are sliced when asked for and children() reads in place, so a walk copies no
    contents (a .pfx walk reaches ~90 nodes per device). Immutable (a tuple underneath, which is
    also the cheapest object to make); equal when tag, value and raw are.
    """

    # the tuple: (tag, buffer, start, contents start, contents end, end), offsets into buffer
    __slots__ = ()

    tag = property(itemgetter(0), doc="identifier octet (low-tag-number form only)")

    def __new__(cls, tag: int, value: bytes, raw: bytes) -> "Node":
        """A node from its parts (the reader makes its nodes in place)."""
        raw = bytes(raw)
        vend = len(raw) - 2 if raw[1:2] == b"\x80" else len(raw)
        return _new(cls, (tag, raw, 0, vend - len(value), vend, len(raw)))

    @property
    def value(self) -> bytes:
        return self[1][self[3]:self[4]]

    @property
    def raw(self) -> bytes:
        return self[1][self[2]:self[5]]

    def __eq__(self, other) -> bool:
        if not isinstance(other, Node):
            return NotImplemented
        return self[0] == other[0] and self.value == other.value and self.raw == other.raw

    def __ne__(self, other) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash((self[0], self.value, self.raw))

    def __repr__(self) -> str:
        return f"Node(tag={self[0]!r}, value={self.value!r}, raw={self.raw!r})"

    def __getnewargs__(self):
        return self[0], self.value, self.raw

    @property
    def constructed(self) -> bool:
        return bool(self.tag & 0x20)

    @property
    def tag_class(self) -> int:
        return self.tag >> 6

    @property
    def number(self) -> int:
        return self.tag & 0x1F

    def children(self) -> list["Node"]:
        """One level down, bounds-checked as it is reached (malformed contents raise FormatError
        here): walking a structure costs O(nodes), not O(nodes x depth)."""
        if not self[0] & 0x20:
            raise FormatError(f"ASN.1 tag 0x{self.tag:02x} is primitive, expected a constructed value")
        return _nodes(self[1], self[3], self[4])

    def child(self, index: int) -> "Node":
        kids = self.children()
        if index >= len(kids):
            raise FormatError(f"ASN.1 structure too short: no element {index} in tag 0x{self.tag:02x}")
        return kids[index]

    def expect(self, tag: int, what: str = "value") -> "Node":
        if self.tag != tag:
            raise FormatError(f"ASN.1 {what}: expected tag 0x{tag:02x}, found 0x{self.tag:02x}")
        return self

    # -- typed accessors ---------------------------------------------------------------
    def as_int(self) -> int:
        self.expect(INTEGER, "integer")
        if self[3] == self[4]:
            raise FormatError("ASN.1 integer with no content")
        return int.from_bytes(self.value, "big", signed=True)

    def as_oid(self) -> str:
        self.expect(OID, "object identifier")
        return decode_oid(self.value)

    def as_octets(self) -> bytes:
        """OCTET STRING contents; BER constructed octet strings are joined."""
        if self.tag == OCTET_STRING:
            return self.value
        if self.tag == OCTET_STRING | 0x20:
            return b"".join(c.as_octets() for c in self.children())
        raise FormatError(f"ASN.1 octet string expected, found tag 0x{self.tag:02x}")

    def as_string(self) -> str:
        if self.tag == BMP_STRING:
            return self.value.decode("utf-16-be", errors="replace")
        return self.value.decode("utf-8", errors="replace")


_new = tuple.__new__


def _read_length(data: bytes, pos: int, end: int) -> tuple[int | None, int]:
    if pos >= end:
        raise FormatError("ASN.1 truncated: missing length")
    first = data[pos]
    pos += 1
    if first < 0x80:
        return first, pos
    if first == 0x80:
        return None, pos  # indefinite (BER)
    count = first & 0x7F
    if count > 8 or pos + count > end:
        raise FormatError("ASN.1 length field is invalid or truncated")
    return int.from_bytes(data[pos:pos + count], "big"), pos + count


def _parse_one(data: bytes, pos: int, end: int, depth: int) -> tuple[Node, int]:
    """One TLV at `pos`, lengths bounds-checked; contents are split later, by children()."""
    if depth > MAX_DEPTH:
        raise FormatError("ASN.1 nesting too deep")
    start = pos
    if pos >= end:
        raise FormatError("ASN.1 truncated: missing tag")
    tag = data[pos]
    pos += 1
    if tag & 0x1F == 0x1F:
        raise FormatError("ASN.1 high tag numbers are not supported")
    length, pos = _read_length(data, pos, end)
    if length is None:
        if not tag & 0x20:
            raise FormatError("ASN.1 indefinite length on a primitive value")
        inner_start = pos
        while True:
            if pos + 2 > end:
                raise FormatError("ASN.1 truncated: missing end-of-contents")
            if data[pos] == 0 and data[pos + 1] == 0:
                return _new(Node, (tag, data, start, inner_start, pos, pos + 2)), pos + 2
            _, pos = _parse_one(data, pos, end, depth + 1)
    if pos + length > end:
        raise FormatError("ASN.1 truncated: value runs past the end of its container")
    return _new(Node, (tag, data, start, pos, pos + length, pos + length)), pos + length


def _nodes(data: bytes, pos: int, end: int) -> list[Node]:
    """The TLVs laid end to end in data[pos:end], each one's length checked against `end`. Definite
    lengths (nearly every node) are read inline, with _parse_one's checks and messages: this is the
    reader's hot loop."""
    out: list[Node] = []
    append, new = out.append, _new
    while pos < end:
        tag = data[pos]
        vstart = pos + 2
        if vstart <= end and tag & 0x1F != 0x1F:
            length = data[pos + 1]
            if length & 0x80:
                count = length & 0x7F
                if not 0 < count <= 8 or vstart + count > end:
                    node, pos = _parse_one(data, pos, end, 0)  # indefinite, or its error
                    append(node)
                    continue
                length = int.from_bytes(data[vstart:vstart + count], "big")
                vstart += count
            vend = vstart + length
            if vend > end:
                raise FormatError("ASN.1 truncated: value runs past the end of its container")
            append(new(Node, (tag, data, pos, vstart, vend, vend)))
            pos = vend
            continue
        node, pos = _parse_one(data, pos, end, 0)
        append(node)
    return out


def parse(data: bytes, *, allow_trailing: bool = False) -> Node:
    """Parse one TLV; its contents are split lazily by children(). With allow_trailing, bytes
    after it are ignored only if they are all zero (the zero padding productsign leaves after a
    CMS blob)."""
    node, pos = _parse_one(bytes(data), 0, len(data), 0)
    rest = data[pos:]
    if rest and not (allow_trailing and not any(rest)):
        raise FormatError("ASN.1 value followed by unexpected bytes")
    return node


def decode_oid(value: bytes) -> str:
    if not value:
        raise FormatError("ASN.1 empty object identifier")
    parts: list[int] = []
    acc = 0
    for i, byte in enumerate(value):
        acc = (acc << 7) | (byte & 0x7F)
        if not byte & 0x80:
            parts.append(acc)
            acc = 0
        elif i == len(value) - 1:
            raise FormatError("ASN.1 object identifier is truncated")
    first = parts[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(p) for p in head + parts[1:])


# -- writer ------------------------------------------------------------------------------

def encode_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    body = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + encode_length(len(value)) + value


def seq(*items: bytes) -> bytes:
    return tlv(SEQUENCE, b"".join(items))


def set_of(*items: bytes) -> bytes:
    """DER SET OF: elements sorted by their encodings."""
    return tlv(SET, b"".join(sorted(items)))


def integer(value: int) -> bytes:
    length = max(1, (value.bit_length() + 8) // 8)
    return tlv(INTEGER, value.to_bytes(length, "big", signed=True))


def octets(value: bytes) -> bytes:
    return tlv(OCTET_STRING, value)


def null() -> bytes:
    return b"\x05\x00"


@functools.lru_cache(maxsize=256)
def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER's encoding; remembered, since writers name the same few OIDs for every
    device."""
    try:
        nums = [int(p) for p in dotted.split(".")]
    except ValueError:
        raise FormatError(f"invalid object identifier {dotted!r}") from None
    if len(nums) < 2:
        raise FormatError(f"invalid object identifier {dotted!r}")
    body = bytearray()
    for n in [nums[0] * 40 + nums[1]] + nums[2:]:
        chunk = [n & 0x7F]
        n >>= 7
        while n:
            chunk.append(0x80 | (n & 0x7F))
            n >>= 7
        body.extend(reversed(chunk))
    return tlv(OID, bytes(body))


def explicit(number: int, inner: bytes) -> bytes:
    """[number] EXPLICIT (context-specific, constructed)."""
    return tlv(0xA0 | number, inner)


def implicit_constructed(number: int, contents: bytes) -> bytes:
    """[number] IMPLICIT for a constructed type (e.g. SET OF certificates in CMS)."""
    return tlv(0xA0 | number, contents)
