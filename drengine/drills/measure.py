"""RPO and the RTO forecast, from snapshots, job history and earlier drills.

RPO, at drill time:
- *verified*: the age of the newest snapshot a drill has proven restorable (this drill's
  or an earlier one's, as the signed reports in the repository say);
- *unverified*: the age of the newest snapshot, drilled or not, shown apart: it is what a
  restore would probably get, not what has been proven;
- *largest gap*: the longest time without a successful backup over the period (since the
  policy's previous drill, or the first backup known), the last gap running up to now, a
  gap open when the period began counted from the last backup before it, and the time
  before the first backup known not counted.
  Backups come from the policy's snapshots and, when the job history is at hand, from its
  successful backup jobs (retention thins old snapshots; the history does not).
The target is met when the largest gap is within it.

RTO forecast: a restore's time is a fixed part (opening the repository, loading the
index) and a part that grows with the bytes restored. From this drill and up to four
earlier ones of the policy, the medians of both give the full-restore time of the policy's
newest snapshot, warned about when it exceeds the target.
"""

from __future__ import annotations

import itertools
import statistics
from datetime import datetime
from typing import Any

from drengine.core.model import Snapshot

_FORECAST_DRILLS = 5


def snapshot_bytes(snap: Snapshot) -> int:
    """What a full restore of the snapshot writes: its files and its streams."""
    streams = sum(
        int(e.get("size", 0))
        for part in snap.parts
        if part.get("kind") != "files"
        for e in part.get("entries", [])
        if isinstance(e, dict)
    )
    has_files = any(p.get("kind") == "files" for p in snap.parts)
    return streams + (int(snap.summary.get("bytes_total", 0)) if has_files else 0)


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def rpo(
    now: datetime,
    snaps: list[Snapshot],
    proven: list[tuple[str, datetime]],
    backups: list[datetime],
    since: datetime | None,
    target_ms: int | None,
) -> dict[str, Any]:
    """The RPO figures of a drill (see the module's docstring); times in ms."""
    out: dict[str, Any] = {"target_ms": target_ms}
    if proven:
        sid, t = max(proven, key=lambda p: p[1])
        out["verified"] = {
            "snapshot": sid,
            "time": t.isoformat(),
            "age_ms": _ms((now - t).total_seconds()),
        }
    else:
        out["verified"] = None
    if snaps:
        newest = max(snaps, key=lambda s: s.sort_time())
        t = newest.sort_time()
        out["unverified"] = {
            "snapshot": newest.id,
            "time": t.isoformat(),
            "age_ms": _ms((now - t).total_seconds()),
        }
    else:
        out["unverified"] = None
    times = sorted({*(s.sort_time() for s in snaps), *backups})
    start = since if since is not None else (times[0] if times else now)
    inside = [t for t in times if start <= t <= now]
    # A gap open when the period began counts from the last backup before it; before the
    # first backup known there was nothing to lose (a policy that began in the period).
    before = [t for t in times if t < start]
    first = before[-1:] or ([] if inside else [start])
    points = [*first, *inside, now]
    gap, frm, to = 0.0, start, start
    for a, b in itertools.pairwise(points):
        if (b - a).total_seconds() > gap:
            gap, frm, to = (b - a).total_seconds(), a, b
    out["largest_gap"] = {"ms": _ms(gap), "from": frm.isoformat(), "to": to.isoformat()}
    out["period"] = {"since": start.isoformat(), "until": now.isoformat()}
    out["met"] = (
        None if target_ms is None else gap * 1000 <= target_ms and out["verified"] is not None
    )
    return out


def forecast(
    size: int,
    this: dict[str, Any],
    earlier: list[dict[str, Any]],
    target_ms: int | None,
) -> dict[str, Any]:
    """Predicted full-restore time of ``size`` bytes. ``this`` and each earlier drill's
    ``measured`` give ``bytes``, ``fixed_ms`` (open and index) and ``data_ms`` (the rest)."""
    samples = [this, *[e for e in earlier if isinstance(e, dict)]][:_FORECAST_DRILLS]
    rates = [s["bytes"] / (s["data_ms"] / 1000) for s in samples if s.get("data_ms", 0) > 0]
    fixed = statistics.median(int(s.get("fixed_ms", 0)) for s in samples)
    out: dict[str, Any] = {
        "bytes": size,
        "drills": len(samples),
        "target_ms": target_ms,
    }
    if not rates or statistics.median(rates) <= 0:
        out.update({"throughput_bytes_per_s": None, "predicted_ms": None, "exceeds_target": None})
        return out
    rate = statistics.median(rates)
    predicted = int(fixed + size / rate * 1000)
    out.update(
        {
            "throughput_bytes_per_s": int(rate),
            "predicted_ms": predicted,
            "exceeds_target": None if target_ms is None else predicted > target_ms,
        }
    )
    return out
