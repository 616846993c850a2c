"""Walk file trees into nodes and tree blobs for a backup.

The main thread walks (scandir, lstat, files cache, tree assembly); reader threads read and
chunk changed files; ``BlobSaver`` threads compress, encrypt, pack and upload. Directories
are finished in post-order as their files complete, at most ``_OPEN_DIRS`` at a time, so
memory stays bounded however large the tree. The walk is iterative (an explicit stack of
directories being listed), so a tree of any depth backs up: no Python recursion limit.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from collections.abc import Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias

from drengine.core.errors import DrengineError
from drengine.core.model import Node
from drengine.pipeline.content import ContentStore
from drengine.sources.files_cache import FilesCache
from drengine.sources.files_meta import Anchor, Place, node_from_stat, open_file

_OPEN_DIRS = 256
_READERS = 2


class Excluder(Protocol):
    """What the walker asks of the exclude rules (``sources/excludes.py``)."""

    def path_excluded(self, path: bytes) -> bool: ...

    def dir_kept(self, path: bytes, names: Collection[bytes]) -> frozenset[bytes] | None: ...

    def size_excluded(self, size: int) -> bool: ...


class NoExcludes:
    def path_excluded(self, path: bytes) -> bool:
        return False

    def dir_kept(self, path: bytes, names: Collection[bytes]) -> frozenset[bytes] | None:
        return None

    def size_excluded(self, size: int) -> bool:
        return False


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


@dataclass
class _Listing:
    """A directory whose entries are being walked: one frame of the walk's stack."""

    node: Node
    path: bytes
    names: list[bytes]
    place: Place  # where its entries are for system calls
    anchor: Anchor | None  # opened for it (a deep path): released when the listing ends
    pos: int = 0
    children: list[Child] = field(default_factory=list)


# What a directory holds while it is open: a finished node, a file being read, a
# subdirectory, or (node, first child) for a further name of a hard-linked file.
Child: TypeAlias = "Node | _FileResult | Future[_FileResult] | _PendingDir | tuple[Node, Any]"


def join(directory: bytes, name: bytes) -> bytes:
    return directory + b"/" + name if directory != b"/" else b"/" + name


