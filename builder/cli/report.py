"""The fleet readiness report: one self-contained HTML file an admin can open, keep and mail.

`check --report FILE.html` writes it from the same DeviceResults the terminal table shows. Every
value that comes from a certificate or the CSV is escaped by jinja2's autoescape; the page loads
nothing (its Content-Security-Policy allows no network and only its own inline style and script,
pinned by hash), and its bytes depend only on the results, the rules and the check moment.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..errors import ConfigError

WEEKS = 26
SOON_DAYS = 30  # the validity rule's warning threshold: bars inside it are drawn as urgent

# chart geometry (SVG user units)
_W, _H = 780, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 44, 12, 16, 40
_STATUS_RANK = {"FAIL": 0, "warn": 1, "ok": 2}


@dataclass(frozen=True)
class Row:
    hostname: str
    status: str  # FAIL / warn / ok (DeviceResult.status)
    findings: tuple[tuple[str, str, str], ...]  # (rule, severity, message)
    expiry: str  # YYYY-MM-DD or ""
    days_left: int | None  # whole days from the check moment to expiry (negative: expired)

    @property
    def rank(self) -> int:
        return _STATUS_RANK.get(self.status, 3)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    start: date
    label: str  # "" for unlabelled weeks
    soon: bool


@dataclass(frozen=True)
class Timeline:
    bars: tuple[Bar, ...]
    ticks: tuple[tuple[float, int], ...]  # (y, value)
    expired: int  # already expired at the check moment
    later: int  # expiring after the charted weeks
    total: int  # devices with a known expiry
    width: int = _W
    height: int = _H
    left: int = _LEFT
    right: int = _W - _RIGHT
    baseline: int = _H - _BOTTOM


def rows(results: Sequence[Any], at: datetime) -> list[Row]:
    out = []
    for r in results:
        days = None
        expiry = ""
        if r.not_after is not None:
            end = r.not_after.astimezone(timezone.utc)
            expiry = end.date().isoformat()
            days = (end - at).days  # floor: 0 = expires within a day
        out.append(Row(r.hostname, r.status, tuple((f.rule, f.severity, f.message) for f in r.findings),
                       expiry, days))
    return out


def weekly_expiries(results: Sequence[Any], at: datetime, weeks: int = WEEKS) -> tuple[list[int], int, int]:
    """Devices whose certificate expires in each 7-day window from `at`: ([counts], expired, later)."""
    counts = [0] * weeks
    expired = later = 0
    for r in results:
        if r.not_after is None:
            continue
        delta = r.not_after - at
        if delta <= timedelta(0):
            expired += 1
            continue
        week = delta // timedelta(days=7)
        if week < weeks:
            counts[week] += 1
        else:
            later += 1
    return counts, expired, later


def timeline(results: Sequence[Any], at: datetime, weeks: int = WEEKS) -> Timeline:
    counts, expired, later = weekly_expiries(results, at, weeks)
    top = max(counts + [1])
    if top > 4:  # a round axis maximum: 5, 10, 20, 50, 100, ...
        step = 10 ** (len(str(top)) - 1)
        top = next(m * step for m in (1, 2, 5, 10) if m * step >= top)
    plot_w = _W - _LEFT - _RIGHT
    plot_h = _H - _TOP - _BOTTOM
    slot = plot_w / weeks
    start = at.astimezone(timezone.utc).date()
    bars = []
    for i, n in enumerate(counts):
        h = plot_h * n / top
        day = start + timedelta(days=7 * i)
        label = day.strftime("%b %d") if i % 4 == 0 else ""
        bars.append(Bar(round(_LEFT + i * slot + slot * 0.15, 2), round(_TOP + plot_h - h, 2),
                        round(slot * 0.7, 2), round(h, 2), n, day, label, 7 * i < SOON_DAYS))
    ticks = tuple((round(_TOP + plot_h - plot_h * v / top, 2), v) for v in sorted({0, top // 2, top}))
    return Timeline(tuple(bars), ticks, expired, later, sum(1 for r in results if r.not_after is not None))


def summary(results: Sequence[Any], at: datetime) -> dict[str, int]:
    failed = sum(1 for r in results if not r.ok)
    soon = sum(1 for r in results if r.not_after is not None
               and timedelta(0) < r.not_after - at <= timedelta(days=SOON_DAYS))
    expired = sum(1 for r in results if r.not_after is not None and r.not_after <= at)
    return {"devices": len(results), "ok": len(results) - failed, "failed": failed,
            "warned": sum(1 for r in results if r.ok and r.warnings),
            "warnings": sum(len(r.warnings) for r in results), "soon": soon, "expired": expired}


def rule_sections(results: Sequence[Any], rules: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every rule with how many devices it failed or warned; rules with findings first."""
    failed: dict[str, int] = {}
    warned: dict[str, int] = {}
    for r in results:
        for rule in {f.rule for f in r.errors}:
            failed[rule] = failed.get(rule, 0) + 1
        for rule in {f.rule for f in r.warnings}:
            warned[rule] = warned.get(rule, 0) + 1
    out = []
    for order, (rule_id, rule) in enumerate(rules.items()):
        out.append({"id": rule_id, "title": rule.title, "explanation": rule.explanation, "fix": rule.fix,
                    "failed": failed.get(rule_id, 0), "warned": warned.get(rule_id, 0), "order": order})
    for rule_id in sorted((set(failed) | set(warned)) - set(rules)):  # findings of undocumented rules
        out.append({"id": rule_id, "title": rule_id, "explanation": "", "fix": "",
                    "failed": failed.get(rule_id, 0), "warned": warned.get(rule_id, 0), "order": len(out)})
    out.sort(key=lambda s: (not (s["failed"] or s["warned"]), s["order"]))
    return out


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(str(text).encode()).digest()).decode()


def render_report(fleet: str, results: Sequence[Any], at: datetime, rules: Mapping[str, Any]) -> str:
    import jinja2

    from ..artifacts.resources import templates_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["csp_hash"] = _csp_hash
    at = at.astimezone(timezone.utc)
    return env.get_template("report.html.j2").render(
        fleet=fleet, at=at.strftime("%Y-%m-%d %H:%M:%SZ"), rows=rows(results, at),
        summary=summary(results, at), timeline=timeline(results, at), rules=rule_sections(results, rules),
        weeks=WEEKS, soon_days=SOON_DAYS)


def write_report(path: Path, fleet: str, results: Sequence[Any], at: datetime, rules: Mapping[str, Any]) -> None:
    """Render and write atomically (a half-written report is never left behind)."""
    text = render_report(fleet, results, at, rules)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise ConfigError(f"cannot write the report: {exc.strerror or exc}", where=str(path),
                          hint="choose a writable path for --report") from None
