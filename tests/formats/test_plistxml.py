"""builder.formats.plistxml writes exactly what plistlib writes (PayloadUUIDs digest these bytes)."""

from __future__ import annotations

import datetime
import plistlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.formats.plistxml import dumps

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
SCALARS = (TEXT | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
           | st.floats(allow_nan=False) | st.binary(max_size=300)
           | st.datetimes(min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2100, 1, 1)))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=25)


def _plistlib(value):
    try:
        return plistlib.dumps(value, fmt=plistlib.FMT_XML, sort_keys=True)
    except (TypeError, ValueError, OverflowError) as exc:
        return type(exc)


def _ours(value):
    try:
        return dumps(value)
    except (TypeError, ValueError, OverflowError) as exc:
        return type(exc)


@settings(max_examples=400, deadline=None)
@given(VALUES)
def test_same_bytes_as_plistlib(value):
    assert _ours(value) == _plistlib(value)


@pytest.mark.parametrize("value", [
    {"deep": [[[[[[{"data": bytes(range(256)) * 3}]]]]]]},  # base64 lines narrow with the depth
    {"a\r\nb": "x\ry&<z>", "empty": {}, "none": [], "big": 1 << 63, "neg": -(1 << 63)},
    {"bad": "bell\x07"}, {1: "not a string key"}, {"too big": 1 << 64}, {"set": {1, 2}}, None,
])
def test_edges_and_refusals_match_plistlib(value):
    assert _ours(value) == _plistlib(value)
