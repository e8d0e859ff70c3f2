"""BOM ("BOMStore") files: reader, writer and the POSIX cksum they carry (format doc §6).

The Bom becomes the install receipt (`pkgutil --files`, uninstall and verify tools read it), and a
malformed one crashes `installer`, so the reader bounds every offset and the writer follows the
layout of bomutils' mkbom (shipped by Firefox and many others) with Apple pkgbuild's record shape.
"""

from __future__ import annotations

import struct
import zlib
from collections import deque
from dataclasses import dataclass
from typing import BinaryIO, Iterable, Mapping

from ...errors import BuildError, FormatError, UnsupportedError
from .tree import TreeEntry, check_tree, decode_name, encode_name

MAGIC = b"BOMStore"
HEADER_SIZE = 512
PATHS_BLOCK_SIZE = 4096
VINDEX_BLOCK_SIZE = 128
LEAF_CAPACITY = 256  # bomutils' proven fill; Apple's own limit (<= 510 per 4096-byte node) is unknown
TYPE_NAMES = {1: "file", 2: "dir", 3: "symlink", 4: "device"}
TYPE_CODES = {"file": 1, "dir": 2, "symlink": 3}
APPLE_FLAGS = 0x000F  # what pkgbuild writes for everything that is not a Mach-O
BOMUTILS_FLAGS = 0x0003
PLACEHOLDER_FLAGS = 0x0001
MAX_TREE_DEPTH = 32
CHUNK = 1 << 20

# ---------------------------------------------------------------------------------------------
# POSIX cksum

_REV8 = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _rev32(x: int) -> int:
    return int(f"{x:032b}"[::-1], 2)


class Cksum:
    """Streaming POSIX `cksum` CRC (CRC-32/CKSUM: poly 0x04C11DB7 MSB-first, init 0, length bytes
    appended LSB-first, final complement).

    Computed with zlib's C CRC-32: that is the same polynomial run LSB-first, so feeding it
    bit-reversed bytes and bit-reversing the register gives the MSB-first CRC exactly. Throughput is
    that of bytes.translate + zlib.crc32 (well over 500 MB/s), not of a Python loop (~10 MB/s).
    """

    __slots__ = ("_reg", "_length")

    def __init__(self) -> None:
        self._reg = 0  # LSB-first register == bit-reversed MSB-first register
        self._length = 0

    def _feed(self, data: bytes) -> None:
        # zlib.crc32(d, v) == ~R(d, ~v) for the raw register update R; so R(d, r) = ~crc32(d, ~r)
        self._reg = zlib.crc32(data.translate(_REV8), self._reg ^ 0xFFFFFFFF) ^ 0xFFFFFFFF

    def update(self, data) -> None:
        data = bytes(data)
        self._feed(data)
        self._length += len(data)

    def value(self) -> int:
        tail = bytearray()
        n = self._length
        while n:
            tail.append(n & 0xFF)
            n >>= 8
        saved = self._reg
        self._feed(bytes(tail))
        result = _rev32(self._reg) ^ 0xFFFFFFFF
        self._reg = saved
        return result


def cksum(data_or_stream: bytes | bytearray | memoryview | BinaryIO) -> int:
    """`cksum` of bytes or of everything readable from a binary stream (read in 1 MiB chunks)."""
    crc = Cksum()
    if isinstance(data_or_stream, (bytes, bytearray, memoryview)):
        crc.update(data_or_stream)
    else:
        while True:
            chunk = data_or_stream.read(CHUNK)
            if not chunk:
                break
            crc.update(chunk)
    return crc.value()


def entry_checksum(entry: TreeEntry) -> int:
    """Checksum a BOM records for a tree entry: content for files, target string for links."""
    if entry.kind == "dir":
        return 0
    if entry.kind == "symlink":
        return cksum(encode_name(entry.link_target or ""))
    if entry.data is not None:
        return cksum(entry.data)
    if entry.source is None:
        raise BuildError("file entry has neither source nor data", where=entry.path)
    try:
        with open(entry.source, "rb") as fh:
            return cksum(fh)
    except OSError as exc:
        raise BuildError(f"cannot read: {exc.strerror}", where=str(entry.source)) from None


# ---------------------------------------------------------------------------------------------
# Reader


