"""Back up files and directories into a snapshot.

The main thread walks the tree (lstat, files cache, tree assembly); reader threads read and
chunk changed files; ``BlobSaver`` threads compress, encrypt, pack and upload. Directories are
finished in post-order as their files complete, at most ``_OPEN_DIRS`` at a time, so memory
stays bounded however large the tree.
"""

from __future__ import annotations

import fnmatch
import getpass
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeAlias

import blake3

from drengine import __version__
from drengine.core.cache_dir import repo_cache_dir
from drengine.core.errors import DrengineError, UsageError
from drengine.core.model import Node, Snapshot, encode_tree
from drengine.engine.files_cache import FilesCache
from drengine.engine.progress import Progress
from drengine.pipeline.chunker import Chunker
from drengine.pipeline.saver import BlobSaver
from drengine.repository.layout import BlobType
from drengine.repository.locks import HeldLock, locked
from drengine.repository.repo import Repository
from drengine.sources.files import node_from_stat, open_file

_OPEN_DIRS = 256
_READERS = 2
# Files up to this size fit one chunk (FastCDC never cuts below its minimum chunk size).
_SMALL_FILE = 64 * 1024


@dataclass
class BackupOptions:
    paths: list[str]
    excludes: list[str] = field(default_factory=list)
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


@dataclass
class _FileResult:
    node: Node | None
    read_started_ns: int


@dataclass
class _PendingDir:
    node: Node
    path: bytes
    children: list[Child]
    done: Node | None = None


# What a directory holds while it is open: a finished node, a file being read, a
# subdirectory, or (node, first child) for a further name of a hard-linked file.
Child: TypeAlias = "Node | _FileResult | Future[_FileResult] | _PendingDir | tuple[Node, Any]"


