"""build --json's artifact rows are formatted directly: the same text json's encoder writes."""

from __future__ import annotations

import io
import json
import sys

from hypothesis import given, strategies as st

from builder.artifacts.dist import Artifact
from builder.cli.buildreport import artifact_rows
from builder.cli.output import emit_json

artifacts = st.builds(Artifact, path=st.text(), kind=st.text(), sha256=st.text(), size=st.integers(0, 2**63),
                      secret=st.booleans(), signed=st.none() | st.text(), sealed=st.booleans())


def as_dict(a: Artifact) -> dict:
    return {"path": a.path, "kind": a.kind, "sha256": a.sha256, "size": a.size, "secret": a.secret,
            "signed": a.signed, "sealed": a.sealed}


@given(st.lists(artifacts, max_size=5))
def test_rows_are_what_json_writes(arts):
    encode = json.JSONEncoder(sort_keys=True, default=str).encode
    assert artifact_rows(arts) == [encode(as_dict(a)) for a in arts]


@given(st.lists(artifacts, min_size=1, max_size=5))
def test_the_document_is_what_the_dicts_give(arts):
    def emitted(rows) -> str:
        out, sys.stdout = sys.stdout, io.StringIO()
        try:
            emit_json({"artifacts": rows, "ok": True}, one_item_per_line=True)
            return sys.stdout.getvalue()
        finally:
            sys.stdout = out
    text = emitted(artifact_rows(arts))
    assert text == emitted([as_dict(a) for a in arts])
    assert json.loads(text)["artifacts"] == [as_dict(a) for a in arts]