@dataclass(frozen=True)
class BomEntry:
    """One path of a BOM. `mode` is the full st_mode. `checksum` is None for directories; for a
    device it holds the device number the record stores in that field."""

    path: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime: int
    size: int
    checksum: int | None
    link_target: str | None = None
    flags: int = APPLE_FLAGS

    @property
    def placeholder(self) -> bool:
        """pkgbuild writes records with flags 0x0001 and no metadata for paths it synthesizes: the
        "." of a --component package (mode 0, mtime 0) and AppleDouble "._*" files (size and
        checksum 0). Their fields describe nothing on disk."""
        return self.flags == PLACEHOLDER_FLAGS


@dataclass(frozen=True)
class BomVar:
    """A named variable: its block, and for tree variables the tree header fields."""

    name: str
    index: int
    offset: int
    length: int
    child: int | None = None
    block_size: int | None = None
    path_count: int | None = None


class _Store:
    def __init__(self, data: bytes, where: str | None):
        self.data = data
        self.where = where
        if len(data) < 32 or data[:8] != MAGIC:
            self.fail("not a BOM file (no 'BOMStore' header)")
        (self.version, self.nblocks, index_off, index_len,
         self.vars_off, self.vars_len) = struct.unpack_from(">6I", data, 8)
        if self.version != 1:
            self.fail(f"unsupported BOM version {self.version}")
        count = self.u32(index_off, "block table")
        if count > (len(data) - index_off - 4) // 8:
            self.fail(f"block table of {count} entries does not fit the file")
        self.blocks = [struct.unpack_from(">II", data, index_off + 4 + 8 * i) for i in range(count)]

    def fail(self, message: str):
        raise FormatError(f"malformed BOM: {message}", where=self.where)

    def u32(self, offset: int, what: str) -> int:
        if offset < 0 or offset + 4 > len(self.data):
            self.fail(f"{what} at offset {offset} is outside the file")
        return struct.unpack_from(">I", self.data, offset)[0]

    def block(self, index: int, what: str, minimum: int = 0) -> bytes:
        if not 0 < index < len(self.blocks):
            self.fail(f"{what} refers to block {index}, table has {len(self.blocks)}")
        offset, length = self.blocks[index]
        if length == 0 or offset + length > len(self.data):
            self.fail(f"{what} block {index} ({offset}+{length}) is outside the file")
        if length < minimum:
            self.fail(f"{what} block {index} is {length} bytes, needs at least {minimum}")
        return self.data[offset:offset + length]

    def variables(self) -> dict[str, BomVar]:
        end = self.vars_off + self.vars_len
        count = self.u32(self.vars_off, "variable table")
        if end > len(self.data) or count > self.vars_len // 5:
            self.fail("variable table does not fit the file")
        pos = self.vars_off + 4
        out: dict[str, BomVar] = {}
        for _ in range(count):
            if pos + 5 > end:
                self.fail("variable table is truncated")
            index, name_len = struct.unpack_from(">IB", self.data, pos)
            if pos + 5 + name_len > end:
                self.fail("variable name runs past the variable table")
            name = self.data[pos + 5:pos + 5 + name_len].rstrip(b"\0").decode("latin-1")
            pos += 5 + name_len
            self.block(index, f"variable {name!r}")
            offset, length = self.blocks[index]
            out[name] = BomVar(name, index, offset, length)
        return out

    def tree(self, index: int, what: str) -> tuple[int, int, int]:
        blk = self.block(index, what, 20)
        if blk[:4] != b"tree":
            self.fail(f"{what} block {index} is not a tree")
        version, child, block_size, path_count = struct.unpack_from(">4I", blk, 4)
        if version != 1:
            self.fail(f"{what} tree version {version}")
        return child, block_size, path_count

    def node(self, index: int, what: str) -> tuple[int, list[tuple[int, int]], int, int]:
        blk = self.block(index, what, 12)
        is_leaf, count, forward, backward = struct.unpack_from(">HHII", blk, 0)
        if 12 + 8 * count > len(blk):
            self.fail(f"{what} node {index} holds {count} entries but is {len(blk)} bytes")
        pairs = [struct.unpack_from(">II", blk, 12 + 8 * i) for i in range(count)]
        return is_leaf, pairs, forward, backward


