"""Back up sources into a snapshot: compose source -> pipeline -> repository.

The engine names no kind of source: each one (``sources/``) yields entries, whose streams
are stored here through ``ContentStore``; the entries are then placed in one tree under
their paths, and each source's record goes into the snapshot.

What a snapshot may reference, and how the backup makes sure of it:

- The index is loaded with only the packs that are in storage, so a blob whose pack was lost
  is stored again rather than deduplicated against data that is gone.
- Before the snapshot is written, every source has reported success after its last byte
  (a dump command that failed halfway fails the backup), the backup proves that every pack
  it references (the ones it deduplicated against and the ones it uploaded) is still listed,
  and that its lock is still in storage, unchanged, and was refreshed in time. A backup that
  was paused long enough for its lock to look stale (a prune may have run meanwhile) fails
  and writes no snapshot.
- The parents of a backed-up path are recorded as directories, following symlinks on the
  way there (``/srv/link/docs`` with ``link -> data`` gives ``/srv/link/docs``), so every
  stored file can be listed and restored under the path that was given.
"""

from __future__ import annotations

import getpass
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from drengine import __version__
from drengine.core.cache_dir import repo_cache_dir
from drengine.core.errors import HookFailed, UsageError
from drengine.core.model import Node, Snapshot
from drengine.core.progress import Progress
from drengine.engine.hooks import run_hooks
from drengine.pipeline.content import ContentStore
from drengine.pipeline.saver import BlobSaver
from drengine.repository.locks import HeldLock, locked
from drengine.repository.repo import Repository
from drengine.sources.base import BackupContext, Entry, Source, StoredStream
from drengine.sources.files import NothingBackedUp, parent_node

log = logging.getLogger(__name__)

__all__ = ["BackupOptions", "BackupResult", "NothingBackedUp", "run_backup"]


@dataclass
class BackupOptions:
    sources: list[Source]
    tags: list[str] = field(default_factory=list)
    host: str | None = None
    use_files_cache: bool = True
    before: list[str] = field(default_factory=list)  # hooks (``engine/hooks.py``)
    after: list[str] = field(default_factory=list)
    # Set by another thread (the daemon on SIGTERM): the backup stops at the next chunk or
    # entry, indexes what it uploaded, writes no snapshot, releases its lock (``Cancelled``).
    cancel: threading.Event | None = None


@dataclass
class BackupResult:
    snapshot: Snapshot
    errors: list[dict[str, str]]

    @property
    def partial(self) -> bool:
        return bool(self.errors)


