"""Tables of the S3 benchmark: timings per operation, and S3 requests per operation."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

# Table order: each drengine operation next to the baseline it compares with.
ORDER = (
    ("upload", "boto3"),
    ("backup", "drengine"),
    ("re-backup", "drengine"),
    ("download", "boto3"),
    ("restore", "drengine"),
    ("restore large", "drengine"),
    ("check --read-data", "drengine"),
    ("snapshots", "drengine"),
)
# S3 API operation -> column of the request table.
COLUMNS = {
    "PutObject": "PUT",
    "GetObject": "GET",
    "HeadObject": "HEAD",
    "ListObjectsV2": "LIST",
    "DeleteObject": "DEL",
    "DeleteObjects": "DEL",
    "CreateMultipartUpload": "MPU",
    "UploadPart": "MPU",
    "CompleteMultipartUpload": "MPU",
    "AbortMultipartUpload": "MPU",
}
REQUEST_COLUMNS = ("PUT", "GET", "HEAD", "LIST", "DEL", "MPU", "other")


@dataclass
class Sample:
    """One timed run of one operation."""

    rep: int
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float | None  # None for the in-process baseline
    counts: dict[str, Any]  # RequestCounter.snapshot()
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "rep": self.rep + 1,
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 2),
            "peak_rss_mib": None if self.peak_rss_mib is None else round(self.peak_rss_mib, 1),
            "s3": self.counts,
            **self.extra,
        }


def by_column(requests: dict[str, int]) -> dict[str, int]:
    out = dict.fromkeys(REQUEST_COLUMNS, 0)
    for op, n in requests.items():
        out[COLUMNS.get(op, "other")] += n
    return out


def rows(samples: dict[tuple[str, str], list[Sample]], dataset_bytes: int) -> list[dict[str, Any]]:
    """One row per (operation, tool): medians over the repetitions; requests of the median run."""
    out = []
    for op, tool in ORDER:
        got = samples.get((op, tool))
        if not got:
            continue
        secs = [s.seconds for s in got]
        median = statistics.median(secs)
        mid = sorted(got, key=lambda s: s.seconds)[(len(got) - 1) // 2]  # a median sample
        wire = mid.counts["bytes_sent"] + mid.counts["bytes_received"]
        rss = [s.peak_rss_mib for s in got if s.peak_rss_mib is not None]
        out.append(
            {
                "operation": op,
                "tool": tool,
                "n": len(got),
                "median_seconds": round(median, 3),
                "min_seconds": round(min(secs), 3),
                "max_seconds": round(max(secs), 3),
                # bytes per second: the dataset's, or the run's own (the large files);
                # for "snapshots" (no data) not meaningful
                "mb_per_s": None
                if op == "snapshots"
                else round(mid.extra.get("bytes", dataset_bytes) / 1e6 / median, 1),
                "wire_mb_per_s": round(wire / 1e6 / mid.seconds, 1),
                "cpu_seconds": round(statistics.median(s.cpu_seconds for s in got), 2),
                "peak_rss_mib": round(max(rss), 1) if rss else None,
                "requests": mid.counts["total_requests"],
                "requests_by_kind": by_column(mid.counts["requests"]),
                "errors": sum(mid.counts["errors"].values()),
                "mb_sent": round(mid.counts["bytes_sent"] / 1e6, 1),
                "mb_received": round(mid.counts["bytes_received"] / 1e6, 1),
            }
        )
    return out


def _num(value: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def print_tables(table: list[dict[str, Any]]) -> None:
    head = (
        f"{'operation':<18} {'tool':<9} {'n':>2} {'median s':>9} {'min s':>7} {'max s':>7}"
        f" {'MB/s':>7} {'wire MB/s':>9} {'CPU s':>6} {'RSS MiB':>8} {'requests':>8}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in table:
        print(
            f"{r['operation']:<18} {r['tool']:<9} {r['n']:>2} {r['median_seconds']:>9.2f}"
            f" {r['min_seconds']:>7.2f} {r['max_seconds']:>7.2f} {_num(r['mb_per_s'], 7, 1)}"
            f" {r['wire_mb_per_s']:>9.1f} {r['cpu_seconds']:>6.2f}"
            f" {_num(r['peak_rss_mib'], 8, 0)} {r['requests']:>8}"
        )
    head = (
        f"{'S3 requests':<18} {'tool':<9}"
        + "".join(f" {c:>6}" for c in REQUEST_COLUMNS)
        + f" {'errors':>6} {'MB sent':>8} {'MB recv':>8}"
    )
    print("\n" + head + "\n" + "-" * len(head))
    for r in table:
        kinds = r["requests_by_kind"]
        print(
            f"{r['operation']:<18} {r['tool']:<9}"
            + "".join(f" {kinds[c]:>6}" for c in REQUEST_COLUMNS)
            + f" {r['errors']:>6} {r['mb_sent']:>8.1f} {r['mb_received']:>8.1f}"
        )


def ratios(table: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """drengine's speed as a share of the plain-boto3 ceiling on the same bytes."""
    by = {(r["operation"], r["tool"]): r for r in table}
    out = []
    for op, base in (("backup", "upload"), ("restore", "download"), ("restore large", "download")):
        d, b = by.get((op, "drengine")), by.get((base, "boto3"))
        if d and b and d["mb_per_s"] and b["mb_per_s"]:
            share = d["mb_per_s"] / b["mb_per_s"]  # throughput: the large files are a part
            out.append({"operation": op, "baseline": base, "share_of_baseline": round(share, 3)})
    return out


def print_ratios(rows_: list[dict[str, Any]]) -> None:
    if rows_:
        print("\nshare = drengine MB/s / boto3 MB/s (1.0: drengine as fast as plain boto3)")
    for v in rows_:
        print(
            f"{v['operation']:<18} runs at {v['share_of_baseline']:.2f} of the plain-boto3 "
            f"{v['baseline']} speed on the same bytes"
        )