def _walk_leaves(store: _Store, root: int, what: str) -> list[tuple[int, int]]:
    """All (index0, index1) pairs of a B-tree's leaves, left to right."""
    out: list[tuple[int, int]] = []
    seen: set[int] = set()

    def visit(index: int, depth: int) -> None:
        if depth > MAX_TREE_DEPTH:
            store.fail(f"{what} tree is deeper than {MAX_TREE_DEPTH}")
        if index in seen:
            store.fail(f"{what} tree node {index} is reachable twice")
        seen.add(index)
        is_leaf, pairs, _, _ = store.node(index, what)
        if is_leaf:
            out.extend(pairs)
        else:
            for child, _last in pairs:
                visit(child, depth + 1)

    visit(root, 0)
    return out


def _parse_record(store: _Store, blk: bytes, index: int) -> tuple:
    if len(blk) < 27:
        store.fail(f"path record block {index} is {len(blk)} bytes, needs 27")
    kind, _one, flags, mode, uid, gid, mtime, size, _one2, check = struct.unpack_from(">BBHHIIIIBI", blk, 0)
    if kind not in TYPE_NAMES:
        store.fail(f"path record block {index} has unknown type {kind}")
    link = None
    if kind == 3:
        if len(blk) < 31:
            store.fail(f"symlink record block {index} has no link name length")
        (link_len,) = struct.unpack_from(">I", blk, 27)
        if link_len == 0 or 31 + link_len > len(blk):
            store.fail(f"symlink record block {index} link name ({link_len} bytes) runs past the block")
        link = decode_name(blk[31:31 + link_len].split(b"\0", 1)[0])
    return TYPE_NAMES[kind], flags, mode, uid, gid, mtime, size, check, link


def read_bom_vars(data: bytes, *, where: str | None = None) -> dict[str, BomVar]:
    """Variables by name; tree variables (Paths, HLIndex, Size64, and VIndex's inner tree) carry
    their tree header."""
    store = _Store(data, where)
    out = {}
    for name, var in store.variables().items():
        if name in ("Paths", "HLIndex", "Size64"):
            child, block_size, count = store.tree(var.index, name)
            store.node(child, name)
            var = BomVar(name, var.index, var.offset, var.length, child, block_size, count)
        elif name == "VIndex":
            blk = store.block(var.index, name, 12)
            _, tree_index, _ = struct.unpack_from(">III", blk, 0)
            child, block_size, count = store.tree(tree_index, name)
            store.node(child, name)
            var = BomVar(name, var.index, var.offset, var.length, child, block_size, count)
        elif name == "BomInfo":
            blk = store.block(var.index, name, 12)
            version, _paths, n_info = struct.unpack_from(">3I", blk, 0)
            if 12 + 16 * n_info > len(blk):
                store.fail("BomInfo entries run past their block")
        out[name] = var
    return out


def read_bom(data: bytes, *, where: str | None = None) -> list[BomEntry]:
    """Entries of the Paths tree in stored order (sorted by parent id, then name bytes)."""
    try:
        return _read_bom(data, where)
    except (struct.error, IndexError, ValueError, RecursionError) as exc:  # defence in depth
        raise FormatError(f"malformed BOM: {exc}", where=where) from None


def _read_bom(data: bytes, where: str | None) -> list[BomEntry]:
    store = _Store(data, where)
    variables = read_bom_vars(data, where=where)
    if "Paths" not in variables:
        store.fail("no Paths variable")
    paths_var = variables["Paths"]
    pairs = _walk_leaves(store, paths_var.child, "Paths")
    if len(pairs) > len(store.blocks):
        store.fail("more paths than blocks")
    nodes: dict[int, tuple[int, bytes]] = {}
    records = []
    for info1_index, file_index in pairs:
        path_id, info2_index = struct.unpack_from(">II", store.block(info1_index, "PathInfo1", 8), 0)
        fblk = store.block(file_index, "File", 5)
        parent = struct.unpack_from(">I", fblk, 0)[0]
        name = fblk[4:].split(b"\0", 1)[0]
        if not name:
            store.fail(f"File block {file_index} has an empty name")
        if path_id in nodes or path_id == 0:
            store.fail(f"path id {path_id} used twice (or 0)")
        nodes[path_id] = (parent, name)
        records.append((path_id, _parse_record(store, store.block(info2_index, "PathInfo2"), info2_index)))
    paths: dict[int, str] = {}

    def path_of(pid: int) -> str:
        chain = []
        cur = pid
        while cur not in paths:
            if cur not in nodes:
                store.fail(f"path id {pid} has a missing parent {cur}")
            if len(chain) > len(nodes):
                store.fail(f"parent ids of path {pid} form a loop")
            chain.append(cur)
            cur = nodes[cur][0]
            if cur == 0:
                break
        base = paths.get(cur) if cur != 0 else None
        for item in reversed(chain):
            parent, raw = nodes[item]
            name = decode_name(raw)
            if parent == 0:
                base = name if name == "." or name.startswith("./") else "./" + name
            else:
                base = f"{base}/{name}"
            paths[item] = base
        return paths[pid]

    out = []
    for pid, (kind, flags, mode, uid, gid, mtime, size, check, link) in records:
        out.append(BomEntry(path_of(pid), kind, mode, uid, gid, mtime, size,
                            None if kind == "dir" else check, link, flags))
    return out


