"""Walk file trees into nodes and tree blobs for a backup.

The main thread walks (scandir, lstat, files cache, tree assembly); reader threads read and
chunk changed files; ``BlobSaver`` threads compress, encrypt, pack and upload. Directories
are finished in post-order as their files complete, at most ``_OPEN_DIRS`` at a time, so
memory stays bounded however large the tree. The walk is iterative (an explicit stack of
directories being listed), so a tree of any depth backs up: no Python recursion limit.

A directory is listed and every entry ``lstat``-ed before any entry is handled, which gives
its listing signature (``files_dirsig.py``). When the files cache holds a row of that path
with the same signature, the directory is walked for its subdirectories only; once they are
finished and their trees are the ones the row names, the row's tree blob is the directory's
(no node built, no file looked up, nothing encoded). Otherwise its other entries are handled
then (the *fallback*), as any directory's are.

A directory that changed still has unchanged entries: the row keeps each entry's key (its
``lstat`` fields and owners) and its node's JSON, and every entry whose key is unchanged is
taken as that JSON (a ``_Kept`` child): no node built, no extended attributes listed, no
file looked up, nothing encoded. The tree blob is the same bytes either way.
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
from drengine.core.model import Node, encode_node
from drengine.pipeline.content import ContentStore
from drengine.sources.files_cache import CachedFile, DirRow, FilesCache, racy_margin_ns
from drengine.sources.files_dirsig import (
    listing_signature,
    pack_entries,
    subtree_signature,
    unpack_entries,
)
from drengine.sources.files_meta import Anchor, Place, node_from_stat, open_file
from drengine.sources.files_read_procs import Item, ReadProcs, read_plan
from drengine.sources.files_read_worker import FAILED, OK

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


@dataclass(slots=True)
class _ReadText:
    """A small file read by a read worker: its node's JSON, and what the files cache
    keeps of it (its ``fstat`` as read, its content)."""

    text: bytes
    size: int
    mtime_ns: int
    ctime_ns: int
    content: list[bytes]
    content_hash: bytes


@dataclass(slots=True)
class _Kept:
    """An unchanged entry of a changed directory: its node's JSON from the directory row."""

    name: bytes
    text: bytes


# A listed entry: its name and its ``lstat`` (or why there is none).
_Entry: TypeAlias = "tuple[bytes, os.stat_result | OSError]"


@dataclass
class _Listing:
    """A directory whose entries are being walked: one frame of the walk's stack."""

    node: Node
    path: bytes
    entries: list[_Entry]
    place: Place  # where its entries are for system calls
    anchor: Anchor | None  # opened for it (a deep path): released when the listing ends
    todo: list[_Entry]  # what the walk handles now: every entry, or the subdirectories
    sig: bytes | None = None  # listing signature; None: no row may be stored or used
    keys: dict[bytes, bytes] | None = None  # every entry's key, with ``sig``
    clean: bool = True  # nothing failed and nothing changed too recently to be told apart
    reuse: DirRow | None = None  # a row with this signature: reuse its tree if it holds
    signed: list[tuple[bytes, os.stat_result]] = field(default_factory=list)  # with reuse
    pos: int = 0
    children: list[Child] = field(default_factory=list)


@dataclass
class _PendingDir:
    node: Node
    path: bytes
    children: list[Child]
    done: Node | None = None
    sig: bytes | None = None
    keys: dict[bytes, bytes] | None = None
    clean: bool = False
    listing: _Listing | None = None  # kept (anchor held) while a row's reuse is undecided


# What a directory holds while it is open: a finished node, a file being read (by a reader
# thread, or by a read worker: an ``Item``), a subdirectory, an unchanged entry's JSON, or
# (node, first child) for a further name of a hard-linked file.
Child: TypeAlias = (
    "Node | _FileResult | Future[_FileResult] | Item | _PendingDir | _Kept | tuple[Node, Any]"
)


