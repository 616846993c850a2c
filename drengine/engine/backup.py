"""Back up files and directories into a snapshot (the walk itself is ``walker.py``).

What a snapshot may reference, and how the backup makes sure of it:

- The index is loaded with only the packs that are in storage, so a blob whose pack was lost
  is stored again rather than deduplicated against data that is gone.
- Before the snapshot is written, the backup proves that every pack it references (the ones
  it deduplicated against and the ones it uploaded) is still listed, and that its lock is
  still in storage, unchanged, and was refreshed in time. A backup that was paused long
  enough for its lock to look stale (a prune may have run meanwhile) fails and writes no
  snapshot.
- The parents of a backed-up path are recorded as directories, following symlinks on the
  way there (``/srv/link/docs`` with ``link -> data`` gives ``/srv/link/docs``), so every
  stored file can be listed and restored under the path that was given.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drengine import __version__
from drengine.core.cache_dir import repo_cache_dir
from drengine.core.errors import DrengineError, UsageError
from drengine.core.model import Node, Snapshot, encode_tree
from drengine.engine.files_cache import FilesCache
from drengine.engine.progress import Progress
from drengine.engine.walker import Child, NoExcludes, Walker
from drengine.pipeline.saver import BlobSaver
from drengine.repository.layout import BlobType
from drengine.repository.locks import HeldLock, locked
from drengine.repository.repo import Repository
from drengine.sources.excludes import Excluder, ExcludeRules
from drengine.sources.files import node_from_stat

log = logging.getLogger(__name__)


@dataclass
class BackupOptions:
    paths: list[str]
    exclude: ExcludeRules | None = None
    one_file_system: bool = False
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    use_files_cache: bool = True


@dataclass
class BackupResult:
    snapshot: Snapshot
    errors: list[dict[str, str]]

    @property
    def partial(self) -> bool:
        return bool(self.errors)


class NothingBackedUp(DrengineError):
    """No input could be read at all: no snapshot is written (exit 1, not 3)."""


def run_backup(
    repo: Repository,
    opts: BackupOptions,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Back up ``opts.paths`` under a shared lock (other backups may run; prune may not)."""
    with locked(repo, exclusive=False, operation="backup") as lock:
        return _run_backup(repo, opts, progress or Progress(), now, lock)


def _run_backup(
    repo: Repository,
    opts: BackupOptions,
    progress: Progress,
    now: Callable[[], datetime],
    lock: HeldLock,
) -> BackupResult:
    started = time.monotonic()
    start_time = now()
    paths = _normalize(opts.paths)
    repo.load_index(present=repo.list_packs())
    # Uploads to object storage wait on round trips, not on the disk: more of them in flight.
    saver = BlobSaver(repo, uploaders=4 if repo.remote else 2)
    cache = (
        FilesCache.open_or_none(repo_cache_dir(repo.id) / "files.sqlite")
        if opts.use_files_cache
        else None
    )
    w = Walker(
        repo,
        saver,
        progress,
        excluder=_excluder(opts.exclude),
        one_file_system=opts.one_file_system,
        cache=cache,
    )
    ok = False
    try:
        root = _walk_paths(w, paths)
        saver.close()
        ok = True
    finally:
        if not ok:
            saver.stop()  # readers blocked on a full queue get an error and return
        w.pool.shutdown(wait=True, cancel_futures=not ok)
        w.close()
        if not ok:
            saver.abort()
        if cache is not None:
            cache.close(commit=ok)
    stats = saver.stats
    summary: dict[str, Any] = {
        "files_total": w.counts["files_new"]
        + w.counts["files_changed"]
        + w.counts["files_unmodified"],
        **{k: v for k, v in w.counts.items() if k != "dirs"},
        "dirs_total": w.counts["dirs"],
        "bytes_total": w.bytes_total,
        "bytes_new": stats.bytes_new,
        "bytes_stored": stats.bytes_stored,
        "blobs_new": stats.blobs_new,
        "packs_new": stats.packs,
        "duration_seconds": round(time.monotonic() - started, 3),
        "errors": w.errors,
    }
    host = opts.host or socket.gethostname()
    str_paths = [os.fsdecode(p) for p in paths]
    snap = Snapshot(
        time=start_time.isoformat(),
        host=host,
        username=_username(),
        paths=str_paths,
        parent=_find_parent(repo, host, str_paths),
        tags=sorted(set(opts.tags)),
        tree=root,
        program_version=__version__,
        summary=summary,
    )
    lock.prove()  # first: a lost lock is the cause when packs are missing too
    saver.prove_references()
    lock.check_valid()
    repo.save_snapshot(snap)
    return BackupResult(snap, w.errors)


