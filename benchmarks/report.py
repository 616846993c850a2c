"""Summaries of the repeated measurements: the statistics, the table of medians, the JSON."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from measure import Measurement
from schedule import OPERATIONS, ToolRun


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


def stats(run: ToolRun | None, op: str) -> Stats | None:
    """The statistics of ``op``, None if the tool did not run or completed no repetition."""
    samples = run.samples.get(op) if run is not None else None
    return Stats.of(samples) if samples else None


def table_rows(runs: list[ToolRun], op_bytes: Callable[[str], int]) -> list[dict[str, Any]]:
    """One row per operation and tool; MB/s = ``op_bytes(op)`` (10^6) / median seconds."""
    rows = []
    for op in OPERATIONS:
        for run in runs:
            s = stats(run, op)
            if s is None:
                continue
            rows.append(
                {
                    "operation": op,
                    "tool": run.name,
                    "n": s.n,
                    "median_seconds": round(s.median, 3),
                    "min_seconds": round(s.min, 3),
                    "max_seconds": round(s.max, 3),
                    "mb_per_s": round(op_bytes(op) / 1e6 / s.median, 1),
                    "peak_rss_mib": round(s.peak_rss_max, 1),
                    "cpu_seconds": round(s.cpu_median, 2),
                }
            )
    return rows


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


def print_repo_sizes(runs: list[ToolRun]) -> None:
    for run in runs:
        sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in run.repo_bytes.items())
        print(f"{run.name} repository: {sizes or 'n/a'}" + (" [FAILED]" if run.error else ""))


def sample_json(m: Measurement, rep: int) -> dict[str, Any]:
    return {
        "rep": rep + 1,
        "seconds": round(m.seconds, 3),
        "cpu_seconds": round(m.cpu_seconds, 2),
        "peak_rss_mib": round(m.peak_rss_mib, 1),
        "argv": m.argv,
        "cwd": None if m.cwd is None else str(m.cwd),
        "log": str(m.log),
    }


def run_json(run: ToolRun) -> dict[str, Any]:
    return {
        "error": run.error,
        "repo_bytes": run.repo_bytes,
        "samples": {
            op: [sample_json(m, rep) for rep, m in enumerate(ms)] for op, ms in run.samples.items()
        },
    }