# ---------------------------------------------------------------------------------------------
# Writer


class _Blocks:
    def __init__(self) -> None:
        self.items: list[bytearray] = [bytearray()]  # index 0: the null block

    def add(self, data: bytes) -> int:
        self.items.append(bytearray(data))
        return len(self.items) - 1


def _node(is_leaf: bool, pairs: list[tuple[int, int]], forward: int, backward: int, pad_to: int) -> bytes:
    raw = struct.pack(">HHII", int(is_leaf), len(pairs), forward, backward)
    raw += b"".join(struct.pack(">II", a, b) for a, b in pairs)
    return raw.ljust(pad_to, b"\0")


def _tree(child: int, block_size: int, count: int) -> bytes:
    return b"tree" + struct.pack(">IIIIB", 1, child, block_size, count, 0)


def _u32(value: int, what: str, path: str) -> int:
    if not 0 <= value <= 0xFFFFFFFF:
        raise UnsupportedError(f"{what} {value} does not fit a BOM record (files must be < 4 GiB)",
                               where=path)
    return value


def _record(entry: TreeEntry, checksum: int, style: str) -> bytes:
    link = encode_name(entry.link_target or "") + b"\0" if entry.kind == "symlink" else b""
    size = len(link) - 1 if entry.kind == "symlink" else entry.size
    flags = APPLE_FLAGS if style == "apple" else BOMUTILS_FLAGS
    raw = struct.pack(">BBHHIIIIBII", TYPE_CODES[entry.kind], 1, flags, entry.st_mode & 0xFFFF,
                      _u32(entry.uid, "uid", entry.path), _u32(entry.gid, "gid", entry.path),
                      _u32(entry.mtime, "mtime", entry.path), _u32(size, "size", entry.path), 1,
                      checksum, len(link)) + link
    if style == "apple":
        # pkgbuild's records: files carry 4 and symlinks 8 trailing zero bytes (meaning unknown)
        raw += b"\0" * {"file": 4, "symlink": 8}.get(entry.kind, 0)
    return raw


def _bfs_order(entries: list[TreeEntry]) -> list[tuple[int, TreeEntry]]:
    """(parent id, entry) in id order: breadth-first from ".", children by name bytes, so that
    parent ids never decrease and the leaf order is the (parent id, name) key order."""
    children: dict[str, list[TreeEntry]] = {}
    root = None
    for entry in entries:
        if entry.parent is None:
            root = entry
        else:
            children.setdefault(entry.parent, []).append(entry)
    for kids in children.values():
        kids.sort(key=lambda e: encode_name(e.name))
    order: list[tuple[int, TreeEntry]] = []
    queue: deque[tuple[int, list[TreeEntry]]] = deque([(0, [root])])
    while queue:
        parent_id, kids = queue.popleft()
        for kid in kids:
            order.append((parent_id, kid))
            queue.append((len(order), children.get(kid.path, [])))
    return order