class Walker:
    def __init__(
        self,
        store: ContentStore,
        *,
        excluder: Excluder,
        one_file_system: bool,
        cache: FilesCache | None,
    ) -> None:
        self.store, self.progress = store, store.progress
        self.excluder = excluder
        self.one_file_system = one_file_system
        self.pool = ThreadPoolExecutor(_READERS, thread_name_prefix="reader")
        self.slots = threading.BoundedSemaphore(_READERS * 8)
        self.pending: deque[_PendingDir] = deque()
        self.errors: list[dict[str, str]] = []
        self.cache = cache
        self.hardlinks: dict[tuple[int, int], Child] = {}
        self.counts = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0}
        self.bytes_total = 0
        self.root_dev: int | None = None
        self.small = store.small
        self.unlisted: set[bytes] = set()  # directories whose entries could not be read
        self.anchors: list[Anchor] = []  # descriptors of deep directories (see Place)

    def close(self) -> None:
        """After the readers stopped: close what a walk that stopped midway left open."""
        for anchor in self.anchors:
            anchor.close()
        self.anchors = []

    # ---- errors -------------------------------------------------------------------------

    def error(self, path: bytes, e: BaseException) -> None:
        msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        self.errors.append({"path": os.fsdecode(path), "error": msg})

    # ---- walking ------------------------------------------------------------------------

    def walk(self, path: bytes, name: bytes) -> Child | None:
        """The child for a backed-up path and, for a directory, everything below it. The
        path itself is never excluded (restic's rule since 0.19): a user who names it wants
        it; excludes apply to what lies inside."""
        first = self.entry(path, name, Place(None, path), given=True)
        if not isinstance(first, _Listing):
            return first
        stack = [first]
        while True:
            self.store.check_cancel()
            top = stack[-1]
            if top.pos < len(top.names):
                entry_name = top.names[top.pos]
                top.pos += 1
                place = top.place.child(entry_name)
                child = self.entry(join(top.path, entry_name), entry_name, place)
                if isinstance(child, _Listing):
                    stack.append(child)
                elif child is not None:
                    top.children.append(child)
                continue
            stack.pop()
            if top.anchor is not None:
                top.anchor.release()
            pd = _PendingDir(top.node, top.path, top.children)
            self.pending.append(pd)
            self.drain(_OPEN_DIRS)
            if not stack:
                return pd
            stack[-1].children.append(pd)

    def entry(
        self, path: bytes, name: bytes, place: Place, given: bool = False
    ) -> Child | _Listing | None:
        """One directory entry: a child, a directory to list, or None (skipped/unreadable).
        ``path`` names it (files cache, messages); ``place`` reaches it (system calls)."""
        if not given and self.excluder.path_excluded(path):
            return None
        try:
            st = place.lstat()
            node = node_from_stat(name, place, st)
        except OSError as e:
            self.error(path, e)
            return None
        if node.type == "dir":
            crosses = self.root_dev is not None and st.st_dev != self.root_dev
            if self.one_file_system and crosses:
                return self.finish_dir(_PendingDir(node, path, []))
            return self.list_dir(path, node, place)
        if node.type == "file":
            if not given and self.excluder.size_excluded(node.size):
                return None
            return self.file_child(path, node, place)
        self.progress.file_done()
        return node

    def list_dir(self, path: bytes, node: Node, place: Place) -> _Listing | None:
        anchor = None
        try:
            place, anchor = place.descend()
            if anchor is not None:
                self.anchors.append(anchor)
            names = place.names()
        except OSError as e:
            self.error(path, e)
            self.unlisted.add(path)
            names = []
        kept = self.excluder.dir_kept(path, names) if names else None
        if kept is not None:  # a tagged directory (CACHEDIR.TAG): it stays, with its tag only
            names = [n for n in names if n in kept]
        return _Listing(node, path, names, place, anchor)

    def file_child(self, path: bytes, node: Node, place: Place) -> Child:
        self.bytes_total += node.size
        if node.links > 1:
            key = (node.device, node.inode)
            first = self.hardlinks.get(key)
            if first is not None:
                self.progress.file_done()
                return (node, first)
        child: Child
        hit = self.cache.lookup(path, node) if self.cache else None
        if hit is not None and self.store.has_all(hit.content):
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
                child = self.read_small(path, node, place)
            else:
                self.slots.acquire()
                if place.anchor is not None:  # the walk may leave the directory first
                    place.anchor.hold()
                child = self.pool.submit(self.read_file, path, node, place, True)
        if node.links > 1:
            self.hardlinks[(node.device, node.inode)] = child
        return child

    def read_small(self, path: bytes, node: Node, place: Place) -> _FileResult:
        started = time.time_ns()
        try:
            fd = open_file(place)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_ino != node.inode:
                    raise OSError(0, "changed while being backed up")
                data = os.read(fd, self.small + 1)
                if len(data) > self.small:
                    return self.read_file(path, node, place, False)  # it grew: chunk it
            finally:
                os.close(fd)
        except OSError as e:
            self.error(path, e)
            return _FileResult(None, started)
        c = self.store.store_bytes(data)
        node.content, node.size, node.content_hash = c.ids, c.size, c.content_hash
        self.progress.file_done()
        return _FileResult(node, started)

    def read_file(self, path: bytes, node: Node, place: Place, release: bool) -> _FileResult:
        """``release``: called in a reader thread, which gives back its slot (and its hold
        on the anchor) when done."""
        started = time.time_ns()
        try:
            fd = open_file(place)
            with open(fd, "rb", buffering=0, closefd=True) as f:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_ino != node.inode:
                    raise OSError(0, "changed while being backed up")
                c = self.store.store_stream(f.readinto, first=st.st_size)
            node.content, node.size, node.content_hash = c.ids, c.size, c.content_hash
            self.progress.file_done(os.fsdecode(path))
            return _FileResult(node, started)
        except OSError as e:
            self.error(path, e)
            return _FileResult(None, started)
        finally:
            if release:
                self.slots.release()
                if place.anchor is not None:
                    place.anchor.release()

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
                self.cache.store(join(path, res.node.name), res.node, res.read_started_ns)
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
        """Finish a directory whose subdirectories are finished (post-order guarantees it)."""
        if pd.done is not None:
            return pd
        nodes = [n for c in pd.children if (n := self.resolve(c, pd.path)) is not None]
        try:
            pd.node.subtree = self.store.save_tree(nodes)
        except DrengineError as e:  # a directory too large for one tree blob
            self.error(pd.path, e)
            self.unlisted.add(pd.path)
            pd.node.subtree = self.store.save_tree([])
        pd.done = pd.node
        pd.children = []  # stored in the tree blob: memory stays bounded by open dirs
        self.counts["dirs"] += 1
        self.progress.file_done()
        return pd

    def empty_tree(self) -> bytes:
        return self.store.save_tree([])
