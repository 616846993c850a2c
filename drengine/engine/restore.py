"""Restore a snapshot (or parts of it) into a directory.

Order matters for safety and for metadata: directories first (each checked to be a real
directory, never a symlink), then files (written under a temporary name, verified against
the whole-file content hash, then renamed), then hard links, then symlinks and special files,
and last the directories' own metadata, deepest first. No restored symlink exists while
anything is written, so nothing can be written through one. A name that is empty, ``.``,
``..`` or contains ``/`` or NUL is refused.

Nothing below the target is reached by path, so no symlink already in the target is ever
followed and paths longer than PATH_MAX work: every directory is opened from its parent's
descriptor with ``O_NOFOLLOW`` (``restore_dirs``), and every other entry is created under a
temporary name in its directory and renamed over its final name, which replaces whatever is
there (a planted symlink included) instead of writing through it. Something other than a
directory where a directory goes is an error for it and for everything below it. The target
itself may be reached through symlinks: the user named it.

Each failure costs its entry only (reported with its path); a file is renamed into place
only once verified, and a hard link is made only to a verified file. Planning is iterative
and bounded (``tree_paths.check_expansion``), so no tree shape exhausts stack or time.
"""

from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.errors import RestoreError
from drengine.core.model import Snapshot
from drengine.core.phases import NO_PHASES, Phases
from drengine.core.progress import Progress
from drengine.core.workers import Worker
from drengine.engine.restore_batches import pack_batches
from drengine.engine.restore_dirs import ROOT, DirFds, NotADirectory, default_limit
from drengine.engine.restore_files import (
    ENTRY_ERRORS,
    FileWriter,
    TempNames,
    reason,
    remove_stale_temps,
)
from drengine.engine.restore_plan import Entry, Plan, build_plan
from drengine.engine.restore_procs import (
    WriterProcesses,
    process_count,
    start_workers,
    stop_workers,
    work_items,
)
from drengine.engine.restore_wire import Setup
from drengine.engine.tree_paths import TreeCache, check_expansion, find_node, split_path
from drengine.repository.locks import locked
from drengine.repository.repo import Repository
from drengine.sources.files_restore import (
    apply_metadata_fd,
    apply_metadata_opath,
    make_special_at,
)
from drengine.storage.url import reopen_spec

_FILE_WORKERS = 2
_FETCH_WORKERS = 4


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)  # {"path", "error"}
    warnings: list[dict[str, str]] = field(default_factory=list)  # {"path", "warning"}
    leftovers_removed: int = 0  # temporary files of a killed earlier restore, removed