def _excluder(rules: ExcludeRules | None) -> Excluder | NoExcludes:
    if rules is None or rules.empty:
        return NoExcludes()
    return Excluder(rules, warn=log.warning)


def _walk_paths(w: Walker, paths: list[bytes]) -> bytes:
    """Walk every path; the root tree ID. ``NothingBackedUp`` if no input could be read."""
    tops: dict[bytes, Child] = {}
    for p in paths:
        try:
            st = os.lstat(p)
        except OSError as e:
            w.error(p, e)
            continue
        w.root_dev = st.st_dev
        child = w.walk(p, os.path.basename(p) or b"/")
        if child is not None:
            tops[p] = child
    w.drain(0)
    resolved = {p: n for p, c in tops.items() if (n := w.resolve(c, os.path.dirname(p)))}
    readable = [p for p in resolved if p not in w.unlisted]
    if not readable:
        if w.errors:
            raise NothingBackedUp(
                "nothing was backed up, no snapshot written: "
                + "; ".join(f"{e['path']}: {e['error']}" for e in w.errors[:5])
                + (f" (and {len(w.errors) - 5} more)" if len(w.errors) > 5 else "")
            )
        raise NothingBackedUp("nothing was backed up, no snapshot written")
    if b"/" in resolved:  # "/" itself: its contents are the root tree
        top = resolved[b"/"]
        return top.subtree if top.subtree else w.empty_tree()
    return _parent_trees(w, resolved)


def _parent_trees(w: Walker, resolved: dict[bytes, Node]) -> bytes:
    """The trees above the backed-up paths: their parent directories, holding only them.

    Built bottom-up without recursion (a path may have thousands of components). A parent
    is recorded as a directory even where the path reached it through a symlink."""
    # Every directory above a backed-up path, with the nodes it holds.
    held: dict[bytes, list[Node]] = {b"/": []}
    for p in resolved:
        parent = os.path.dirname(p)
        while parent not in held:
            held[parent] = []
            parent = os.path.dirname(parent)
    for p, node in sorted(resolved.items()):
        if p in held:
            # Both a backed-up path and the parent of another (say a symlink given together
            # with a path below it): one tree position cannot be both.
            w.errors.append(
                {
                    "path": os.fsdecode(p),
                    "error": "stored as a directory holding the other paths given below it, "
                    f"not as the {node.type} it is",
                }
            )
            continue
        held[os.path.dirname(p)].append(node)
    # Deepest first, so each directory's subtree exists before its parent is encoded.
    for d in sorted(held, key=lambda d: d.count(b"/"), reverse=True):
        if d == b"/":
            continue
        node = _parent_node(d)
        node.subtree = w.saver.save_blob(BlobType.TREE, encode_tree(held[d]))
        held[os.path.dirname(d)].append(node)
    return w.saver.save_blob(BlobType.TREE, encode_tree(held[b"/"]))


def _parent_node(path: bytes) -> Node:
    """A parent of a backed-up path: the directory it leads to (symlinks followed)."""
    name = os.path.basename(path)
    try:
        st = os.stat(path)
        node = node_from_stat(name, path, st)
    except OSError:
        return Node(name=name, type="dir", mode=0o755)
    if node.type != "dir":  # it was walked through, so it is one; stay safe regardless
        return Node(name=name, type="dir", mode=0o755)
    node.xattrs = []  # those of a symlink's target would be misleading here
    return node


def _find_parent(repo: Repository, host: str, paths: list[str]) -> str | None:
    """The latest snapshot of the same host and paths: what this backup continues."""
    same = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == sorted(paths)]
    return same[-1].id if same else None


def _normalize(paths: list[str]) -> list[bytes]:
    """Absolute paths; drop any that lies inside another one given, when walking that one
    reaches it (not when the other one is a symlink: walking stores the link only)."""
    if not paths:
        raise UsageError("backup needs at least one path")
    out: list[bytes] = []
    for p in sorted({os.path.abspath(os.fsencode(p)) for p in paths}):
        if any(_walk_reaches(q, p) for q in out):
            continue
        out.append(p)
    return out


def _walk_reaches(top: bytes, path: bytes) -> bool:
    if not (path == top or path.startswith(top.rstrip(b"/") + b"/")):
        return False
    try:
        return not os.path.islink(top)
    except OSError:
        return True


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
