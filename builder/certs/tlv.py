"""Cached OID decoding: a .pfx names the same dozen object identifiers over and over."""

from __future__ import annotations

import functools

from ..formats import der


@functools.lru_cache(maxsize=256)
def _decode_oid(value: bytes) -> str:
    return der.decode_oid(value)


def oid(node: der.Node) -> str:
    """node.as_oid(), cached by the encoded value (public data only)."""
    node.expect(der.OID, "object identifier")
    return _decode_oid(node.value)
