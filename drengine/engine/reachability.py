"""Which blobs the snapshots reference: the mark phase shared by check and prune."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from drengine.core.errors import DrengineError
from drengine.core.model import Node
from drengine.engine.tree_paths import TreeCache
from drengine.repository.repo import Repository

# Called with (snapshot ID, tree ID, the tree's nodes) for every distinct tree read.
TreeHook = Callable[[str, bytes, list[Node]], None]


@dataclass
class Reachable:
    blobs: set[bytes] = field(default_factory=set)  # tree and data blob IDs
    snapshots: int = 0
    errors: list[str] = field(default_factory=list)


def referenced_blobs(
    repo: Repository,
    on_blob: Callable[[str, bytes], None] | None = None,
    on_tree: TreeHook | None = None,
) -> Reachable:
    """Walk every snapshot's trees once (shared subtrees once in all), without recursion.

    ``on_blob(snapshot ID, blob ID)`` is called for each data blob the first time it is
    seen. Snapshots or trees that cannot be read are listed in ``errors``; their blobs are
    unknown, so a caller that deletes must stop on any error.
    """
    out = Reachable()
    seen = out.blobs
    # Each tree is loaded once here: none kept decoded, all read in runs of their pack,
    # and what a run holds besides is kept only if not seen yet.
    trees = TreeCache(repo, max_nodes=0, read_runs=True, done=seen)
    for oid in repo.snapshot_ids():
        try:
            snap = repo.load_snapshot(oid)
        except DrengineError as e:
            out.errors.append(str(e))
            continue
        out.snapshots += 1
        stack = [snap.tree]
        while stack:
            tree_id = stack.pop()
            if tree_id in seen:
                continue
            seen.add(tree_id)
            try:
                nodes = trees.load(tree_id)
            except DrengineError as e:
                out.errors.append(f"snapshot {oid[:8]}: {e}")
                continue
            if on_tree is not None:
                on_tree(oid, tree_id, nodes)
            for node in nodes:
                # Even an entry with invalid metadata keeps its data reachable: prune must
                # not delete what a repair could still save.
                if node.subtree is not None:
                    stack.append(node.subtree)
                for bid in node.content:
                    if bid not in seen:
                        seen.add(bid)
                        if on_blob is not None:
                            on_blob(oid, bid)
    return out
