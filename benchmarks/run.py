"""Benchmark drengine against restic on the same dataset, machine and conditions.

Usage: ``python benchmarks/run.py [--scale S] [--workdir DIR] [--only drengine|restic]``.
See ``benchmarks/README.md`` for what is measured and how to read the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dataset import DatasetInfo, ensure_dataset
from measure import (
    CommandFailed,
    Manifest,
    Measurement,
    build_manifest,
    check_ok,
    compare_manifests,
    ensure_gnu_time,
    ensure_restic,
    machine_info,
    run_measured,
    run_quiet,
    tree_bytes,
)

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
OPERATIONS = ("backup", "re-backup", "restore", "check --read-data")
PASSWORD = "benchmark-password"
# Launches the working tree's drengine exactly as the `drengine` console script would.
DRENGINE_LAUNCHER = "import sys; from drengine.cli.main import main; sys.exit(main())"


class VerificationFailed(RuntimeError):
    pass


@dataclass
class Tool:
    name: str
    base: list[str]  # the command, up to (excluding) the repository option
    repo_flag: str
    env: dict[str, str]
    cache_dirs: list[Path]
    version: str = "unknown"
    results: dict[str, Measurement] = field(default_factory=dict)
    repo_bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    def cmd(self, repo: Path, *args: str) -> list[str]:
        return [*self.base, self.repo_flag, str(repo), *args]


def clean_env() -> dict[str, str]:
    """The parent's environment without anything that could configure either tool."""
    drop = ("RESTIC_", "DRENGINE_", "GOMAXPROCS", "GOGC")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def make_restic(workdir: Path) -> Tool:
    cache = workdir / "cache" / "restic"
    env = {**clean_env(), "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(cache)}
    tool = Tool("restic", [ensure_restic()], "-r", env, [cache])
    tool.version = run_quiet([*tool.base, "version"], env) or "unknown"
    return tool


def make_drengine(workdir: Path, command: str | None) -> Tool:
    cache = workdir / "cache" / "drengine"
    xdg = workdir / "cache" / "drengine-xdg"
    env = {
        **clean_env(),
        "DRENGINE_PASSWORD": PASSWORD,
        "DRENGINE_CACHE_DIR": str(cache),
        "XDG_CACHE_HOME": str(xdg),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    base = shlex.split(command) if command else [sys.executable, "-c", DRENGINE_LAUNCHER]
    tool = Tool("drengine", base, "--repo", env, [cache, xdg])
    cli = run_quiet([*base, "--version"], env) or run_quiet([*base, "version"], env)
    if cli is None:
        try:
            meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
            cli = "drengine " + str(meta["project"]["version"])
        except (OSError, KeyError, ValueError):
            cli = "drengine (unknown version)"
    git = run_quiet(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"])
    tool.version = f"{cli} (git {git or 'no commit yet, working tree'})"
    return tool


def wipe(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            shutil.rmtree(p)


def verify_restore(target: Path, ds: DatasetInfo, manifest: Manifest) -> None:
    restored = target / ds.root.relative_to(ds.root.anchor)
    if not restored.is_dir():
        raise VerificationFailed(f"restore did not create {restored}")
    problems = compare_manifests(manifest, build_manifest(restored))
    if problems:
        shown = "\n    ".join(problems[:20])
        more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise VerificationFailed(
            f"RESTORE IS NOT BYTE-IDENTICAL ({len(problems)} differences) in {restored}:\n"
            f"    {shown}{more}"
        )


def bench_tool(
    tool: Tool, workdir: Path, ds: DatasetInfo, manifest: Manifest, gnu_time: bool
) -> None:
    repo = workdir / f"repo-{tool.name}"
    target = workdir / f"restore-{tool.name}"
    logs = workdir / "logs" / tool.name
    wipe(repo, target, logs, *tool.cache_dirs)  # fresh repository, cold caches

    def step(op: str, *args: str) -> Measurement:
        print(f"  {tool.name}: {op} ...", end="", flush=True)
        os.sync()  # no write-back of earlier steps' dirty pages during this measurement
        slug = op.replace(" ", "").replace("--", "-")
        m = run_measured(tool.cmd(repo, *args), tool.env, logs / f"{slug}.log", gnu_time)
        check_ok(m, op)
        print(
            f" {m.seconds:.2f} s (CPU {m.cpu_seconds:.2f} s), peak RSS {m.peak_rss_mib:.0f} MiB"
            f", load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        tool.results[op] = m
        return m

    step("init", "init")
    step("backup", "backup", str(ds.root))
    tool.repo_bytes["after backup"] = tree_bytes(repo)
    step("re-backup", "backup", str(ds.root))
    tool.repo_bytes["after re-backup"] = tree_bytes(repo)
    step("restore", "restore", "latest", "--target", str(target))
    verify_restore(target, ds, manifest)
    print(f"  {tool.name}: restore verified byte-identical ({len(manifest)} files)", flush=True)
    wipe(target)
    step("check --read-data", "check", "--read-data")


def table_rows(tools: list[Tool], ds: DatasetInfo) -> list[dict[str, Any]]:
    rows = []
    for op in OPERATIONS:
        for tool in tools:
            m = tool.results.get(op)
            if m is None:
                continue
            rows.append(
                {
                    "operation": op,
                    "tool": tool.name,
                    "seconds": round(m.seconds, 3),
                    "cpu_seconds": round(m.cpu_seconds, 2),
                    "mb_per_s": round(ds.total_bytes / 1e6 / m.seconds, 1),
                    "peak_rss_mib": round(m.peak_rss_mib, 1),
                }
            )
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = (
        f"{'operation':<19} {'tool':<9} {'seconds':>8} {'MB/s':>8} {'peak RSS MiB':>13}"
        f" {'CPU s':>7}"
    )
    print("\n" + header + "\n" + "-" * len(header))
    last = None
    for r in rows:
        if last is not None and r["operation"] != last:
            print()
        last = r["operation"]
        print(
            f"{r['operation']:<19} {r['tool']:<9} {r['seconds']:>8.2f} {r['mb_per_s']:>8.1f} "
            f"{r['peak_rss_mib']:>13.1f} {r['cpu_seconds']:>7.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="dataset size factor (1.0 = ~1 GB)")
    ap.add_argument("--seed", type=int, default=1, help="dataset seed")
    ap.add_argument("--workdir", type=Path, default=HERE / "work")
    ap.add_argument("--only", choices=("drengine", "restic"))
    ap.add_argument("--drengine-cmd", help="command to run drengine (default: this checkout's)")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "latest.json")
    args = ap.parse_args(argv)
    if args.scale <= 0:
        ap.error("--scale must be positive")
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

    for tool in tools:
        print(f"\n== {tool.name}", flush=True)
        try:
            bench_tool(tool, workdir, ds, manifest, gnu_time)
        except (CommandFailed, VerificationFailed) as exc:
            tool.error = str(exc)
            print(f"\n!! {tool.name}: {exc}", file=sys.stderr, flush=True)

    rows = table_rows(tools, ds)
    print_table(rows)
    for tool in tools:
        sizes = ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in tool.repo_bytes.items())
        print(f"{tool.name} repository: {sizes or 'n/a'}" + (" [FAILED]" if tool.error else ""))

    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "peak_rss_method": "GNU time %M" if gnu_time else "wait4 ru_maxrss (upper bound)",
        "dataset": {"path": str(ds.root), "files": ds.files, "bytes": ds.total_bytes, **ds.params},
        "tools": {
            t.name: {
                "version": t.version,
                "error": t.error,
                "repo_bytes": t.repo_bytes,
                "commands": {
                    op: {
                        "argv": m.argv,
                        "seconds": round(m.seconds, 3),
                        "cpu_seconds": round(m.cpu_seconds, 2),
                        "peak_rss_mib": round(m.peak_rss_mib, 1),
                    }
                    for op, m in t.results.items()
                },
            }
            for t in tools
        },
        "table": rows,
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
