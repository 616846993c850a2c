"""Summaries of the repeated measurements: the table, the verdicts and the JSON report."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from dataset import DatasetInfo
from measure import Measurement
from schedule import OPERATIONS
from tools import Tool


@dataclass(frozen=True)
class Stats:
    n: int
    median: float  # wall-clock seconds
    min: float
    max: float
    cpu_median: float  # user + system CPU seconds
    peak_rss_max: float  # MiB

    @classmethod
    def of(cls, samples: list[Measurement]) -> Stats:
        secs = [m.seconds for m in samples]
        return cls(
            n=len(samples),
            median=statistics.median(secs),
            min=min(secs),
            max=max(secs),
            cpu_median=statistics.median(m.cpu_seconds for m in samples),
            peak_rss_max=max(m.peak_rss_mib for m in samples),
        )


def table_rows(tools: list[Tool], ds: DatasetInfo) -> list[dict[str, Any]]:
    rows = []
    for op in OPERATIONS:
        for tool in tools:
            samples = tool.samples.get(op)
            if not samples:
                continue
            s = Stats.of(samples)
            rows.append(
                {
                    "operation": op,
                    "tool": tool.name,
                    "n": s.n,
                    "median_seconds": round(s.median, 3),
                    "min_seconds": round(s.min, 3),
                    "max_seconds": round(s.max, 3),
                    "mb_per_s": round(ds.total_bytes / 1e6 / s.median, 1),
                    "peak_rss_mib": round(s.peak_rss_max, 1),
                    "cpu_seconds": round(s.cpu_median, 2),
                }
            )
    return rows


def verdicts(tools: list[Tool]) -> list[dict[str, Any]]:
    """Per operation both tools completed: restic median / drengine median (> 1: drengine
    faster), the same ratio of the minimums, and whether the min-max ranges overlap."""
    by_name = {t.name: t for t in tools}
    restic, drengine = by_name.get("restic"), by_name.get("drengine")
    if restic is None or drengine is None:
        return []
    out = []
    for op in OPERATIONS:
        r_samples, d_samples = restic.samples.get(op), drengine.samples.get(op)
        if not r_samples or not d_samples:
            continue
        r, d = Stats.of(r_samples), Stats.of(d_samples)
        out.append(
            {
                "operation": op,
                "speed_ratio": round(r.median / d.median, 3),
                "min_ratio": round(r.min / d.min, 3),
                "ranges_overlap": r.min <= d.max and d.min <= r.max,
            }
        )
    return out


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'operation':<19} {'tool':<9} {'n':>2} {'median s':>9} {'min s':>7} {'max s':>7}"
        f" {'MB/s':>7} {'peak RSS MiB':>13} {'CPU s':>7}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    last = None
    for r in rows:
        if last is not None and r["operation"] != last:
            print()
        last = r["operation"]
        print(
            f"{r['operation']:<19} {r['tool']:<9} {r['n']:>2} {r['median_seconds']:>9.2f}"
            f" {r['min_seconds']:>7.2f} {r['max_seconds']:>7.2f} {r['mb_per_s']:>7.1f}"
            f" {r['peak_rss_mib']:>13.1f} {r['cpu_seconds']:>7.2f}"
        )


def print_verdicts(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("\nspeed ratio = restic median s / drengine median s (> 1: drengine faster)")
    for v in rows:
        ratio = v["speed_ratio"]
        notes = ["drengine faster" if ratio > 1 else "drengine slower" if ratio < 1 else "equal"]
        notes.append(f"ratio of minimums {v['min_ratio']:.2f}")
        if v["ranges_overlap"]:
            notes.append("min-max ranges overlap")
        print(f"{v['operation']:<19} drengine/restic speed ratio {ratio:.2f}  ({'; '.join(notes)})")


def sample_json(m: Measurement, rep: int) -> dict[str, Any]:
    return {
        "rep": rep + 1,
        "seconds": round(m.seconds, 3),
        "cpu_seconds": round(m.cpu_seconds, 2),
        "peak_rss_mib": round(m.peak_rss_mib, 1),
        "argv": m.argv,
        "log": str(m.log),
    }


def tool_json(tool: Tool) -> dict[str, Any]:
    return {
        "version": tool.version,
        "error": tool.error,
        "repo_bytes": tool.repo_bytes,
        "samples": {
            op: [sample_json(m, rep) for rep, m in enumerate(ms)] for op, ms in tool.samples.items()
        },
    }