class _Walker:
    def __init__(
        self, repo: Repository, saver: BlobSaver, opts: BackupOptions, progress: Progress
    ) -> None:
        self.repo, self.saver, self.opts, self.progress = repo, saver, opts, progress
        s = repo.settings
        self.chunker = Chunker(s.chunker_min, s.chunker_avg, s.chunker_max, repo.keys.chunker_seed)
        self.pool = ThreadPoolExecutor(_READERS, thread_name_prefix="reader")
        self.slots = threading.BoundedSemaphore(_READERS * 8)
        self.pending: deque[_PendingDir] = deque()
        self.errors: list[dict[str, str]] = []
        self.cache = (
            FilesCache(repo_cache_dir(repo.id) / "files.sqlite") if opts.use_files_cache else None
        )
        self.hardlinks: dict[tuple[int, int], Child] = {}
        self.counts = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0}
        self.bytes_total = 0
        self.root_dev: int | None = None
        self.small = min(_SMALL_FILE, s.chunker_min)

    # ---- errors and exclusion -----------------------------------------------------------

    def error(self, path: bytes, e: BaseException) -> None:
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        self.errors.append({"path": os.fsdecode(path), "error": msg})

    def excluded(self, path: bytes, name: bytes) -> bool:
        if not self.opts.excludes:
            return False
        spath, sname = os.fsdecode(path), os.fsdecode(name)
        for pat in self.opts.excludes:
            target = spath if "/" in pat else sname
            if fnmatch.fnmatchcase(target, pat):
                return True
        return False

    # ---- walking ------------------------------------------------------------------------

    def entry(self, path: bytes, name: bytes) -> Child | None:
        """The child for one directory entry, or None when it is skipped or unreadable."""
        try:
            st = os.lstat(path)
            node = node_from_stat(name, path, st)
        except OSError as e:
            self.error(path, e)
            return None
        if node.type == "dir":
            crosses = self.root_dev is not None and st.st_dev != self.root_dev
            if self.opts.one_file_system and crosses:
                return self.finish_dir(_PendingDir(node, path, []))
            return self.walk_dir(path, node)
        if node.type == "file":
            return self.file_child(path, node)
        self.progress.file_done()
        return node

    def walk_dir(self, path: bytes, node: Node) -> _PendingDir:
        children: list[Child] = []
        try:
            with os.scandir(path) as it:
                names = sorted(e.name for e in it)
        except OSError as e:
            self.error(path, e)
            names = []
        for name in names:
            full = path + b"/" + name if path != b"/" else b"/" + name
            if self.excluded(full, name):
                continue
            child = self.entry(full, name)
            if child is not None:
                children.append(child)
        pd = _PendingDir(node, path, children)
        self.pending.append(pd)
        self.drain(_OPEN_DIRS)
        return pd

    def file_child(self, path: bytes, node: Node) -> Child:
        self.bytes_total += node.size
        if node.links > 1:
            key = (node.device, node.inode)
            first = self.hardlinks.get(key)
            if first is not None:
                self.progress.file_done()
                return (node, first)
        child: Child
        hit = self.cache.lookup(path, node) if self.cache else None
        if hit is not None and all(self.repo.index.lookup(b) is not None for b in hit.content):
            node.content, node.content_hash = hit.content, hit.content_hash
            self.counts["files_unmodified"] += 1
            self.progress.file_done()
            self.progress.add_bytes(node.size)
            child = node
        else:
            known = self.cache is not None and self.cache.known(path)
            self.counts["files_changed" if known else "files_new"] += 1
            if node.size <= self.small:
                # Small files are read right here: a thread hand-off costs more than the read.
                child = self.read_small(path, node)
            else:
                self.slots.acquire()
                child = self.pool.submit(self.read_file, path, node, True)
        if node.links > 1:
            self.hardlinks[(node.device, node.inode)] = child
        return child

    def read_small(self, path: bytes, node: Node) -> _FileResult:
        started = time.time_ns()
        try:
            fd = open_file(path)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_ino != node.inode:
                    raise OSError(0, "changed while being backed up")
                data = os.read(fd, self.small + 1)
                if len(data) > self.small:
                    return self.read_file(path, node, False)  # it grew: chunk it
            finally:
                os.close(fd)
        except OSError as e:
            self.error(path, e)
            return _FileResult(None, started)
        node.size, node.content_hash = len(data), blake3.blake3(data).digest()
        node.content = []
        if data:
            bid = self.repo.blob_id(data)
            self.saver.save(BlobType.DATA, bid, data)
            node.content.append(bid)
        self.progress.add_bytes(len(data))
        self.progress.file_done()
        return _FileResult(node, started)

    def read_file(self, path: bytes, node: Node, release: bool) -> _FileResult:
        started = time.time_ns()
        try:
            fd = open_file(path)
            with open(fd, "rb", buffering=0, closefd=True) as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_ino != node.inode:
                    raise OSError(0, "changed while being backed up")
                hasher = blake3.blake3()
                ids, size = [], 0
                for chunk in self.chunker.chunks(f.readinto, first=st.st_size):
                    bid = self.repo.blob_id(chunk)
                    hasher.update(chunk)
                    self.saver.save(BlobType.DATA, bid, chunk)
                    ids.append(bid)
                    size += len(chunk)
                    self.progress.add_bytes(len(chunk))
            node.content, node.size, node.content_hash = ids, size, hasher.digest()
            self.progress.file_done(os.fsdecode(path))
            return _FileResult(node, started)
        except OSError as e:
            self.error(path, e)
            return _FileResult(None, started)
        finally:
            if release:
                self.slots.release()

    # ---- finishing directories ----------------------------------------------------------

    def drain(self, keep: int) -> None:
        while self.pending and (len(self.pending) > keep or self.ready(self.pending[0])):
            self.finish_dir(self.pending.popleft())

    @staticmethod
    def ready(pd: _PendingDir) -> bool:
        return all(not isinstance(c, Future) or c.done() for c in pd.children)

    def resolve(self, child: Child, path: bytes) -> Node | None:
        if isinstance(child, Node):
            return child
        if isinstance(child, _PendingDir):
            if child.done is None:
                self.finish_dir(child)
            return child.done
        if isinstance(child, Future | _FileResult):
            res = child.result() if isinstance(child, Future) else child
            if res.node is not None and self.cache is not None:
                self.cache.store(path + b"/" + res.node.name, res.node, res.read_started_ns)
            return res.node
        node, first = child  # a further name of a hard-linked file
        src = self.resolve_quiet(first)
        if src is None:
            return None
        node.content, node.content_hash, node.size = src.content, src.content_hash, src.size
        return node

    def resolve_quiet(self, child: Child) -> Node | None:
        if isinstance(child, Future):
            return child.result().node
        if isinstance(child, _FileResult):
            return child.node
        if isinstance(child, Node):
            return child
        return None

    def finish_dir(self, pd: _PendingDir) -> _PendingDir:
        if pd.done is not None:
            return pd
        nodes = [n for c in pd.children if (n := self.resolve(c, pd.path)) is not None]
        pd.node.subtree = self.saver.save_blob(BlobType.TREE, encode_tree(nodes))
        pd.done = pd.node
        self.counts["dirs"] += 1
        self.progress.file_done()
        return pd


