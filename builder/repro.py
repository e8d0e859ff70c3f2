"""Reproducibility helpers: one build timestamp, read once from SOURCE_DATE_EPOCH."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone

from .errors import ConfigError


def build_epoch() -> int:
    """Seconds since the epoch for every timestamp fleetpkg writes.

    SOURCE_DATE_EPOCH when set (reproducible builds), else the current time.
    """
    raw = os.environ.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return int(time.time())
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"not a whole number of seconds: {raw!r}", where="SOURCE_DATE_EPOCH",
            hint="set it to e.g. $(git log -1 --format=%ct)",
        ) from None
    if value < 0:
        raise ConfigError("must not be negative", where="SOURCE_DATE_EPOCH")
    return value


def build_datetime() -> datetime:
    return datetime.fromtimestamp(build_epoch(), tz=timezone.utc)
