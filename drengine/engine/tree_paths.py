"""Paths inside a snapshot: look up a node, walk and list the entries below a path.

Walks are iterative, so a tree of any depth works. They are also bounded by what is stored:
trees are content-addressed, so one tree can be referenced from many places, and a chain of
trees that each reference the one below twice describes 2**40 paths in a few KB. Before a
walk, ``check_expansion`` counts the entries a walk would produce, bottom-up and once per
distinct tree, and refuses when that count is over ``max(1,000,000, 1000 x the entries
stored in the distinct trees)``. Real sharing (a hundred identical ``node_modules``
directories deduplicated to one tree) stays far below 1000 copies of every stored entry.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Container, Iterator
from typing import TYPE_CHECKING

from drengine.core.errors import DrengineError, IntegrityError, UsageError
from drengine.core.model import Node, Snapshot
from drengine.repository.index_entry import IndexEntry
from drengine.repository.layout import BlobType
from drengine.repository.repo import Repository

if TYPE_CHECKING:  # built by Index.by_pack; numpy loads with the index, after the key
    from drengine.repository.pack_blobs import BlobsByPack

EXPANSION_FLOOR = 1_000_000
EXPANSION_PER_STORED = 1000
# Decoded trees kept between the count and the walk: enough for most snapshots, so each
# tree is read once; beyond it memory stays bounded and trees are read again.
_CACHED_NODES = 100_000
# Reading trees in runs (``read_runs``): one ranged read at most, the other blobs it may
# read across, and the stored (encrypted, compressed) bytes of trees read along, kept until
# they are needed: about a quarter of their plaintext, so they cost a restore of
# `/usr/share` ~5 MiB instead of ~20.
_RUN_BYTES = 4 << 20
_RUN_GAP = 256 << 10
_STORED_BYTES = 16 << 20


class TreeCache:
    """``Repository.load_tree`` with the most recently used trees kept, by node count.

    With ``read_runs`` (for walks that need every tree below where they start), a tree is
    read together with the tree blobs around it in its pack, up to ``_RUN_BYTES`` in one
    ranged read; the others' stored bytes are kept (up to ``_STORED_BYTES``) and opened
    and verified when they are loaded. On S3 each tree read alone is a GET: a restore of
    `/usr/share` spent 9-14 s of its plan on 1,733 of them.
    """

    def __init__(
        self,
        repo: Repository,
        max_nodes: int = _CACHED_NODES,
        read_runs: bool = False,
        done: Container[bytes] = frozenset(),
    ) -> None:
        self.repo = repo
        self.max_nodes = max_nodes
        self._trees: OrderedDict[bytes, list[Node]] = OrderedDict()
        self._nodes = 0
        self.failed: dict[bytes, str] = {}  # subtrees that cannot be read: why
        self._read_runs = read_runs
        # Trees read along: their index entry and stored bytes, not opened yet.
        self._stored: OrderedDict[bytes, tuple[IndexEntry, bytes]] = OrderedDict()
        self._stored_bytes = 0
        self._by_pack: BlobsByPack | None = None  # the index's trees by pack, made once
        self._done = done  # trees the caller has had already: not kept when read along

    def load_below(self, tree_id: bytes) -> list[Node] | None:
        """A subtree's nodes, or None when it cannot be read: one damaged tree costs the
        directory it describes, not the whole walk (``failed`` says why)."""
        if tree_id in self.failed:
            return None
        try:
            return self.load(tree_id)
        except DrengineError as e:
            self.failed[tree_id] = str(e)
            return None

    def load(self, tree_id: bytes) -> list[Node]:
        nodes = self._trees.get(tree_id)
        if nodes is not None:
            self._trees.move_to_end(tree_id)
            return nodes
        stored = self._stored.pop(tree_id, None)
        if stored is not None:
            self._stored_bytes -= len(stored[1])
            nodes = self._open_stored(tree_id, *stored)
        elif self._read_runs:
            nodes = self._load_with_run(tree_id)
        else:
            nodes = self.repo.load_tree(tree_id)
        self._trees[tree_id] = nodes
        self._nodes += len(nodes)
        while self._nodes > self.max_nodes and len(self._trees) > 1:
            _, old = self._trees.popitem(last=False)
            self._nodes -= len(old)
        return nodes

    def _load_with_run(self, tree_id: bytes) -> list[Node]:
        """The tree, read in one ranged read with its neighbours; anything unusual (a read
        or a blob that fails, a tree alone in its run) goes to ``load_tree``, which reads
        every copy there is and says what is wrong."""
        entry = self.repo.index.lookup(tree_id)
        run = self._run_of(tree_id, entry) if entry is not None else []
        if len(run) < 2:
            return self.repo.load_tree(tree_id)
        assert entry is not None
        start = run[0][1].offset
        try:
            buf = memoryview(self.repo.read_pack(entry.pack_id, start, _end(run[-1][1]) - start))
        except DrengineError:
            return self.repo.load_tree(tree_id)
        for bid, e in run:
            if bid == tree_id or bid in self._trees or bid in self._stored or bid in self._done:
                continue
            self._keep(bid, e, bytes(buf[e.offset - start : _end(e) - start]))
        return self._open_stored(tree_id, entry, buf[entry.offset - start : _end(entry) - start])

    def _open_stored(
        self, tree_id: bytes, entry: IndexEntry, stored: bytes | memoryview
    ) -> list[Node]:
        """Open and verify a tree from the bytes a run read; if they fail, ``load_tree``
        reads every copy there is and says what is wrong."""
        try:
            data = self.repo.open_blob(tree_id, entry, stored)
        except DrengineError:
            return self.repo.load_tree(tree_id)
        return self.repo.decode_tree_blob(tree_id, data)

    def _run_of(self, tree_id: bytes, entry: IndexEntry) -> list[tuple[bytes, IndexEntry]]:
        """The tree blobs next to it in its pack that one ranged read covers."""
        if self._by_pack is None:
            self._by_pack = self.repo.index.by_pack(BlobType.TREE)
        return self._by_pack.around(tree_id, entry, _RUN_BYTES, _RUN_GAP)

    def _keep(self, blob_id: bytes, entry: IndexEntry, stored: bytes) -> None:
        self._stored[blob_id] = (entry, stored)
        self._stored_bytes += len(stored)
        while self._stored_bytes > _STORED_BYTES and self._stored:
            _, (_, old) = self._stored.popitem(last=False)
            self._stored_bytes -= len(old)


def _end(e: IndexEntry) -> int:
    return e.offset + e.length


def subtrees_first(
    root: bytes, load: Callable[[bytes], list[Node]], done: Container[bytes]
) -> Iterator[tuple[bytes, list[Node]]]:
    """(tree ID, nodes) for ``root`` and every distinct tree below it that is not in
    ``done``, each after all its subtrees, without recursion (trees may be thousands of
    levels deep). The caller adds each tree to ``done`` as it handles it, so shared subtrees
    come once: the shared-subtree count, copy and repair snapshots work bottom-up this way."""
    stack: list[tuple[bytes, list[Node] | None]] = [(root, None)]
    on_path: set[bytes] = set()
    while stack:
        tree_id, nodes = stack[-1]
        if nodes is None:
            if tree_id in done:
                stack.pop()
                continue
            if tree_id in on_path:
                raise IntegrityError(f"tree {tree_id.hex()} contains itself (damaged or crafted)")
            nodes = load(tree_id)
            stack[-1] = (tree_id, nodes)
            on_path.add(tree_id)
            stack.extend((t, None) for t in _subtrees(nodes) if t not in done)
            continue
        stack.pop()
        on_path.discard(tree_id)
        if tree_id not in done:
            yield tree_id, nodes


def _subtrees(nodes: list[Node]) -> list[bytes]:
    return [n.subtree for n in nodes if n.type == "dir" and n.subtree is not None]


def expansion(trees: TreeCache, roots: list[bytes]) -> tuple[int, int]:
    """(entries a walk of ``roots`` yields, entries stored in their distinct trees)."""
    expanded: dict[bytes, int] = {}
    stored = 0

    def load(tree_id: bytes) -> list[Node]:  # an unreadable subtree counts as empty
        return (trees.load(tree_id) if tree_id in roots else trees.load_below(tree_id)) or []

    for root in roots:
        for tree_id, nodes in subtrees_first(root, load, expanded):
            stored += len(nodes)
            expanded[tree_id] = len(nodes) + sum(expanded[k] for k in _subtrees(nodes))
    return sum(expanded[r] for r in roots), stored


def check_expansion(trees: TreeCache, roots: list[bytes], what: str) -> int:
    """The number of entries below ``roots``; ``IntegrityError`` if it is over the bound in
    the module docstring (each distinct tree is loaded once, here)."""
    total, stored = expansion(trees, roots)
    limit = max(EXPANSION_FLOOR, EXPANSION_PER_STORED * stored)
    if total > limit:
        raise IntegrityError(
            f"refusing to walk {what}: its trees would expand to {total:,} entries from "
            f"{stored:,} stored ones (the limit is {limit:,}), which only damaged or crafted "
            "trees do"
        )
    return total


Unreadable = Callable[[bytes, str], None]  # (path of a directory, why its contents are lost)


def walk_tree(
    trees: TreeCache,
    tree_id: bytes,
    prefix: bytes = b"",
    unreadable: Unreadable | None = None,
) -> Iterator[tuple[bytes, Node]]:
    """Depth-first (path, node) for every entry below a tree; paths are ``/``-joined bytes.
    A directory whose tree cannot be read is yielded without contents and passed to
    ``unreadable``; the walk goes on."""
    stack: list[tuple[bytes, Iterator[Node]]] = [(prefix, iter(trees.load(tree_id)))]
    while stack:
        base, nodes = stack[-1]
        node = next(nodes, None)
        if node is None:
            stack.pop()
            continue
        path = base + b"/" + node.name
        yield path, node
        if node.type == "dir" and node.subtree is not None:
            below = trees.load_below(node.subtree)
            if below is None:
                if unreadable is not None:
                    unreadable(path, trees.failed[node.subtree])
                continue
            stack.append((path, iter(below)))


def split_path(path: str) -> list[bytes]:
    if not path.startswith("/"):
        raise UsageError(f"{path!r} is not an absolute path inside the snapshot")
    return [p for p in os.fsencode(path).split(b"/") if p and p != b"."]


def find_node(
    repo: Repository, snap: Snapshot, path: str, trees: TreeCache | None = None
) -> Node | None:
    """The node at an absolute path inside a snapshot; None for the root itself."""
    load = trees.load if trees is not None else repo.load_tree
    parts = split_path(path)
    tree: bytes | None = snap.tree
    node: Node | None = None
    for i, part in enumerate(parts):
        if tree is None:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
        match = [n for n in load(tree) if n.name == part]
        if not match:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
        node = match[0]
        tree = node.subtree if node.type == "dir" else None
        if node.type != "dir" and i != len(parts) - 1:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
    return node


def list_entries(
    repo: Repository, snap: Snapshot, path: str = "/", unreadable: Unreadable | None = None
) -> Iterator[tuple[bytes, Node]]:
    """(absolute path, node) for the node at ``path`` and everything below it."""
    trees = TreeCache(repo, read_runs=True)
    node = find_node(repo, snap, path, trees)
    prefix = b"".join(b"/" + p for p in split_path(path))
    root = snap.tree if node is None else node.subtree if node.type == "dir" else None
    if root is not None:
        check_expansion(trees, [root], f"{path} in snapshot {snap.id[:8]}")
    if node is not None:
        yield prefix, node
    if root is not None:
        yield from walk_tree(trees, root, prefix, unreadable)