def _node_for_path(path: bytes) -> Node:
    name = os.path.basename(path) or b"/"
    return node_from_stat(name, path, os.lstat(path))


def _normalize(paths: list[str]) -> list[bytes]:
    """Absolute paths; drop any that lies inside another one given."""
    if not paths:
        raise UsageError("backup needs at least one path")
    out: list[bytes] = []
    for p in sorted({os.path.abspath(os.fsencode(p)) for p in paths}):
        if any(p == q or p.startswith(q.rstrip(b"/") + b"/") for q in out):
            continue
        out.append(p)
    return out


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
    repo.load_index()
    # Uploads to object storage wait on round trips, not on the disk: more of them in flight.
    saver = BlobSaver(repo, uploaders=4 if getattr(repo.backend, "remote", False) else 2)
    w = _Walker(repo, saver, opts, progress)
    ok = False
    try:
        root_children: dict[bytes, Any] = {}
        for p in paths:
            if w.excluded(p, os.path.basename(p)):
                continue
            try:
                st = os.lstat(p)
            except OSError as e:
                w.error(p, e)
                continue
            w.root_dev = st.st_dev
            child = w.entry(p, os.path.basename(p) or b"/")
            if child is None:
                continue
            parts = [c for c in p.split(b"/") if c]
            if not parts:  # "/" itself: its contents are the root tree
                root_children = {b"": child}
                break
            slot = root_children
            for comp in parts[:-1]:
                slot = slot.setdefault(comp, {})
            slot[parts[-1]] = child
        w.drain(0)
        if not root_children:
            raise DrengineError(
                "nothing to back up: " + "; ".join(f"{e['path']}: {e['error']}" for e in w.errors)
                if w.errors
                else "nothing to back up: every path given is excluded"
            )
        if b"" in root_children:
            top = w.resolve(root_children[b""], b"")
            root = top.subtree if top is not None and top.subtree else _empty_tree(w)
        else:
            root = _virtual_tree(w, b"", root_children)
        saver.close()
        ok = True
    finally:
        if not ok:
            saver.stop()  # readers blocked on a full queue get an error and return
        w.pool.shutdown(wait=True, cancel_futures=not ok)
        if not ok:
            saver.abort()
        if w.cache is not None:
            w.cache.close(commit=ok)
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
    # If our lock went stale (a host paused for half an hour), a prune may have deleted packs
    # we reference as unindexed: fail rather than write a snapshot that might not restore.
    lock.check_valid()
    repo.save_snapshot(snap)
    return BackupResult(snap, w.errors)


def _empty_tree(w: _Walker) -> bytes:
    return w.saver.save_blob(BlobType.TREE, encode_tree([]))


def _find_parent(repo: Repository, host: str, paths: list[str]) -> str | None:
    """The latest snapshot of the same host and paths: what this backup continues."""
    same = [s for s in repo.snapshots() if s.host == host and sorted(s.paths) == sorted(paths)]
    return same[-1].id if same else None


def _virtual_tree(w: _Walker, prefix: bytes, children: dict[bytes, Any]) -> bytes:
    """The tree above the backed-up paths: their parent directories, holding only them."""
    nodes: list[Node] = []
    for name, child in children.items():
        path = prefix + b"/" + name
        if isinstance(child, dict):
            node = _node_for_path(path)
            node.subtree = _virtual_tree(w, path, child)
            nodes.append(node)
        else:
            resolved = w.resolve(child, prefix or b"")
            if resolved is not None:
                nodes.append(resolved)
    return w.saver.save_blob(BlobType.TREE, encode_tree(nodes))


def _username() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""