def entry_name(path: bytes) -> bytes:
    """The last name of a walked path (absolute, no trailing slash)."""
    return path[path.rfind(b"/") + 1 :]


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
        dir_context: bytes | None = None,
    ) -> None:
        self.store, self.progress = store, store.progress
        self.excluder = excluder
        self.one_file_system = one_file_system
        self.pool = ThreadPoolExecutor(_READERS, thread_name_prefix="reader")
        self.slots = threading.BoundedSemaphore(_READERS * 8)
        self.pending: deque[_PendingDir] = deque()
        self.errors: list[dict[str, str]] = []
        self.cache = cache
        # The first name of each hard-linked file: its child, and what it counted as.
        self.hardlinks: dict[tuple[int, int], tuple[Child, str]] = {}
        self.counts = {"files_new": 0, "files_changed": 0, "files_unmodified": 0, "dirs": 0}
        self.bytes_total = 0
        self.root_dev: int | None = None
        self.small = store.small
        self.unlisted: set[bytes] = set()  # directories whose entries could not be read
        self.anchors: list[Anchor] = []  # descriptors of deep directories (see Place)
        # Directory rows are used and stored only with a context digest of the options.
        self.dir_context = dir_context if cache is not None else None
        self.relied_on_packs = False
        # Small files go to worker processes once this many were read here (None: never).
        self.read_plan = read_plan()
        self.reads: ReadProcs | None = None
        self.small_reads = 0

    def shutdown(self, ok: bool) -> None:
        """Stop the read workers and the reader threads, then close what a walk that
        stopped midway left open."""
        if self.reads is not None:
            self.reads.close()
        self.pool.shutdown(wait=True, cancel_futures=not ok)
        self.close()

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
            if top.pos < len(top.todo):
                entry_name, st = top.todo[top.pos]
                top.pos += 1
                place = top.place.child(entry_name)
                n = len(self.errors)
                child = self.entry(join(top.path, entry_name), entry_name, place, st)
                if isinstance(child, _Listing):
                    stack.append(child)
                elif child is not None:
                    top.children.append(child)
                elif len(self.errors) > n:
                    top.clean = False
                continue
            stack.pop()
            pd = _PendingDir(
                top.node, top.path, top.children, sig=top.sig, keys=top.keys, clean=top.clean
            )
            if top.reuse is not None:
                pd.listing = top  # its anchor is released once the reuse is decided
            elif top.anchor is not None:
                top.anchor.release()
            self.pending.append(pd)
            self.drain(_OPEN_DIRS)
            if not stack:
                return pd
            stack[-1].children.append(pd)

    def entry(
        self,
        path: bytes,
        name: bytes,
        place: Place,
        st: os.stat_result | OSError | None = None,
        given: bool = False,
    ) -> Child | _Listing | None:
        """One directory entry: a child, a directory to list, or None (skipped/unreadable).
        ``path`` names it (files cache, messages); ``place`` reaches it (system calls);
        ``st`` is its ``lstat`` from the listing (None: a given path, not listed)."""
        try:
            if st is None:
                st = place.lstat()
            elif isinstance(st, OSError):
                raise st
            looked: tuple[CachedFile | None, bool] | None = None
            if not given and st.st_nlink == 1 and self.may_hand_out(place, st):
                # A small file for a read worker, which builds its node as well.
                if self.excluder.size_excluded(st.st_size):
                    return None
                looked = self.cache.lookup_stat(path, st) if self.cache else (None, False)
                if looked[0] is None:
                    return self.hand_out(path, st, looked[1])
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
            if not given and looked is None and self.excluder.size_excluded(node.size):
                return None
            return self.file_child(path, node, place, looked)
        self.progress.file_done()
        return node

    def list_dir(self, path: bytes, node: Node, place: Place) -> _Listing | None:
        anchor = None
        started = time.time_ns()
        listed = True
        try:
            place, anchor = place.descend()
            if anchor is not None:
                self.anchors.append(anchor)
            names = place.names()
        except OSError as e:
            self.error(path, e)
            self.unlisted.add(path)
            names, listed = [], False
        kept = self.excluder.dir_kept(path, names) if names else None
        if kept is not None:  # a tagged directory (CACHEDIR.TAG): it stays, with its tag only
            names = [n for n in names if n in kept]
        excluded = self.excluder.path_excluded
        entries: list[_Entry] = []
        for n in names:
            if excluded(join(path, n)):
                continue
            try:
                entries.append((n, place.child(n).lstat()))
            except OSError as e:
                entries.append((n, e))
        listing = _Listing(node, path, entries, place, anchor, entries)
        if self.dir_context is not None and listed:
            self.sign(listing, started)
        return listing

    def sign(self, listing: _Listing, started: int) -> None:
        """The listing's signature, whether a row may be stored for it, and a row to reuse."""
        signed = [(n, st) for n, st in listing.entries if not isinstance(st, OSError)]
        if len(signed) != len(listing.entries):
            return
        assert self.dir_context is not None and self.cache is not None
        listing.sig, listing.keys = listing_signature(self.dir_context, signed)
        listing.clean = not any(
            st.st_ctime_ns >= started - racy_margin_ns(st.st_ctime_ns, st.st_mtime_ns)
            for _, st in signed
        )
        row = self.cache.lookup_dir(listing.path)
        if row is None:
            return
        if row.sig == listing.sig:
            listing.reuse, listing.signed = row, signed
            listing.todo = [e for e in signed if stat.S_ISDIR(e[1].st_mode)]
            return
        kept, todo = self.keep_unchanged(listing.path, signed, listing.keys)
        if kept:
            listing.children += kept
            listing.todo = todo

    def keep_unchanged(
        self, path: bytes, signed: list[tuple[bytes, os.stat_result]], keys: dict[bytes, bytes]
    ) -> tuple[list[_Kept], list[_Entry]]:
        """The entries (never a subdirectory) whose key is the one in the records of the
        directory's row, as their JSON, and the entries left to handle."""
        assert self.dir_context is not None and self.cache is not None
        records = unpack_entries(self.dir_context, self.cache.dir_entries(path))
        if not records:
            return [], list(signed)
        kept: list[_Kept] = []
        todo: list[_Entry] = []
        files = nbytes = 0
        for e in signed:
            name, st = e
            rec = records.get(name)
            if rec is None or rec[0] != keys[name] or stat.S_ISDIR(st.st_mode):
                todo.append(e)
                continue
            kept.append(_Kept(name, rec[1]))
            if stat.S_ISREG(st.st_mode):
                files += 1
                nbytes += st.st_size
        if kept:
            self.rely_on_cached_packs()
            self.counts["files_unmodified"] += files
            self.bytes_total += nbytes
            self.progress.files_done_many(len(kept), nbytes)
        return kept, todo

    def rely_on_cached_packs(self) -> None:
        """Rows name blobs (below a tree, in an entry's JSON) that lie in the packs the
        cache knows, which the snapshot then references without looking each one up."""
        if not self.relied_on_packs and self.cache is not None:
            self.store.rely_on_packs(self.cache.known_packs)
            self.relied_on_packs = True

    def file_child(
        self,
        path: bytes,
        node: Node,
        place: Place,
        looked: tuple[CachedFile | None, bool] | None = None,
    ) -> Child:
        """``looked``: the files cache's answer for it, if it was asked already."""
        self.bytes_total += node.size
        if node.links > 1:
            key = (node.device, node.inode)
            seen = self.hardlinks.get(key)
            if seen is not None:
                # Every name counts as a file, as in a reused directory (and in restic).
                self.counts[seen[1]] += 1
                self.progress.file_done()
                return (node, seen[0])
        child: Child
        if looked is None:
            looked = self.cache.lookup(path, node) if self.cache else (None, False)
        hit, known = looked
        if hit is not None and self.store.has_all(hit.content):
            node.content, node.content_hash = hit.content, hit.content_hash
            self.counts["files_unmodified"] += 1
            self.progress.file_done()
            self.progress.add_bytes(node.size)
            child, kind = node, "files_unmodified"
        else:
            kind = "files_changed" if known else "files_new"
            self.counts[kind] += 1
            if node.size <= self.small:
                # Small files are read right here: a thread hand-off costs more than the read.
                child = self.read_small(path, node, place)
                self.small_reads += 1
                if self.reads is None and self.read_plan and self.small_reads >= self.read_plan[0]:
                    self.start_reads(self.read_plan[1])
            else:
                self.slots.acquire()
                if place.anchor is not None:  # the walk may leave the directory first
                    place.anchor.hold()
                child = self.pool.submit(self.read_file, path, node, place, True)
        if node.links > 1:
            self.hardlinks[(node.device, node.inode)] = (child, kind)
        return child

    # ---- small files in read worker processes (``files_read_procs``) ----------------------

    def may_hand_out(self, place: Place, st: os.stat_result) -> bool:
        """Whether this entry, if it needs reading, goes to a read worker (reached by an
        absolute path: the workers cannot use this process's anchor descriptors)."""
        return (
            self.reads is not None
            and place.anchor is None
            and st.st_size <= self.small
            and stat.S_ISREG(st.st_mode)
            and self.reads.running
        )

    def start_reads(self, n: int) -> None:
        self.read_plan = None  # once: if none start, the walk reads on by itself
        reads = ReadProcs(self.store.small_blobs(), n, self.answered, self.in_process)
        if reads.running:
            self.reads = reads
        else:
            reads.close()

    def hand_out(self, path: bytes, st: os.stat_result, known: bool) -> Item:
        assert self.reads is not None
        self.counts["files_changed" if known else "files_new"] += 1
        self.bytes_total += st.st_size
        item = Item(path, st.st_ino, time.time_ns())
        self.reads.add(item, st.st_size)
        return item

    def answered(self, item: Item, answer: tuple[Any, ...]) -> _ReadText | _FileResult | None:
        """A worker's answer for a file (``files_read_worker``), in the serving thread."""
        if answer[0] == OK:
            _, size, blob_id, content_hash, payload, text, mtime_ns, ctime_ns = answer
            c = self.store.store_sealed(blob_id, content_hash, payload, size)
            self.progress.file_done()
            return _ReadText(text, size, mtime_ns, ctime_ns, c.ids, content_hash)
        if answer[0] == FAILED:
            self.error(item.path, OSError(answer[1], answer[2]))
            return _FileResult(None, item.started_ns)
        self.in_process([item])  # it grew past the small-file size: chunked by a reader
        return None

    def in_process(self, items: list[Item]) -> None:
        """Files no worker answers for: read by the reader threads, as without workers."""
        assert self.reads is not None
        for item in items:
            try:
                self.pool.submit(self.read_item, item)
            except RuntimeError as e:  # shut down: the backup is ending without them
                self.reads.fail(item, e)

    def read_item(self, item: Item) -> None:
        """A handed-out file read here after all: its node built from a new ``lstat``, the
        listed inode required."""
        assert self.reads is not None
        place = Place(None, item.path)
        started = time.time_ns()
        try:
            try:
                st = place.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_ino != item.inode:
                    raise OSError(0, "changed while being backed up")
                node = node_from_stat(entry_name(item.path), place, st)
            except OSError as e:
                self.error(item.path, e)
                self.reads.complete([item], [_FileResult(None, started)])
                return
            self.reads.complete([item], [self.read_small(item.path, node, place)])
        except BaseException as e:
            self.reads.fail(item, e)

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
        return all(
            c.done() if isinstance(c, Future) else not isinstance(c, Item) or c.done
            for c in pd.children
        )

    def resolve(self, child: Child, path: bytes) -> Node | None:
        if isinstance(child, Node):
            return child
        if isinstance(child, _PendingDir):
            if child.done is None:
                self.finish_dir(child)
            return child.done
        if isinstance(child, Future | Item | _FileResult):
            res = self.wait(child) if not isinstance(child, _FileResult) else child
            if res.node is not None and self.cache is not None:
                self.cache.store(path, res.node.name, res.node, res.read_started_ns)
            return res.node
        assert not isinstance(child, _Kept)  # taken as its JSON by ``encode``
        node, first = child  # a further name of a hard-linked file
        src = self.resolve_quiet(first)
        if src is None:
            return None
        node.content, node.content_hash, node.size = src.content, src.content_hash, src.size
        return node

    def wait(self, child: Future[_FileResult] | Item) -> _FileResult:
        if isinstance(child, Future):
            return child.result()
        res = self.wait_read(child)
        assert isinstance(res, _FileResult)  # only a directory's encoding takes a _ReadText
        return res

    def wait_read(self, item: Item) -> _ReadText | _FileResult:
        assert self.reads is not None
        res: _ReadText | _FileResult = self.reads.wait(item)
        return res

    def resolve_quiet(self, child: Child) -> Node | None:
        if isinstance(child, Future | Item):
            return self.wait(child).node
        if isinstance(child, _FileResult):
            return child.node
        if isinstance(child, Node):
            return child
        return None

    def finish_dir(self, pd: _PendingDir) -> _PendingDir:
        """Finish a directory whose subdirectories are finished (post-order guarantees it)."""
        if pd.done is not None:
            return pd
        if pd.listing is not None and not self.reused(pd, pd.listing):
            self.fallback(pd, pd.listing)
        if pd.done is None:
            self.encode(pd)
        pd.children = []  # stored in the tree blob: memory stays bounded by open dirs
        self.counts["dirs"] += 1
        self.progress.file_done()
        return pd

    def encode(self, pd: _PendingDir) -> None:
        parts: list[tuple[bytes, bytes]] = []  # every node's (name, JSON)
        entries: list[tuple[bytes, bytes]] = []  # those other than subdirectories
        subtrees: list[bytes | None] = []
        for c in pd.children:
            if isinstance(c, _Kept):
                part = (c.name, c.text)
                entries.append(part)
            elif isinstance(c, Item) and isinstance(r := self.wait_read(c), _ReadText):
                part = (entry_name(c.path), r.text)
                entries.append(part)
                if self.cache is not None:
                    self.cache.store_fields(
                        pd.path, part[0], r.size, r.mtime_ns, r.ctime_ns, c.inode,
                        r.content, r.content_hash, c.started_ns,
                    )  # fmt: skip
            elif (n := self.resolve(c, pd.path)) is None:
                continue
            else:
                part = (n.name, encode_node(n).encode("ascii"))
                if n.type == "dir":
                    subtrees.append(n.subtree)
                else:
                    entries.append(part)
            parts.append(part)
        clean = pd.clean and len(parts) == len(pd.children)
        try:
            pd.node.subtree = self.store.save_tree_parts(parts)
        except DrengineError as e:  # a directory too large for one tree blob
            self.error(pd.path, e)
            self.unlisted.add(pd.path)
            pd.node.subtree = self.store.save_tree([])
            clean = False
        pd.done = pd.node
        if clean and pd.sig is not None and pd.keys is not None and self.cache is not None:
            assert self.dir_context is not None
            keys = pd.keys
            records = pack_entries(self.dir_context, ((n, keys[n], t) for n, t in entries))
            row = DirRow(pd.sig, subtree_signature(subtrees), pd.node.subtree, records)
            self.cache.store_dir(pd.path, row)

    def reused(self, pd: _PendingDir, listing: _Listing) -> bool:
        """Reuse the row's tree if the subdirectories' trees are the ones it names."""
        row = listing.reuse
        assert row is not None and self.cache is not None
        subs = [n for c in pd.children if (n := self.resolve(c, pd.path)) is not None]
        if (
            len(subs) != len(listing.todo)
            or subtree_signature(n.subtree for n in subs) != row.sub_sig
            or not self.store.has_all([row.tree])
        ):
            return False
        self.rely_on_cached_packs()
        pd.node.subtree, pd.done, pd.listing = row.tree, pd.node, None
        files = nbytes = 0
        for _, st in listing.signed:
            if stat.S_ISREG(st.st_mode):
                files += 1
                nbytes += st.st_size
        self.counts["files_unmodified"] += files
        self.bytes_total += nbytes
        self.progress.files_done_many(len(listing.entries) - len(listing.todo), nbytes)
        if listing.anchor is not None:
            listing.anchor.release()
        return True

    def fallback(self, pd: _PendingDir, listing: _Listing) -> None:
        """The row did not hold: handle the entries other than subdirectories now."""
        pd.listing = None
        subdirs = {c.node.name: c for c in pd.children if isinstance(c, _PendingDir)}
        assert listing.keys is not None
        kept, todo = self.keep_unchanged(pd.path, listing.signed, listing.keys)
        children: list[Child] = list(kept)
        for name, st in todo:
            assert not isinstance(st, OSError)  # signed entries have their lstat
            if stat.S_ISDIR(st.st_mode):
                if (sub := subdirs.get(name)) is not None:
                    children.append(sub)
                continue
            n = len(self.errors)
            child = self.entry(join(pd.path, name), name, listing.place.child(name), st)
            assert not isinstance(child, _Listing)
            if child is not None:
                children.append(child)
            elif len(self.errors) > n:
                pd.clean = False
        pd.children = children
        if listing.anchor is not None:  # reads it started hold it themselves
            listing.anchor.release()

    def empty_tree(self) -> bytes:
        return self.store.save_tree([])