def run_backup(
    repo: Repository,
    opts: BackupOptions,
    progress: Progress | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> BackupResult:
    """Back up ``opts.sources`` under a shared lock (other backups may run; prune may not)."""
    if not opts.sources:
        raise UsageError("backup needs at least one path or source")
    done: BackupResult | None = None
    try:
        run_hooks("before", opts.before)
        with locked(repo, exclusive=False, operation="backup") as lock:
            done = _run_backup(repo, opts, progress or Progress(), now, lock)
    finally:
        if opts.after:
            _after_hooks(opts.after, done)
    return done


def _after_hooks(commands: list[str], done: BackupResult | None) -> None:
    try:
        run_hooks("after", commands, "success" if done else "failure")
    except HookFailed as e:
        if done is None:  # the backup's own error is the one to report
            log.error("%s (after the failed backup)", e)
            return
        # The snapshot is written, but a hook left the host in need of an admin.
        raise HookFailed(f"{e}; snapshot {done.snapshot.id[:8]} was saved") from None


def _run_backup(
    repo: Repository,
    opts: BackupOptions,
    progress: Progress,
    now: Callable[[], datetime],
    lock: HeldLock,
) -> BackupResult:
    started = time.monotonic()
    start_time = now()
    present = repo.list_packs()
    repo.load_index(present=present)
    # Uploads to object storage wait on round trips, not on the disk: more of them in flight.
    # A local write of a pack takes milliseconds: one uploader keeps up, and every pack
    # in flight is 16 MiB of memory.
    saver = BlobSaver(repo, uploaders=4 if repo.remote else 1)
    store = ContentStore(repo, saver, progress, opts.cancel)
    cache_dir = repo_cache_dir(repo.id) if opts.use_files_cache else None
    ctx = BackupContext(store, cache_dir, present.keys())
    tops: dict[bytes, Entry] = {}
    records: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    ok = False
    try:
        for src in opts.sources:
            stored: list[StoredStream] = []
            for entry in src.entries(ctx):
                if entry.path in tops:
                    raise UsageError(
                        f"two inputs would be stored at {os.fsdecode(entry.path)}; "
                        "give the stream another name"
                    )
                if entry.open is not None:
                    stored.append(_store_stream(store, entry))
                tops[entry.path] = entry
            records.append(src.finish(stored))
            errors += src.errors
        store.check_cancel()
        root = _root_tree(store, tops, errors)
        saver.close()
        ok = True
    finally:
        if not ok:
            saver.stop()  # readers blocked on a full queue get an error and return
        for src in opts.sources:
            src.close(ok)
        if not ok:
            saver.abort()
    stats = saver.stats
    summary: dict[str, Any] = {}
    for src in opts.sources:
        for k, v in src.summary().items():
            summary[k] = summary.get(k, 0) + v
    summary.update(
        {
            "bytes_new": stats.bytes_new,
            "bytes_stored": stats.bytes_stored,
            "blobs_new": stats.blobs_new,
            "packs_new": stats.packs,
            "duration_seconds": round(time.monotonic() - started, 3),
            "errors": errors,
        }
    )
    if "bytes_total" not in summary:
        summary["bytes_total"] = sum(e.node.size for e in tops.values() if e.open)
    host = opts.host or socket.gethostname()
    str_paths = sorted(os.fsdecode(p) for p in tops)
    snap = Snapshot(
        time=start_time.isoformat(),
        host=host,
        username=_username(),
        paths=str_paths,
        parent=_find_parent(repo, host, str_paths),
        tags=sorted(set(opts.tags)),
        tree=root,
        program_version=__version__,
        source=_source_record(records),
        summary=summary,
    )
    lock.prove()  # first: a lost lock is the cause when packs are missing too
    saver.prove_references()
    lock.check_valid()
    repo.save_snapshot(snap)
    return BackupResult(snap, errors)


def _store_stream(store: ContentStore, entry: Entry) -> StoredStream:
    assert entry.open is not None
    with entry.open() as stream:
        c = store.store_stream(stream.readinto, sha256=True)  # type: ignore[arg-type]
    node = entry.node
    node.content, node.size, node.content_hash = c.ids, c.size, c.content_hash
    assert c.sha256 is not None
    store.progress.file_done(os.fsdecode(entry.path))
    return StoredStream(entry.path, c.size, c.sha256)


def _source_record(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The snapshot's ``source``: the kind (``mixed`` for several) and every part's record."""
    kinds = {r["kind"] for r in records}
    return {"kind": kinds.pop() if len(kinds) == 1 else "mixed", "parts": records}


def _root_tree(
    store: ContentStore, tops: dict[bytes, Entry], errors: list[dict[str, str]]
) -> bytes:
    if b"/" in tops:  # "/" itself: its contents are the root tree
        if len(tops) > 1:
            raise UsageError("/ cannot be backed up together with other sources in one snapshot")
        top = tops[b"/"].node
        return top.subtree if top.subtree else store.save_tree([])
    return _parent_trees(store, tops, errors)


def _parent_trees(
    store: ContentStore, tops: dict[bytes, Entry], errors: list[dict[str, str]]
) -> bytes:
    """The trees above the entries: their parent directories, holding only them.

    Built bottom-up without recursion (a path may have thousands of components). A parent
    is recorded as a directory even where the path reached it through a symlink."""
    # Every directory above an entry, with the nodes it holds, and whether it is a real one.
    held: dict[bytes, list[Node]] = {b"/": []}
    real: dict[bytes, bool] = {}
    for p, e in tops.items():
        parent = os.path.dirname(p)
        while parent not in held:
            held[parent] = []
            parent = os.path.dirname(parent)
        parent = os.path.dirname(p)
        while parent != b"/" and e.real_parents and not real.get(parent):
            real[parent] = True
            parent = os.path.dirname(parent)
    for p, e in sorted(tops.items()):
        if p in held:
            # Both a backed-up path and the parent of another (say a symlink given together
            # with a path below it): one tree position cannot be both.
            errors.append(
                {
                    "path": os.fsdecode(p),
                    "error": "stored as a directory holding the other paths given below it, "
                    f"not as the {e.node.type} it is",
                }
            )
            continue
        held[os.path.dirname(p)].append(e.node)
    # Deepest first, so each directory's subtree exists before its parent is encoded.
    for d in sorted(held, key=lambda d: d.count(b"/"), reverse=True):
        if d == b"/":
            continue
        node = parent_node(d) if real.get(d) else _made_up_dir(d)
        node.subtree = store.save_tree(held[d])
        held[os.path.dirname(d)].append(node)
    return store.save_tree(held[b"/"])


def _made_up_dir(path: bytes) -> Node:
    """A parent of a stream's entry (``/postgresql``): no such directory on the host."""
    now = time.time_ns()
    return Node(
        name=os.path.basename(path),
        type="dir",
        mode=0o700,
        uid=os.getuid(),
        gid=os.getgid(),
        mtime_ns=now,
        ctime_ns=now,
    )


def _find_parent(repo: Repository, host: str, paths: list[str]) -> str | None:
    """The latest snapshot of the same host and paths: what this backup continues."""
    same = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == sorted(paths)]
    return same[-1].id if same else None


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
