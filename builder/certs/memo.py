"""Memos of facts about certificate objects, looked up by the objects' identities.

Hashing or comparing an x509.Certificate walks its whole DER (~3 us), more than most facts about
it cost to look up, while a fleet build hands the same CA objects (its configured CAs, loaded once
per worker) to every device. So these memos key on object identity: an equal certificate that is
another object just has its facts worked out again (they are functions of the DER, so the answer is
the same). Public data only: certificates, never keys.
"""

from __future__ import annotations

import functools
import operator


def by_object(maxsize: int):
    """Memoise a function of certificate objects (or tuples of them) by their identities. Each entry
    holds its objects, so no id is reused while it is remembered; the memo forgets everything when
    full. `.remember(value, *objs)` records a value established elsewhere."""
    def wrap(fn):
        memo: dict[tuple[int, ...], tuple[tuple, object]] = {}

        def remember(value, *objs):
            if len(memo) >= maxsize:
                memo.clear()
            memo[tuple(map(id, objs))] = (objs, value)
            return value

        @functools.wraps(fn)
        def cached(*objs):
            hit = memo.get(tuple(map(id, objs)))
            if hit is not None and all(map(operator.is_, hit[0], objs)):
                return hit[1]
            return remember(fn(*objs), *objs)
        cached.cache_clear = memo.clear
        cached.remember = remember
        return cached
    return wrap
