"""drengine against each peer: ratios per operation, the project's targets, the summary.

Every ratio is drengine / peer, so below 1 is better for drengine everywhere: less wall time
(median seconds), less peak RSS (largest over the repetitions), a smaller repository.
"""

from __future__ import annotations

from typing import Any

from report import stats
from schedule import OPERATIONS, REPO_STATES, ToolRun

PEERS = ("restic", "borg")
SUBJECT = "drengine"
# The project's targets, all against restic: wall time at most TIME_TARGET x restic's on these
# operations; peak RSS and repository size no larger than restic's everywhere.
TIME_TARGET = 0.7
TIME_TARGET_OPS = ("backup", "re-backup", "re-backup 1%", "restore", "check --read-data")
TARGET_PEER = "restic"
OP_WIDTH = 25  # of the operation column, "repo after re-backups 1%" included


def _div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else round(a / b, 3)


def op_ratios(runs: list[ToolRun]) -> list[dict[str, Any]]:
    """Per operation and peer that both completed: the time ratio of the medians and of the
    minimums, whether the min-max ranges overlap, and the peak RSS ratio."""
    by_name = {r.name: r for r in runs}
    out = []
    for op in OPERATIONS:
        d = stats(by_name.get(SUBJECT), op)
        for peer in PEERS:
            p = stats(by_name.get(peer), op)
            if d is None or p is None:
                continue
            out.append(
                {
                    "operation": op,
                    "peer": peer,
                    "time": _div(d.median, p.median),
                    "time_of_minimums": _div(d.min, p.min),
                    "ranges_overlap": d.min <= p.max and p.min <= d.max,
                    "peak_rss": _div(d.peak_rss_max, p.peak_rss_max),
                }
            )
    return out


def repo_ratios(runs: list[ToolRun]) -> list[dict[str, Any]]:
    by_name = {r.name: r for r in runs}
    subject = by_name.get(SUBJECT)
    out = []
    for state in REPO_STATES:
        for peer in PEERS:
            p = by_name.get(peer)
            mine = subject.repo_bytes.get(state) if subject else None
            theirs = p.repo_bytes.get(state) if p else None
            if mine is not None and theirs is not None:
                ratio = _div(mine, theirs)
                out.append(
                    {
                        "state": state,
                        "peer": peer,
                        "bytes": mine,
                        "peer_bytes": theirs,
                        "ratio": ratio,
                    }
                )
    return out


def targets(ratios: list[dict[str, Any]], repos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target against restic with its value and verdict (None: no target, shown only)."""
    vs = {r["operation"]: r for r in ratios if r["peer"] == TARGET_PEER}
    out: list[dict[str, Any]] = []
    for op in OPERATIONS:
        if op in vs:
            limit = TIME_TARGET if op in TIME_TARGET_OPS else None
            out.append(_target(f"wall time {op}", vs[op]["time"], limit))
    for op in OPERATIONS:
        if op in vs:
            out.append(_target(f"peak RSS {op}", vs[op]["peak_rss"], 1.0))
    for r in repos:
        if r["peer"] == TARGET_PEER:  # decided on the bytes: a ratio rounded to 1.000 may be over
            t = _target(f"repository size {r['state']}", r["ratio"], 1.0)
            out.append({**t, "pass": r["bytes"] <= r["peer_bytes"]})
    return out


def _target(what: str, value: float | None, limit: float | None) -> dict[str, Any]:
    verdict = None if limit is None or value is None else value <= limit
    return {"target": what, "value": value, "limit": limit, "pass": verdict}


def _fmt(r: dict[str, Any] | None, key: str) -> str:
    if r is None or r.get(key) is None:
        return "-"
    mark = "~" if key == "time" and r["ranges_overlap"] else ""
    return f"{r[key]:.2f}{mark}"


def repo_lines(repos: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """A header, then per repository state the size ratio against each peer."""
    by_key = {(r["state"], r["peer"]): r["ratio"] for r in repos}
    lines = []
    for state in REPO_STATES:
        cells = [by_key.get((state, p)) for p in PEERS]
        if any(c is not None for c in cells):
            shown = "".join(f"{'-' if c is None else f'{c:.3f}':>12}" for c in cells)
            lines.append(f"{prefix}{'  ' + state:<{OP_WIDTH}}{shown}")
    header = f"{prefix}{'repository size':<{OP_WIDTH}}" + "".join(
        f"{'size/' + p:>12}" for p in PEERS
    )
    return [header, *lines] if lines else []


def ratio_lines(ratios: list[dict[str, Any]], prefix: str = "") -> list[str]:
    """One line per operation: time and RSS ratios against each peer."""
    by_key = {(r["operation"], r["peer"]): r for r in ratios}
    lines = []
    for op in OPERATIONS:
        cells = [_fmt(by_key.get((op, p)), "time") for p in PEERS]
        cells += [_fmt(by_key.get((op, p)), "peak_rss") for p in PEERS]
        if any(c != "-" for c in cells):
            lines.append(f"{prefix}{op:<{OP_WIDTH}}" + "".join(f"{c:>12}" for c in cells))
    return lines


def ratio_header(prefix: str = "") -> str:
    cols = [f"time/{p}" for p in PEERS] + [f"RSS/{p}" for p in PEERS]
    return f"{prefix}{'operation':<{OP_WIDTH}}" + "".join(f"{c:>12}" for c in cols)


def print_ratios(ratios: list[dict[str, Any]], repos: list[dict[str, Any]]) -> None:
    if not ratios and not repos:
        return
    print(
        f"\nratios {SUBJECT}/peer (below 1: {SUBJECT} faster, smaller; time: medians,"
        " ~ = min-max ranges overlap; RSS: peaks)"
    )
    for line in [ratio_header(), *ratio_lines(ratios), *repo_lines(repos)]:
        print(line)


def print_targets(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print(f"\ntargets: not checked ({SUBJECT} and {TARGET_PEER} must both complete)")
        return
    print(f"\ntargets ({SUBJECT}/{TARGET_PEER}):")
    for t in rows:
        verdict = {True: "PASS", False: "MISS", None: "    "}[t["pass"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        limit = "no target" if t["limit"] is None else f"target <= {t['limit']:.2f}"
        print(f"  {verdict}  {t['target']:<38} {value:>6}  ({limit})")


def print_summary(per_tree: dict[str, dict[str, Any]]) -> None:
    """One line per tree and operation with the ratios against each peer, then the targets."""
    print(f"\n== summary: {SUBJECT}/peer ratios per tree (below 1: {SUBJECT} better)")
    print(ratio_header(f"{'tree':<12}"))
    for tree, res in per_tree.items():
        for line in ratio_lines(res["ratios"], f"{tree:<12}"):
            print(line)
    for tree, res in per_tree.items():
        for line in repo_lines(res["repo_ratios"], f"{tree:<12}"):
            print(line)
    for tree, res in per_tree.items():
        checked = [t for t in res["targets"] if t["pass"] is not None]
        passed = sum(t["pass"] for t in checked)
        missed = ", ".join(t["target"] for t in checked if not t["pass"]) or "none"
        print(f"targets {tree}: {passed}/{len(checked)} PASS; missed: {missed}")
