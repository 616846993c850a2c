"""Helpers for the restore tests: snapshots built directly with the repository API (trees of
any shape, crafted fields), and reading restored trees by descriptor (beyond PATH_MAX).

Imported by the ``test_restore_*`` modules (pytest puts this directory on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import blake3

from drengine.core.model import Node, Snapshot, encode_tree
from drengine.pipeline.saver import BlobSaver
from drengine.repository.layout import BlobType
from drengine.repository.repo import Repository

MTIME = 1_600_000_000_123_456_789


class Builder:
    """Saves blobs and trees into ``repo``; ``snapshot`` finishes and returns a reader."""

    def __init__(self, repo: Repository, password: bytes) -> None:
        self.repo = repo
        self.password = password
        self.saver = BlobSaver(repo)

    def file(self, name: bytes, *chunks: bytes, **fields: Any) -> Node:
        ids = [self.saver.save_blob(BlobType.DATA, c) for c in chunks]
        content = b"".join(chunks)
        node = Node(
            name=name,
            type="file",
            mode=0o644,
            mtime_ns=MTIME,
            size=len(content),
            content=ids,
            content_hash=blake3.blake3(content).digest(),
        )
        for key, value in fields.items():
            setattr(node, key, value)
        return node

    def tree(self, nodes: list[Node]) -> bytes:
        return self.saver.save_blob(BlobType.TREE, encode_tree(nodes))

    def raw_tree(self, dicts: list[dict[str, Any]]) -> bytes:
        """A tree blob from node objects as given (fields may be invalid)."""
        data = json.dumps({"nodes": dicts}, sort_keys=True, separators=(",", ":")).encode()
        return self.saver.save_blob(BlobType.TREE, data)

    def dir(self, name: bytes, children: list[Node] | None = None, **fields: Any) -> Node:
        node = Node(name=name, type="dir", mode=0o755, mtime_ns=MTIME)
        node.subtree = self.tree(children or [])
        for key, value in fields.items():
            setattr(node, key, value)
        return node

    def dir_of(self, name: bytes, subtree: bytes) -> Node:
        return Node(name=name, type="dir", mode=0o755, mtime_ns=MTIME, subtree=subtree)

    def snapshot(self, root: list[Node] | bytes) -> tuple[Repository, Snapshot]:
        tree = root if isinstance(root, bytes) else self.tree(root)
        self.saver.close()
        snap = Snapshot(
            time="2024-01-02T03:04:05+00:00",
            host="test",
            username="test",
            paths=["/"],
            tags=[],
            tree=tree,
            program_version="test",
        )
        self.repo.save_snapshot(snap)
        reader = Repository.open(self.repo.backend, self.password)
        reader.load_index()
        return reader, reader.find_snapshot(snap.id)


def chain(b: Builder, depth: int, name: bytes, leaf: list[Node]) -> Node:
    """``depth`` nested directories called ``name``, ``leaf`` inside the deepest one."""
    node = b.dir(name, leaf)
    for _ in range(depth - 1):
        node = b.dir(name, [node])
    return node


def walk_fd(root: str | bytes) -> Iterator[tuple[bytes, os.stat_result, int]]:
    """(relative path, lstat, parent fd) of everything below ``root``, through directory
    descriptors only (so paths may exceed PATH_MAX). The fd is valid during the step."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    stack = [(b"", top)]
    try:
        while stack:
            rel, fd = stack.pop()
            try:
                for name in sorted(os.listdir(fd)):
                    bname = os.fsencode(name)
                    st = os.stat(bname, dir_fd=fd, follow_symlinks=False)
                    path = rel + b"/" + bname if rel else bname
                    yield path, st, fd
                    if stat.S_ISDIR(st.st_mode):
                        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
                        stack.append((path, os.open(bname, flags, dir_fd=fd)))
            finally:
                os.close(fd)
    finally:
        for _, fd in stack:
            os.close(fd)


def remove_tree(root: str | bytes | os.PathLike[str]) -> None:
    """``rm -rf`` without recursion or long paths (shutil.rmtree recurses per level)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    stack = [os.open(root, flags)]
    try:
        while stack:
            fd = stack[-1]
            sub = None
            for name in os.listdir(fd):
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    os.unlink(name, dir_fd=fd)
                elif os.listdir(child := os.open(name, flags, dir_fd=fd)):
                    sub = child
                    break
                else:
                    os.close(child)
                    os.rmdir(name, dir_fd=fd)
            if sub is None:
                os.close(stack.pop())
            else:
                stack.append(sub)
    finally:
        for fd in stack:
            os.close(fd)
    os.rmdir(root)


def read_at(fd: int, name: bytes) -> bytes:
    f = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd)
    try:
        parts = []
        while chunk := os.read(f, 1 << 20):
            parts.append(chunk)
        return b"".join(parts)
    finally:
        os.close(f)


def test_builder_round_trip(mem_repo: Repository, repo_password: bytes) -> None:
    b = Builder(mem_repo, repo_password)
    reader, snap = b.snapshot([b.dir(b"d", [b.file(b"f", b"hello", b" world")])])
    (d,) = reader.load_tree(snap.tree)
    (f,) = reader.load_tree(d.subtree or b"")
    assert b"".join(reader.read_blob(c) for c in f.content) == b"hello world"
