"""Paths inside a snapshot: look up a node, list entries below a path."""

from __future__ import annotations

import os
from collections.abc import Iterator

from drengine.core.errors import UsageError
from drengine.core.model import Node, Snapshot
from drengine.repository.repo import Repository


def split_path(path: str) -> list[bytes]:
    if not path.startswith("/"):
        raise UsageError(f"{path!r} is not an absolute path inside the snapshot")
    return [p for p in os.fsencode(path).split(b"/") if p and p != b"."]


def find_node(repo: Repository, snap: Snapshot, path: str) -> Node | None:
    """The node at an absolute path inside a snapshot; None for the root itself."""
    parts = split_path(path)
    tree: bytes | None = snap.tree
    node: Node | None = None
    for i, part in enumerate(parts):
        if tree is None:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
        match = [n for n in repo.load_tree(tree) if n.name == part]
        if not match:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
        node = match[0]
        tree = node.subtree if node.type == "dir" else None
        if node.type != "dir" and i != len(parts) - 1:
            raise UsageError(f"{path} is not in snapshot {snap.id[:8]}")
    return node


def list_entries(repo: Repository, snap: Snapshot, path: str = "/") -> Iterator[tuple[bytes, Node]]:
    """(absolute path, node) for the node at ``path`` and everything below it."""
    node = find_node(repo, snap, path)
    prefix = b"".join(b"/" + p for p in split_path(path))
    if node is not None:
        yield prefix, node
        if node.type != "dir" or node.subtree is None:
            return
        yield from repo.walk_tree(node.subtree, prefix)
    else:
        yield from repo.walk_tree(snap.tree, b"")