def write_bom(entries: Iterable[TreeEntry], *, checksums: Mapping[str, int] | None = None,
              style: str = "apple") -> bytes:
    """BOM bytes for a payload tree (must contain "." and every parent).

    Layout as bomutils' mkbom: 512-byte header, vars right after it (BomInfo, Paths, HLIndex,
    VIndex, Size64; names without NUL), blocks in creation order, exact block table, empty free
    list. Paths leaves hold <= 256 entries, chained forward/backward under branch nodes.
    style="apple" (default) uses pkgbuild's record shape (flags 0x000f, trailing zeros) and
    allocates tree nodes at their tree's block size as Apple does; style="bomutils" reproduces
    mkbom's bytes exactly (flags 3, 31-byte records, exact-size nodes).
    `checksums` (path -> cksum, e.g. PayloadStats.checksums) avoids reading files again.
    """
    if style not in ("apple", "bomutils"):
        raise ValueError(f"unknown BOM style {style!r}")
    entries = check_tree(entries)
    pad = style == "apple"
    order = _bfs_order(entries)
    num = len(order)
    blocks = _Blocks()
    var_index: dict[str, int] = {}

    var_index["BomInfo"] = blocks.add(struct.pack(">III", 1, num + 1, 1) + b"\0" * 16)

    leaves: list[tuple[int, int]] = []  # (leaf block, last File block in it)
    pairs: list[tuple[int, int]] = []
    last_file = 0

    def close_leaf() -> None:
        backward = leaves[-1][0] if leaves else 0
        leaf = blocks.add(_node(True, pairs, 0, backward, PATHS_BLOCK_SIZE if pad else 0))
        if leaves:
            struct.pack_into(">I", blocks.items[leaves[-1][0]], 4, leaf)
        leaves.append((leaf, last_file))

    for path_id, (parent_id, entry) in enumerate(order, start=1):
        if pairs and len(pairs) == LEAF_CAPACITY:
            close_leaf()
            pairs = []
        if checksums is not None and entry.path in checksums:
            check = checksums[entry.path]
        else:
            check = entry_checksum(entry)
        info2 = blocks.add(_record(entry, check, style))
        info1 = blocks.add(struct.pack(">II", path_id, info2))
        name = b"." if entry.path == "." else encode_name(entry.name)
        last_file = blocks.add(struct.pack(">I", parent_id) + name + b"\0")
        pairs.append((info1, last_file))
    close_leaf()

    level = leaves
    while len(level) > 1:  # one branch for <= 256 leaves (bomutils); deeper only beyond 65,536 paths
        groups = [level] if len(level) <= LEAF_CAPACITY else \
            [level[i:i + LEAF_CAPACITY] for i in range(0, len(level), LEAF_CAPACITY)]
        level = [(blocks.add(_node(False, group, 0, 0, PATHS_BLOCK_SIZE if pad else 0)), group[-1][1])
                 for group in groups]
    var_index["Paths"] = blocks.add(_tree(level[0][0], PATHS_BLOCK_SIZE, num))

    def empty_leaf(size: int) -> int:
        return blocks.add(_node(True, [], 0, 0, size if pad else 0))

    var_index["HLIndex"] = blocks.add(_tree(empty_leaf(PATHS_BLOCK_SIZE), PATHS_BLOCK_SIZE, 0))
    vtree = blocks.add(_tree(empty_leaf(VINDEX_BLOCK_SIZE), VINDEX_BLOCK_SIZE, 0))
    var_index["VIndex"] = blocks.add(struct.pack(">IIIB", 1, vtree, 0, 0))
    var_index["Size64"] = blocks.add(_tree(empty_leaf(PATHS_BLOCK_SIZE), PATHS_BLOCK_SIZE, 0))

    names = ("BomInfo", "Paths", "HLIndex", "VIndex", "Size64")
    var_bytes = struct.pack(">I", len(names)) + b"".join(
        struct.pack(">IB", var_index[n], len(n)) + n.encode() for n in names)
    data_start = HEADER_SIZE + len(var_bytes)
    table = [struct.pack(">I", len(blocks.items))]
    offset = data_start
    for item in blocks.items:
        table.append(struct.pack(">II", offset if item else 0, len(item)))
        offset += len(item)
    index_offset = offset
    free_list = struct.pack(">I", 0) + b"\0" * 16
    index = b"".join(table) + free_list
    header = MAGIC + struct.pack(">6I", 1, len(blocks.items) - 1, index_offset, len(index),
                                 HEADER_SIZE, len(var_bytes))
    return b"".join([header.ljust(HEADER_SIZE, b"\0"), var_bytes, *map(bytes, blocks.items), index])
