"""The measurement schedule: each operation repeated N times, the tools taking turns.

Operations run one after the other (all backups, then all re-backups, ...); within an
operation the tools alternate (restic, drengine, drengine, restic, restic, ...: who goes first
alternates per repetition), so a slow phase of the machine hits both tools rather than one.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dataset import DatasetInfo
from measure import (
    CommandFailed,
    Manifest,
    Measurement,
    build_manifest,
    check_ok,
    compare_manifests,
    run_measured,
    tree_bytes,
)
from tools import Tool

OPERATIONS = ("backup", "re-backup", "restore", "check --read-data")


class VerificationFailed(RuntimeError):
    pass


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


@dataclass
class Schedule:
    tools: list[Tool]
    ds: DatasetInfo
    manifest: Manifest
    repeat: int
    gnu_time: bool
    verify_all: bool = True  # verify every restore, not only each tool's first

    def run(self) -> None:
        for tool in self.tools:
            wipe(tool.logs)
        self.each("backup", self.backup)
        self.record_repo_bytes("after backup")
        self.each("re-backup", self.rebackup)
        self.record_repo_bytes("after re-backups")
        self.each("restore", self.restore)
        self.each("check --read-data", self.check)

    def each(self, op: str, body: Callable[[Tool, int], None]) -> None:
        """``body(tool, rep)`` for every repetition, tools interleaved.

        A tool that fails (a command exits non-zero, a restore differs) is dropped from the
        rest of the schedule, since later operations build on earlier ones; the others go on.
        """
        print(f"\n== {op}: {self.repeat} repetition(s), tools interleaved", flush=True)
        for rep in range(self.repeat):
            # Who goes first alternates too: on this VM the first of a pair is often the one
            # that finds the freed memory still warm.
            order = self.tools if rep % 2 == 0 else list(reversed(self.tools))
            for tool in order:
                if tool.error is not None:
                    continue
                try:
                    body(tool, rep)
                except (CommandFailed, VerificationFailed) as exc:
                    tool.error = f"{op}, repetition {rep + 1}: {exc}"
                    print(f"\n!! {tool.name}: {tool.error}", file=sys.stderr, flush=True)

    def measure(self, tool: Tool, op: str, rep: int, *args: str) -> Measurement:
        os.sync()  # no write-back of earlier steps' dirty pages during this measurement
        slug = op.replace(" ", "").replace("--", "-")
        log = tool.logs / f"{slug}-{rep + 1}.log"
        print(f"  [{rep + 1}/{self.repeat}] {tool.name:<8} {op} ...", end="", flush=True)
        m = run_measured(tool.cmd(*args), tool.env, log, self.gnu_time)
        tool.samples.setdefault(op, []).append(check_ok(m, op))
        print(
            f" {m.seconds:.2f} s (CPU {m.cpu_seconds:.2f} s), peak RSS {m.peak_rss_mib:.0f} MiB"
            f", load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        return m

    def record_repo_bytes(self, label: str) -> None:
        for tool in self.tools:
            if tool.error is None:
                tool.repo_bytes[label] = tree_bytes(tool.repo)

    # The operations. Each repetition of `backup` starts from a new repository and empty
    # caches (init is measured but not reported); the other operations work on what the
    # last backup left.

    def backup(self, tool: Tool, rep: int) -> None:
        wipe(tool.repo, *tool.cache_dirs)
        self.measure(tool, "init", rep, "init")
        self.measure(tool, "backup", rep, "backup", str(self.ds.root))

    def rebackup(self, tool: Tool, rep: int) -> None:
        self.measure(tool, "re-backup", rep, "backup", str(self.ds.root))

    def restore(self, tool: Tool, rep: int) -> None:
        target = tool.restore_target(rep)
        wipe(target)
        try:
            self.measure(tool, "restore", rep, "restore", "latest", "--target", str(target))
            if rep == 0 or self.verify_all:
                verify_restore(target, self.ds, self.manifest)
                print(f"    restore verified byte-identical ({len(self.manifest)} files)")
        except VerificationFailed:
            tool.samples["restore"].pop()  # not a valid restore: its time is not reported
            os.sync()  # the differing restore stays for inspection
            raise
        wipe(target)
        os.sync()  # the deletion's write-back must not land in the next measurement

    def check(self, tool: Tool, rep: int) -> None:
        self.measure(tool, "check --read-data", rep, "check", "--read-data")
