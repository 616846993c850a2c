"""The measurement schedule of one tree: each operation repeated N times, the tools in turns.

Operations run one after the other (all backups, then all re-backups, ...); within an
operation the tools alternate (restic, borg, drengine, then drengine, borg, restic, ...: who
goes first alternates per repetition), so a slow phase of the machine hits every tool rather
than one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from changes import change_files
from manifest import FILE, Manifest, build_manifest, describe, largest_file
from measure import CommandFailed, Measurement, check_ok, run_measured, tree_bytes
from pagecache import settle
from tools import Command, Tool
from trees import Tree, rmtree
from verify import VerificationFailed, verify_one_file, verify_tree

OPERATIONS = (
    "backup",
    "re-backup",
    "re-backup 1%",
    "restore",
    "restore 1 file",
    "check --read-data",
)
# The repository-size states, recorded after the operation of the same position above.
REPO_STATES = ("after backup", "after re-backups", "after re-backups 1%")


@dataclass
class ToolRun:
    """One tool's results on one tree."""

    tool: Tool
    # operation -> one measurement per repetition, in order ("init" included, not reported)
    samples: dict[str, list[Measurement]] = field(default_factory=dict)
    repo_bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def name(self) -> str:
        return self.tool.name


@dataclass
class Schedule:
    tree: Tree
    runs: list[ToolRun]
    manifest: Manifest
    workdir: Path
    repeat: int
    gnu_time: bool
    verify_all: bool = True  # verify every full restore, not only each tool's first
    seed: int = 1
    changed_files: list[int] = field(default_factory=list)  # per re-backup 1% repetition
    page_cache: str = "warm"  # what the files an operation reads are in (``pagecache.py``)

    def run(self) -> None:
        rmtree(self.logs)
        self.each("backup", self.backup)
        self.record_repo_bytes(REPO_STATES[0])
        self.each("re-backup", self.rebackup)
        self.record_repo_bytes(REPO_STATES[1])
        self.each("re-backup 1%", self.rebackup_changed, before=self.change)
        self.record_repo_bytes(REPO_STATES[2])
        # The restores must reproduce the tree as it is now, after the changes.
        self.manifest = build_manifest(self.tree.root)
        print(f"manifest of the changed tree: {describe(self.manifest)}", flush=True)
        self.each("restore", self.restore)
        self.each("restore 1 file", self.restore_file)
        self.each("check --read-data", self.check)

    @property
    def logs(self) -> Path:
        return self.workdir / "logs" / self.tree.name

    def op_bytes(self, op: str) -> int:
        """The bytes an operation handles, for MB/s: the tree's, or the one file's."""
        return largest_file(self.manifest)[1].size if op == "restore 1 file" else self.tree.bytes

    def each(
        self,
        op: str,
        body: Callable[[ToolRun, int], None],
        before: Callable[[int], None] | None = None,
    ) -> None:
        """``body(run, rep)`` for every repetition, tools interleaved; ``before(rep)`` first.

        A tool that fails (a command exits non-zero, a restore differs) is dropped from the
        rest of the schedule, since later operations build on earlier ones; the others go on.
        """
        print(f"\n== {self.tree.name}: {op}: {self.repeat} repetition(s), tools interleaved")
        for rep in range(self.repeat):
            if before is not None:
                before(rep)
            # Who goes first alternates too: on this VM the first of a pair is often the one
            # that finds the freed memory still warm.
            order = self.runs if rep % 2 == 0 else list(reversed(self.runs))
            for run in order:
                if run.error is not None:
                    continue
                try:
                    body(run, rep)
                except (CommandFailed, VerificationFailed) as exc:
                    run.error = f"{self.tree.name}: {op}, repetition {rep + 1}: {exc}"
                    print(f"\n!! {run.name}: {run.error}", file=sys.stderr, flush=True)

    def measure(
        self, run: ToolRun, op: str, rep: int, cmd: Command, reads: Path | None = None
    ) -> Measurement:
        """Run ``cmd`` timed; ``reads``: what it reads, brought into the page-cache state
        every tool gets (``pagecache.py``)."""
        os.sync()  # no write-back of earlier steps' dirty pages during this measurement
        if reads is not None:
            settle(reads, self.page_cache)
        slug = op.replace("--", "").replace("%", "pct").replace(" ", "-")
        log = self.logs / run.name / f"{slug}-{rep + 1}.log"
        print(f"  [{rep + 1}/{self.repeat}] {run.name:<8} {op} ...", end="", flush=True)
        m = run_measured(cmd.argv, run.tool.env, log, self.gnu_time, cmd.cwd)
        run.samples.setdefault(op, []).append(check_ok(m, op))
        print(
            f" {m.seconds:.2f} s (CPU {m.cpu_seconds:.2f} s), peak RSS {m.peak_rss_mib:.0f} MiB"
            f", load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
        return m

    def record_repo_bytes(self, label: str) -> None:
        for run in self.runs:
            if run.error is None:
                run.repo_bytes[label] = tree_bytes(run.tool.repo)

    def target(self, run: ToolRun, what: str, rep: int) -> Path:
        """A new, empty directory to restore into (borg extracts into its cwd: it must exist)."""
        target = self.workdir / f"{what}-{run.name}-{rep + 1}"
        rmtree(target)
        target.mkdir(parents=True)
        return target

    # The operations. Each repetition of `backup` starts from a new repository and empty
    # caches (init is measured but not reported); the other operations work on what the
    # last backup left.

    def backup(self, run: ToolRun, rep: int) -> None:
        rmtree(run.tool.repo)
        for d in run.tool.cache_dirs:
            rmtree(d)
        self.measure(run, "init", rep, run.tool.init())
        self.measure(run, "backup", rep, run.tool.backup(self.tree.root), self.tree.root)

    def rebackup(self, run: ToolRun, rep: int) -> None:
        self.measure(run, "re-backup", rep, run.tool.backup(self.tree.root), self.tree.root)

    def rebackup_changed(self, run: ToolRun, rep: int) -> None:
        cmd = run.tool.backup(self.tree.root)
        self.measure(run, "re-backup 1%", rep, cmd, self.tree.root)

    def change(self, rep: int) -> None:
        """Once per repetition, before any tool: every tool backs up the same state."""
        files = [rel for rel, e in self.manifest.items() if e.kind == FILE]
        seed = f"{self.seed}/{self.tree.name}"
        n = change_files(self.tree.root, files, self.workdir, seed, rep)
        self.changed_files.append(n)
        print(f"  [{rep + 1}/{self.repeat}] changed {n} of {len(files)} files", flush=True)

    def restore(self, run: ToolRun, rep: int) -> None:
        target = self.target(run, "restore", rep)
        cmd = run.tool.restore(target)
        try:
            self.measure(run, "restore", rep, cmd, run.tool.repo)
            if rep == 0 or self.verify_all:
                held = verify_tree(run.tool.restored(target, self.tree.root), self.manifest)
                print(f"    restore verified identical ({held})")
        except VerificationFailed:
            run.samples["restore"].pop()  # not a valid restore: its time is not reported
            os.sync()  # the differing restore stays for inspection
            raise
        rmtree(target)
        os.sync()  # the deletion's write-back must not land in the next measurement

    def restore_file(self, run: ToolRun, rep: int) -> None:
        rel, entry = largest_file(self.manifest)
        path = self.tree.root / rel
        target = self.target(run, "restore1", rep)
        cmd = run.tool.restore_file(target, path)
        try:
            self.measure(run, "restore 1 file", rep, cmd, run.tool.repo)
            verify_one_file(target, run.tool.restored(target, path), entry)
            print(f"    restore verified: only {rel} ({entry.size / 1e6:.1f} MB), identical")
        except VerificationFailed:
            run.samples["restore 1 file"].pop()
            os.sync()
            raise
        rmtree(target)
        os.sync()

    def check(self, run: ToolRun, rep: int) -> None:
        self.measure(run, "check --read-data", rep, run.tool.check(), run.tool.repo)