class Restorer:
    def __init__(
        self,
        repo: Repository,
        target: str,
        includes: list[str],
        progress: Progress,
        phases: Phases = NO_PHASES,
        cancel: threading.Event | None = None,
    ) -> None:
        self.repo = repo
        self.phases = phases
        self.cancel = cancel
        self.target = os.path.abspath(os.fsencode(target))
        self.includes = [split_path(p) for p in includes]
        self.progress = progress
        self.result = RestoreResult()
        self.is_root = os.geteuid() == 0
        self.temp = TempNames()
        self._workers: list[Worker] = []  # writer processes started ahead of the plan

    def _abs(self, rel: bytes) -> str:
        return os.fsdecode(self.target + b"/" + rel if rel else self.target)

    def error(self, rel: bytes, msg: str) -> None:
        self.result.errors.append({"path": self._abs(rel), "error": msg})

    def warn_damaged(self, rel: bytes, damaged: str) -> None:
        if damaged:
            self.result.warnings.append(
                {"path": self._abs(rel), "warning": f"restored incomplete: {damaged}"}
            )

    def run(self, snap: Snapshot) -> RestoreResult:
        # Writer processes start while the plan is made when the snapshot says how many
        # files a whole restore writes (their start-up is the plan's length again).
        total = snap.summary.get("files_total")
        if not self.includes and type(total) is int:
            self._workers = start_workers(process_count(self.repo, total))
        try:
            return self._run(snap)
        finally:
            stop_workers(self._workers)  # not needed after all, or the plan failed

    def _run(self, snap: Snapshot) -> RestoreResult:
        with self.phases.span("plan"):
            trees = TreeCache(self.repo, read_runs=True)
            check_expansion(trees, self._roots(snap, trees), f"snapshot {snap.id[:8]}")
            plan = build_plan(trees, snap.tree, self.includes, self.error)
        root_fd = self._open_target()
        names = [d.name for d in plan.dirs]
        dirs = DirFds(root_fd, [d.parent for d in plan.dirs], names, default_limit())
        try:
            with self.phases.span("write"):
                blocked = self._make_dirs(plan, dirs)
            files, links = self._link_groups(plan, blocked)
            self._write_files(plan, dirs, root_fd, files)
            with self.phases.span("write"):
                for entry, first in links:
                    self._hard_link(plan, dirs, entry, first)
                for entry in plan.specials:
                    self._special(plan, dirs, blocked, entry)
                self._dir_metadata(plan, dirs, blocked)
        finally:
            dirs.close()
            os.close(root_fd)
        return self.result

    def _roots(self, snap: Snapshot, trees: TreeCache) -> list[bytes]:
        """The trees the restore walks, for the expansion bound: included ones only."""
        if not self.includes:
            return [snap.tree]
        roots = []
        for parts in self.includes:
            if any(o != parts and parts[: len(o)] == o for o in self.includes):
                continue  # inside another include: counted there
            node = find_node(self.repo, snap, "/" + os.fsdecode(b"/".join(parts)), trees)
            tree = snap.tree if node is None else node.subtree if node.type == "dir" else None
            if tree is not None:
                roots.append(tree)
        return roots

    def _open_target(self) -> int:
        try:
            os.makedirs(self.target, exist_ok=True)
            return os.open(self.target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise RestoreError(
                f"cannot use {os.fsdecode(self.target)} as the restore target: {reason(e)}"
            ) from None

    def _not_restored(self, plan: Plan, up: int) -> str:
        return f"not restored: {self._abs(plan.dirs[up].path)} could not be restored"

    def _make_dirs(self, plan: Plan, dirs: DirFds) -> list[int]:
        """Create the directories, parents first. Per directory: -1 if it is usable, else
        the index of the directory (itself or an ancestor) that could not be restored."""
        blocked = [-1] * len(plan.dirs)
        existing = [ROOT]  # directories that were there already: a killed restore's leftovers
        for i in range(1, len(plan.dirs)):
            d = plan.dirs[i]
            up = blocked[d.parent]
            if up >= 0:
                blocked[i] = up
                self.error(d.path, self._not_restored(plan, up))
                continue
            try:
                if not dirs.make(i):
                    existing.append(i)
            except NotADirectory:
                blocked[i] = i
                self.error(
                    d.path,
                    "refused: exists in the target and is not a directory "
                    "(a symlink there is never followed)",
                )
            except ENTRY_ERRORS as e:
                blocked[i] = i
                self.error(d.path, f"cannot create directory: {reason(e)}")
        self._remove_leftovers(dirs, existing)
        return blocked

    def _remove_leftovers(self, dirs: DirFds, existing: list[int]) -> None:
        """Temporary files of an earlier restore into this target that was killed (they
        never got a final name, so nothing else would remove them)."""
        for i in existing:
            try:
                fd = dirs.acquire(i)
            except ENTRY_ERRORS:
                continue  # changed meanwhile: its files report it
            try:
                if not dirs.path_only(i):  # an O_PATH descriptor cannot be listed
                    self.result.leftovers_removed += remove_stale_temps(fd)
            finally:
                dirs.release(i)

    def _link_groups(
        self, plan: Plan, blocked: list[int]
    ) -> tuple[list[Entry], list[tuple[Entry, Entry]]]:
        """(files to write, (hard link, the file it links to)). Names of one inode with the
        same content form a group whose first name in a usable directory is written."""
        write: list[Entry] = []
        links: list[tuple[Entry, Entry]] = []
        first: dict[tuple[int, int, int, bytes | None], Entry] = {}
        for e in plan.files:
            if blocked[e.dir] >= 0:
                self.error(plan.path(e), self._not_restored(plan, blocked[e.dir]))
                continue
            n = e.node
            if n.links > 1:
                key = (n.device, n.inode, n.size, n.content_hash)
                if key in first:
                    links.append((e, first[key]))
                    continue
                first[key] = e
            write.append(e)
        return write, links

    def _setup(self, plan: Plan) -> Setup:
        spec = reopen_spec(self.repo.backend)
        assert spec is not None  # process_count said the storage can be opened again
        parents = [d.parent for d in plan.dirs]
        names = [d.name for d in plan.dirs]
        return Setup(spec, self.repo.keys, self.repo.config, parents, names, self.is_root)

    def _write_files(self, plan: Plan, dirs: DirFds, root_fd: int, files: list[Entry]) -> None:
        self.progress.files_total = len(files)
        self.progress.bytes_total = sum(e.node.size for e in files)
        self.progress.total_known = True

        def fail(entry: Entry, msg: str) -> None:
            self.error(plan.path(entry), msg)

        writer = FileWriter(
            self.repo, dirs, self.temp, self.progress, fail, is_root=self.is_root,
            phases=self.phases, cancel=self.cancel,
        )  # fmt: skip
        for e in files:
            if not e.node.content:
                writer.write(e, None, None)
        # Files of one blob are restored in batches: one ranged read of a pack serves many
        # (and the files of one directory mostly share a pack). Larger files stream their
        # blobs with prefetch and parallel writes.
        single = [(e, e.node) for e in files if len(e.node.content) == 1]
        batches, alone = pack_batches(self.repo, single)
        large = [e for e in files if len(e.node.content) > 1] + [e for e, _ in alone]
        workers, self._workers = self._workers, []
        if not workers:
            workers = start_workers(process_count(self.repo, len(single) + len(large)))
        if workers:
            with self.phases.span("plan"):
                items, here = work_items(batches, large, self.repo)
            procs = WriterProcesses(
                self.repo, self._setup(plan), root_fd, self.progress, self.phases, fail,
                self.cancel,
            )  # fmt: skip
            left = procs.run(workers, items)  # what they did not write is written here
            batches = []
            large = here + left
        with (
            ThreadPoolExecutor(_FETCH_WORKERS, thread_name_prefix="fetch") as fetch,
            ThreadPoolExecutor(_FILE_WORKERS, thread_name_prefix="write") as writers,
        ):
            tasks = [writers.submit(writer.write_batch, b) for b in batches]
            tasks += [writers.submit(writer.write, e, fetch, None) for e in large]
            for t in tasks:
                t.result()
        for e in files:
            if e.done:
                self.result.files += 1
                self.result.bytes += e.node.size
                self.warn_damaged(plan.path(e), e.node.damaged)

    def _hard_link(self, plan: Plan, dirs: DirFds, entry: Entry, first: Entry) -> None:
        """Link ``entry`` to the verified file ``first`` (under a temporary name, then
        renamed over whatever is at its name)."""
        if not first.done:
            self.error(
                plan.path(entry),
                f"not restored: a hard link of {self._abs(plan.path(first))}, "
                "which could not be restored",
            )
            return
        try:
            self._link_at(dirs, first, entry)
        except ENTRY_ERRORS as e:
            self.error(plan.path(entry), f"cannot create hard link: {reason(e)}")
            return
        self.warn_damaged(plan.path(entry), entry.node.damaged)

    def _link_at(self, dirs: DirFds, first: Entry, entry: Entry) -> None:
        src_fd = dirs.acquire(first.dir)
        try:
            dst_fd = dirs.acquire(entry.dir)
            try:
                tmp = self.temp()
                os.link(
                    first.name, tmp, src_dir_fd=src_fd, dst_dir_fd=dst_fd, follow_symlinks=False
                )
                try:
                    os.replace(tmp, entry.name, src_dir_fd=dst_fd, dst_dir_fd=dst_fd)
                except BaseException:
                    _unlink_quietly(dst_fd, tmp)
                    raise
            finally:
                dirs.release(entry.dir)
        finally:
            dirs.release(first.dir)

    def _special(self, plan: Plan, dirs: DirFds, blocked: list[int], entry: Entry) -> None:
        """A symlink, FIFO, device or socket: made with its metadata under a temporary name,
        then renamed into place."""
        if blocked[entry.dir] >= 0:
            self.error(plan.path(entry), self._not_restored(plan, blocked[entry.dir]))
            return
        node = entry.node
        try:
            dir_fd = dirs.acquire(entry.dir)
            tmp = self.temp()
            try:
                make_special_at(dir_fd, tmp, node, is_root=self.is_root)
                os.replace(tmp, entry.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                _unlink_quietly(dir_fd, tmp)
                raise
            finally:
                dirs.release(entry.dir)
        except ENTRY_ERRORS as e:
            self.error(plan.path(entry), f"cannot create {node.type}: {reason(e)}")
            return
        self.warn_damaged(plan.path(entry), node.damaged)

    def _dir_metadata(self, plan: Plan, dirs: DirFds, blocked: list[int]) -> None:
        """Deepest first: a directory's mode may forbid writing into it, and writing into
        it would change its mtime."""
        for i in range(len(plan.dirs) - 1, ROOT, -1):
            d = plan.dirs[i]
            if blocked[i] >= 0 or d.node is None:
                continue
            if d.node.invalid:
                self.error(
                    d.path,
                    f"restored without its metadata: invalid in the snapshot ({d.node.invalid})",
                )
                continue
            try:
                fd = dirs.acquire(i)
                try:
                    apply = apply_metadata_opath if dirs.path_only(i) else apply_metadata_fd
                    apply(fd, d.node, is_root=self.is_root)
                finally:
                    dirs.release(i)
            except ENTRY_ERRORS as e:
                self.error(d.path, f"cannot set metadata: {reason(e)}")
                continue
            self.result.dirs += 1
            self.warn_damaged(d.path, d.node.damaged)


def _unlink_quietly(dir_fd: int, name: bytes) -> None:
    # Not created, or its directory went away: the original error is what matters.
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=dir_fd)


def run_restore(
    repo: Repository,
    snap: Snapshot,
    target: str,
    includes: list[str] | None = None,
    progress: Progress | None = None,
    phases: Phases = NO_PHASES,
) -> RestoreResult:
    """Restore all it can; entries that failed are listed in ``errors``, never left wrong.
    ``phases`` receives the timings of planning, fetching, decrypting, writing and
    verifying."""
    for path in includes or []:
        find_node(repo, snap, path)  # a typo must not look like a successful empty restore
    with locked(repo, exclusive=False, operation="restore"):  # prune must not run meanwhile
        restorer = Restorer(repo, target, includes or [], progress or Progress(), phases)
        return restorer.run(snap)
