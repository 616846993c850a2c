"""Benchmark drengine against restic and borg on the same trees, machine and conditions.

Usage: ``python benchmarks/run.py [--repeat N] [--trees synthetic,usr-share,usr-lib]
[--tools restic,borg,drengine] [--scale S] [--workdir DIR]``. Every tree is benchmarked
completely (every operation N times per tool, the tools interleaved) before the next; the
tables report medians and drengine/peer ratios. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from pathlib import Path
from typing import Any

from changes import undo
from manifest import build_manifest, describe, largest_file
from measure import ensure_gnu_time, machine_info
from pagecache import MODES
from ratios import op_ratios, print_ratios, print_summary, print_targets, repo_ratios, targets
from report import print_repo_sizes, print_table, run_json, table_rows
from schedule import Schedule, ToolRun
from tools import HERE, TOOL_NAMES, Tool, make_tool
from trees import DEFAULT_TREES, SOURCES, SYNTHETIC, Tree, ensure_copy, ensure_synthetic, rmtree


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per operation and tool")
    ap.add_argument(
        "--verify",
        choices=("all", "first"),
        default="all",
        help="verify every full restore (default) or only each tool's first",
    )
    ap.add_argument(
        "--page-cache",
        choices=MODES,
        default="warm",
        help="before each measurement, the files it reads are all read (warm, default) or "
        "all dropped from the page cache (cold), for every tool alike",
    )
    ap.add_argument("--trees", help=f"comma-separated (default: {','.join(DEFAULT_TREES)})")
    ap.add_argument(
        "--tree-source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a real tree: a copy of PATH named NAME (repeatable; added to the default --trees)",
    )
    ap.add_argument("--tools", default=",".join(TOOL_NAMES), help="comma-separated tools")
    ap.add_argument("--only", choices=TOOL_NAMES, help="one tool only (same as --tools TOOL)")
    ap.add_argument("--scale", type=float, default=1.0, help="synthetic size (1.0 = ~1 GB)")
    ap.add_argument("--seed", type=int, default=1, help="dataset and 1%% change seed")
    ap.add_argument("--workdir", type=Path, default=HERE / "work")
    ap.add_argument("--drengine-cmd", help="command to run drengine (default: this checkout's)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    args.sources = dict(SOURCES)
    for spec in args.tree_source:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path or name == SYNTHETIC or "/" in name:
            ap.error(f"--tree-source {spec!r}: expected NAME=PATH (NAME not {SYNTHETIC})")
        args.sources[name] = Path(path)
    default_trees = [*DEFAULT_TREES, *(s.partition("=")[0] for s in args.tree_source)]
    args.tree_names = args.trees.split(",") if args.trees else list(dict.fromkeys(default_trees))
    for name in args.tree_names:
        if name != SYNTHETIC and name not in args.sources:
            ap.error(f"unknown tree {name!r} (known: {SYNTHETIC}, {', '.join(args.sources)})")
    args.tool_names = [args.only] if args.only else args.tools.split(",")
    for name in args.tool_names:
        if name not in TOOL_NAMES:
            ap.error(f"unknown tool {name!r} (known: {', '.join(TOOL_NAMES)})")
    return args


def prepare(name: str, args: argparse.Namespace, workdir: Path) -> Tree:
    if name == SYNTHETIC:
        return ensure_synthetic(workdir, args.scale, args.seed)
    return ensure_copy(name, args.sources[name], workdir)


def bench_tree(tree: Tree, tools: list[Tool], args: argparse.Namespace, gnu_time: bool) -> Any:
    """Every operation on one tree, then its table, ratios and targets; the tree's JSON."""
    print(f"\n=== tree {tree.name}: {tree.root} (from {tree.source})", flush=True)
    manifest = build_manifest(tree.root)  # also brings the tree into the page cache
    print(f"{describe(manifest)}, {tree.bytes / 1e6:.1f} MB", flush=True)
    runs = [ToolRun(t) for t in tools]
    sched = Schedule(
        tree, runs, manifest, args.workdir, args.repeat, gnu_time, args.verify == "all", args.seed
    )
    sched.page_cache = args.page_cache
    try:
        sched.run()
    finally:  # the cached tree must be as before for the next run, also after a failure
        if not undo(tree.root):
            print(f"WARNING: {tree.root} stays changed; the next run rebuilds it", file=sys.stderr)
    for run in runs:
        if run.error is None:  # a failed tool's repository stays for inspection
            for path in (run.tool.repo, *run.tool.cache_dirs):
                rmtree(path)

    rows = table_rows(runs, sched.op_bytes)
    print(f"\n== results for tree {tree.name}")
    print_table(rows)
    print()
    print_repo_sizes(runs)
    ratios, repos = op_ratios(runs), repo_ratios(runs)
    verdicts = targets(ratios, repos)
    print_ratios(ratios, repos)
    print_targets(verdicts)
    rel, entry = largest_file(sched.manifest)
    return {
        "dataset": tree.json(),
        "changed_files_per_rep": sched.changed_files,
        "single_file": {"path": str(tree.root / rel), "bytes": entry.size},
        "tools": {r.name: run_json(r) for r in runs},
        "table": rows,
        "ratios": ratios,
        "repo_ratios": repos,
        "targets": verdicts,
        "errors": {r.name: r.error for r in runs if r.error},
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)

    machine = machine_info()
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory']} RAM, "
        f"Python {machine['python']}, Linux {machine['kernel']}"
    )
    load = os.getloadavg()[0]
    machine["load_at_start"] = round(load, 2)
    if load > 0.5:
        print(
            f"WARNING: the machine is busy (1-minute load {load:.1f}): wall-clock times will be"
            " noisy; CPU seconds are less affected",
            file=sys.stderr,
        )
    tools = [make_tool(n, args.workdir, args.drengine_cmd) for n in args.tool_names]
    for tool in tools:
        print(f"{tool.name}: {tool.version}")
    gnu_time = ensure_gnu_time()

    report: dict[str, Any] = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "peak_rss_method": "GNU time %M" if gnu_time else "wait4 ru_maxrss (upper bound)",
        "tool_versions": {t.name: t.version for t in tools},
        "repeat": args.repeat,
        "order": "per operation, repetitions in turn, reversed every other repetition: "
        + ", ".join(t.name for t in tools),
        "restores_verified": args.verify,
        "page_cache": args.page_cache,
        "trees": {},
    }
    for name in args.tree_names:
        tree = prepare(name, args, args.workdir)
        report["trees"][name] = bench_tree(tree, tools, args, gnu_time)
        write_results(args.results, report)  # after every tree: a later crash keeps these

    print_summary(report["trees"])
    report["summary"] = [
        {"tree": tree, **r} for tree, res in report["trees"].items() for r in res["ratios"]
    ]
    write_results(args.results, report)
    print(f"\nresults written to {args.results}")
    failed = [f"{tree}: {tool}" for tree, res in report["trees"].items() for tool in res["errors"]]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


def write_results(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
