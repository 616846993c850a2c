"""The files cache: unchanged files are not read again.

Keyed by absolute path; a hit needs equal size, mtime, ctime and inode, and every blob it
names still in the index (prune may have removed some). An entry is stored only when the
file's ctime lies safely before the moment we started reading it, so a write that lands in
the same timestamp tick as our read cannot hide behind equal metadata (git's "racy clean").
Rows are fetched a directory at a time: one query per directory, not per file.
"""

from __future__ import annotations

import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from drengine.core.model import Node

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    dir BLOB, name BLOB,
    size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER,
    content BLOB, content_hash BLOB,
    PRIMARY KEY (dir, name)
) WITHOUT ROWID
"""
_NS = 1_000_000_000
# Timestamps that are whole seconds come from a coarse file system (ext3, FAT, some NFS):
# there a change within two seconds of our read could keep the same ctime.
_COARSE_MARGIN_NS = 2 * _NS
_FINE_MARGIN_NS = 20_000_000

_Row = tuple[int, int, int, int, bytes, bytes]


@dataclass(frozen=True, slots=True)
class CachedFile:
    content: list[bytes]
    content_hash: bytes


class FilesCache:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._db.execute("BEGIN")
        self._dir: bytes | None = None
        self._rows: dict[bytes, _Row] = {}

    def _load(self, path: bytes) -> tuple[bytes, bytes]:
        directory, name = os.path.split(path)
        if directory != self._dir:
            cur = self._db.execute(
                "SELECT name, size, mtime_ns, ctime_ns, inode, content, content_hash"
                " FROM files WHERE dir = ?",
                (directory,),
            )
            self._rows = {bytes(r[0]): r[1:] for r in cur}
            self._dir = directory
        return directory, name

    def lookup(self, path: bytes, node: Node) -> CachedFile | None:
        _, name = self._load(path)
        row = self._rows.get(name)
        if row is None:
            return None
        size, mtime, ctime, inode, content, chash = row
        if (size, mtime, ctime, inode) != (node.size, node.mtime_ns, node.ctime_ns, node.inode):
            return None
        ids = [bytes(content[i : i + 32]) for i in range(0, len(content), 32)]
        return CachedFile(ids, bytes(chash))

    def known(self, path: bytes) -> bool:
        _, name = self._load(path)
        return name in self._rows

    def store(self, path: bytes, node: Node, read_started_ns: int) -> None:
        directory, name = os.path.split(path)
        coarse = node.ctime_ns % _NS == 0 and node.mtime_ns % _NS == 0
        margin = _COARSE_MARGIN_NS if coarse else _FINE_MARGIN_NS
        # A racy entry is kept as "seen" (for the changed/new counts) with a size of -1,
        # which no file matches, so the next backup reads the file again.
        racy = node.ctime_ns >= read_started_ns - margin or node.content_hash is None
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                directory,
                name,
                -1 if racy else node.size,
                node.mtime_ns,
                node.ctime_ns,
                node.inode,
                b"".join(node.content),
                node.content_hash or b"",
            ),
        )

    def close(self, commit: bool) -> None:
        self._db.execute("COMMIT" if commit else "ROLLBACK")
        self._db.close()
