"""The compliance report for people: a standalone HTML page and a compact plain-text form.

The reader is a reviewer, not an engineer, so figures are put in words (durations via
``seconds``, dates spelled out) and every verdict is said in text, not only in colour. The
page must open from a file or an archive years later and print the same: it loads nothing
(inline CSS, inline SVG charts, no scripts, fonts or images). The layout lives in Jinja2
templates shipped as package data; this module only supplies phrases and chart coordinates,
never markup, so all escaping is the templates' (autoescaped) business.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from drengine.reports.drill_report import seconds

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
# Label (said in words) and CSS class of each policy status.
STATUS = {
    "met": ("Met its targets", "met"),
    "missed": ("Missed a target", "missed"),
    "failed": ("Restore failed", "missed"),
    "not proven": ("Not drilled", "unproven"),
}
# Steps of a duration axis, so that ticks land on round figures (1 s, 5 min, 2 h ...).
_STEPS_MS = [
    n * unit
    for unit in (1, 1000, 60_000, 3_600_000)
    for n in (1, 2, 5, 10, 15, 20, 30)
    if n * unit <= 12 * 3_600_000
] + [d * 86_400_000 for d in (1, 2, 7, 14, 30, 90, 365)]

# Chart geometry in SVG user units (the viewBox scales it to the page width).
WIDTH, LEFT, RIGHT, TOP, PANEL_H, GAP = 640, 84, 20, 40, 120, 56


def _at(text: str) -> datetime:
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def day(text: str) -> str:
    """'1 October 2026' for an RFC 3339 time."""
    t = _at(text).astimezone(UTC)
    return f"{t.day} {_MONTHS[t.month - 1]} {t.year}"


def moment(text: str) -> str:
    """'1 October 2026, 09:30 UTC'."""
    return f"{day(text)}, {_at(text).astimezone(UTC):%H:%M} UTC"


def period_words(period: dict[str, Any]) -> str:
    """The period with its exclusive end shown as the last day it covers."""
    last = _at(period["until"]) - timedelta(microseconds=1)
    return f"{day(period['since'])} \N{EN DASH} {day(last.isoformat())}"


def short(oid: str) -> str:
    return oid[:12]


def size(n: int | None) -> str:
    """Bytes in decimal units, as storage is sold: '1.2 GB'."""
    if n is None:
        return "n/a"
    if n < 1000:
        return f"{n} bytes"
    v = float(n)
    for unit in ("kB", "MB", "GB", "TB"):
        v /= 1000
        if v < 1000 or unit == "TB":
            break
    return f"{v:.1f} {unit}"


def against(target_ms: int | None, met: bool | None) -> str:
    """How a figure compares to its target, in words."""
    if target_ms is None:
        return "no target set"
    if met is None:
        return "not measured"
    return "within target" if met else "over target"


def gap_result(rpo: dict[str, Any]) -> str:
    """The RPO verdict: the gap must fit the target and some backup must have been restored."""
    if rpo["target_ms"] is not None and rpo["verified"] is None:
        return "not proven (no backup was restored)"
    return against(rpo["target_ms"], rpo["met"])


def tone(result: str) -> str:
    """CSS class of a result phrase: good, bad, or neutral."""
    if result == "within target":
        return "ok"
    return "bad" if result.startswith(("over", "not proven")) else ""


def target_sentences(targets: dict[str, Any] | None) -> list[str]:
    if targets is None:
        return [
            "No recovery targets are set for this system: backups and restore drills are "
            "reported, but not judged against a target."
        ]
    rto, rpo = targets["rto_ms"], targets["rpo_ms"]
    return [
        f"Recovery time objective (RTO): a full restore must finish within {seconds(rto)}."
        if rto is not None
        else "No recovery time objective (RTO) is set: restore times are shown, not judged.",
        f"Recovery point objective (RPO): at most {seconds(rpo)} of data may be lost."
        if rpo is not None
        else "No recovery point objective (RPO) is set: backup gaps are shown, not judged.",
    ]


def forecast_words(fc: dict[str, Any] | None) -> str:
    if fc is None:
        return "No forecast: no restore drill has measured the restore speed yet."
    if fc["predicted_ms"] is None:
        return "No forecast: the drills did not measure a restore speed."
    n = fc["drills"]
    text = (
        f"A full restore of the newest backup ({size(fc['bytes'])}) is forecast to take "
        f"{seconds(fc['predicted_ms'])}, from the restore speed of the last "
        f"{n} drill{'s' * (n != 1)}"
    )
    if fc["exceeds_target"] is None:
        return text + "."
    verdict = "over" if fc["exceeds_target"] else "within"
    return text + f": {verdict} the {seconds(fc['target_ms'])} target."


def lock_words(lock: dict[str, Any] | None) -> str:
    if not lock:
        return "not enabled"
    days = lock["days"]
    return f"object lock, {str(lock['mode']).lower()} mode, {days} day{'s' * (days != 1)}"


@dataclass
class Tick:
    pos: float
    label: str


@dataclass
class Point:
    x: float
    y: float
    ok: bool
    label: str


@dataclass
class Panel:
    """One duration-over-time plot; ``top`` is its upper edge in the SVG."""

    title: str
    top: float
    bottom: float
    target_y: float | None
    target_label: str
    yticks: list[Tick]
    points: list[Point] = field(default_factory=list)


@dataclass
class Chart:
    width: int
    height: int
    left: int
    right: int
    xticks: list[Tick]
    panels: list[Panel]


def _xticks(since: datetime, until: datetime, x: Callable[[datetime], float]) -> list[Tick]:
    """Month starts when the period spans a few months, else five evenly spaced days."""
    months: list[datetime] = []
    t = datetime(since.year, since.month, 1, tzinfo=UTC)
    while t <= until and len(months) < 14:
        if t >= since:
            months.append(t)
        t = datetime(t.year + t.month // 12, t.month % 12 + 1, 1, tzinfo=UTC)
    if not 2 <= len(months) <= 13:
        months = [since + (until - since) * i / 4 for i in range(5)]
    with_year = since.year != (until - timedelta(microseconds=1)).year
    return [
        Tick(x(t), f"{t.day} {_MONTHS[t.month - 1][:3]}" + (f" {t.year}" if with_year else ""))
        for t in months
    ]


def _panel(
    title: str, top: float, values: list[int], target: int | None
) -> tuple[Panel, Callable[[int], float]]:
    """A panel with round-figure ticks up to just above the largest value or the target,
    and the function from a duration to its y."""
    vmax = max([*values, target or 0, 1])
    step = next((s for s in _STEPS_MS if vmax * 1.1 / s <= 4), _STEPS_MS[-1])
    ymax = math.ceil(vmax * 1.1 / step) * step
    bottom = top + PANEL_H

    def y(ms: int) -> float:
        return round(bottom - ms / ymax * PANEL_H, 1)

    ticks = [Tick(y(v), seconds(v) if v else "0") for v in range(0, ymax + 1, step)]
    label = "" if target is None else f"target {seconds(target)}"
    panel = Panel(title, top, bottom, None if target is None else y(target), label, ticks)
    return panel, y


def chart(section: dict[str, Any], period: dict[str, Any]) -> Chart | None:
    """Coordinates of a policy's RTO and RPO chart: two panels (restore times and the age
    of the newest proven backup differ by orders of magnitude) over one time axis, the
    drill times within the period. None without a drill to plot."""
    series = section["series"]
    if not series:
        return None
    since, until = _at(period["since"]), _at(period["until"])
    span = max((until - since).total_seconds(), 1.0)
    plot_w = WIDTH - LEFT - RIGHT

    def x(t: datetime) -> float:
        frac = min(max((t - since).total_seconds() / span, 0.0), 1.0)
        return round(LEFT + frac * plot_w, 1)

    targets = section["targets"] or {}
    rto = [(s, s["rto_ms"]) for s in series if s["rto_ms"] is not None]
    rpo = [(s, s["rpo_verified_age_ms"]) for s in series if s["rpo_verified_age_ms"] is not None]
    panels = []
    for i, (title, rows, target, what) in enumerate(
        [
            ("Restore time (RTO), per drill", rto, targets.get("rto_ms"), "restore took"),
            (
                "Age of the newest proven backup (RPO)",
                rpo,
                targets.get("rpo_ms"),
                "newest proven backup was",
            ),
        ]
    ):
        panel, y = _panel(title, TOP + i * (PANEL_H + GAP), [v for _, v in rows], target)
        for s, v in sorted(rows, key=lambda r: _at(r[0]["time"])):
            text = f"{day(s['time'])}: {what} {seconds(v)} (drill {s['verdict']})"
            panel.points.append(Point(x(_at(s["time"])), y(v), s["verdict"] == "passed", text))
        panels.append(panel)
    height = TOP + 2 * PANEL_H + GAP + 36
    return Chart(WIDTH, height, LEFT, WIDTH - RIGHT, _xticks(since, until, x), panels)


@cache
def _env() -> Environment:
    env = Environment(
        loader=PackageLoader("drengine.reports", "templates"),
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(seconds=seconds, day=day, moment=moment, short=short, size=size, tone=tone)
    env.globals.update(
        STATUS=STATUS, against=against, gap_result=gap_result, lock_words=lock_words,
        period_words=period_words, target_sentences=target_sentences,
        forecast_words=forecast_words, chart=chart,
    )  # fmt: skip
    return env


def render_html(doc: dict[str, Any]) -> str:
    """The compliance document (``period.compliance_document``) as a standalone page."""
    return _env().get_template("report.html.j2").render(doc=doc)


def render_text(doc: dict[str, Any]) -> str:
    """The compliance document as compact plain text: the summary, then one block a policy."""
    return _env().get_template("report.txt.j2").render(doc=doc)
