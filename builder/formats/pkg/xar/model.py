"""The xar format's vocabulary: header layout, checksum algorithms, data encodings, the records a
parsed TOC yields, the contract of a signer, and what a member name may be."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from ....errors import FormatError, UnsupportedError

ALGORITHMS = {0: None, 1: "sha1", 2: "md5", 3: "sha256", 4: "sha512"}
ALGORITHM_IDS = {name: num for num, name in ALGORITHMS.items() if name}
# Digest styles accepted in <archived-checksum>/<extracted-checksum> and mackyle's named header.
HASH_STYLES = frozenset({"sha1", "md5", "sha224", "sha256", "sha384", "sha512"})

MAGIC = b"xar!"
HEADER = struct.Struct(">4sHHQQI")
HEADER_SIZE = HEADER.size  # 28
XMLDSIG_NS = "http://www.w3.org/2000/09/xmldsig#"

OCTET_STREAM = "application/octet-stream"
GZIP = "application/x-gzip"  # a zlib (RFC 1950) stream, despite the name
BZIP2 = "application/x-bzip2"
LZMA = "application/x-lzma"
XZ = "application/x-xz"

CHUNK = 1 << 20  # unit of every streamed read, write and copy
MAX_NAME_BYTES = 1024  # a longer member name is refused, read or written


@dataclass(frozen=True)
class XarData:
    offset: int  # heap-relative
    length: int  # stored bytes
    size: int  # decoded bytes
    encoding: str
    archived_checksum: tuple[str, str] | None  # (style, hex)
    extracted_checksum: tuple[str, str] | None


@dataclass(frozen=True)
class XarEntry:
    id: int
    path: str  # "/"-joined from nesting, no leading slash
    name: str
    type: str
    mode: int | None
    uid: int | None
    gid: int | None
    user: str | None
    group: str | None
    mtime: str | None
    link: str | None
    data: XarData | None


@dataclass(frozen=True)
class XarSignature:
    style: str  # "RSA" or "CMS"
    offset: int
    size: int
    certificates: tuple[bytes, ...] = field(repr=False)  # DER, TOC order (leaf first)


class Signer(Protocol):
    """Signs the TOC checksum; implemented by builder/formats/pkg/signing.py."""

    rsa_size: int
    cms_size: int
    certificates: Sequence[bytes]

    def sign(self, toc_checksum: bytes) -> tuple[bytes, bytes]: ...


def new_hash(style: str, where: str):
    style = style.lower()
    if style not in HASH_STYLES:
        raise UnsupportedError(f"unsupported checksum style {style!r}", where=where)
    return hashlib.new(style)


def check_name(name: str, where: str) -> None:
    """Refuse member names that could escape the extraction directory."""
    if not name:
        raise FormatError("empty member name", where=where)
    if "/" in name or "\x00" in name or name in (".", ".."):
        raise FormatError(f"unsafe member name {name!r}", where=where,
                          hint="names must not contain '/', NUL, or be '.' or '..'")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise FormatError(f"member name longer than {MAX_NAME_BYTES} bytes", where=where)


def split_path(path: str, where: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise FormatError(f"bad member path {path!r}", where=where)
    if path.startswith("/"):
        raise FormatError(f"absolute member path {path!r}", where=where)
    parts = path.split("/")
    for part in parts:
        check_name(part, f"{where}: {path}" if where else path)
    return parts
