"""Benchmark drengine against restic on the same dataset, machine and conditions.

Usage: ``python benchmarks/run.py [--repeat N] [--scale S] [--workdir DIR] [--only TOOL]``.
Every operation runs N times per tool, the tools interleaved; the table reports the median.
See ``benchmarks/README.md`` for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

from dataset import ensure_dataset
from measure import build_manifest, ensure_gnu_time, machine_info
from report import print_table, print_verdicts, table_rows, tool_json, verdicts
from schedule import Schedule
from tools import HERE, make_drengine, make_restic


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per operation and tool")
    ap.add_argument(
        "--verify",
        choices=("all", "first"),
        default="all",
        help="verify every restore byte for byte (default) or only each tool's first",
    )
    ap.add_argument("--scale", type=float, default=1.0, help="dataset size factor (1.0 = ~1 GB)")
    ap.add_argument("--seed", type=int, default=1, help="dataset seed")
    ap.add_argument("--workdir", type=Path, default=HERE / "work")
    ap.add_argument("--only", choices=("drengine", "restic"))
    ap.add_argument("--drengine-cmd", help="command to run drengine (default: this checkout's)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
    if args.repeat < 1:
        ap.error("--repeat must be at least 1")
    workdir: Path = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

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
    names = [args.only] if args.only else ["restic", "drengine"]
    tools = [
        make_restic(workdir) if n == "restic" else make_drengine(workdir, args.drengine_cmd)
        for n in names
    ]
    for tool in tools:
        print(f"{tool.name}: {tool.version}")

    gnu_time = ensure_gnu_time()
    # Generated in a child process so that this runner stays small (see ensure_gnu_time).
    gen = [sys.executable, str(HERE / "dataset.py"), str(workdir / "dataset"), "--quiet"]
    subprocess.run([*gen, "--scale", str(args.scale), "--seed", str(args.seed)], check=True)
    ds = ensure_dataset(workdir / "dataset", args.scale, args.seed)
    print(f"dataset: {ds.root}: {ds.files} files, {ds.total_bytes / 1e6:.1f} MB", flush=True)
    manifest = build_manifest(ds.root)

    schedule = Schedule(tools, ds, manifest, args.repeat, gnu_time, args.verify == "all")
    schedule.run()

    rows, verdict_rows = table_rows(tools, ds), verdicts(tools)
    print_table(rows)
    print()
    for tool in tools:
        sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in tool.repo_bytes.items())
        print(f"{tool.name} repository: {sizes or 'n/a'}" + (" [FAILED]" if tool.error else ""))
    print_verdicts(verdict_rows)

    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "peak_rss_method": "GNU time %M" if gnu_time else "wait4 ru_maxrss (upper bound)",
        "dataset": {"path": str(ds.root), "files": ds.files, "bytes": ds.total_bytes, **ds.params},
        "repeat": args.repeat,
        "order": "per operation, repetitions in turn: " + ", ".join(t.name for t in tools),
        "restores_verified": args.verify,
        "tools": {t.name: tool_json(t) for t in tools},
        "table": rows,
        "verdicts": verdict_rows,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.results}")
    failed = [t.name for t in tools if t.error]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
