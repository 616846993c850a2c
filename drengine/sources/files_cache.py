"""The files cache: unchanged files are not read again.

Keyed by absolute path; a hit needs equal size, mtime, ctime and inode, and every blob it
names still in the index (prune may have removed some). An entry is stored only when the
file's ctime lies safely before the moment we started reading it, so a write that lands in
the same timestamp tick as our read cannot hide behind equal metadata (git's "racy clean").
Rows are fetched a directory at a time: one query per directory, not per file. Rows are
written in short transactions of a few thousand, never one transaction for the whole backup,
so two backups on one host (cron overlapping a manual run) share the cache: SQLite's WAL lets
readers run beside a writer, and a writer waits its turn (busy timeout) instead of failing.
A cache that cannot be used costs speed only: the backup goes on without it.
"""

from __future__ import annotations

import logging
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

_Row = tuple[bytes, int, int, int, int, bytes, bytes]
_FLUSH_EVERY = 2000
_BUSY_TIMEOUT_S = 120.0

log = logging.getLogger(__name__)


def _split(path: bytes) -> tuple[bytes, bytes]:
    """``os.path.split`` for the walker's normalized paths (no doubled or trailing
    slashes), at a fraction of its cost; anything else goes to ``os.path.split``."""
    i = path.rfind(b"/")
    if i > 0 and path[i - 1] != 0x2F and i < len(path) - 1:
        return path[:i], path[i + 1 :]
    return os.path.split(path)


@dataclass(frozen=True, slots=True)
class CachedFile:
    content: list[bytes]
    content_hash: bytes


class FilesCache:
    def __init__(self, path: Path) -> None:
        self.path = path
        # Created 0600 before SQLite opens it: it names every backed-up path.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        self._db: sqlite3.Connection | None = sqlite3.connect(
            path, isolation_level=None, timeout=_BUSY_TIMEOUT_S, check_same_thread=False
        )
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise
        self._dir: bytes | None = None
        self._rows: dict[bytes, _Row] = {}
        self._pending: list[tuple[bytes, bytes, int, int, int, int, bytes, bytes]] = []

    @classmethod
    def open_or_none(cls, path: Path) -> FilesCache | None:
        try:
            return cls(path)
        except (sqlite3.Error, OSError) as e:
            log.warning("files cache %s cannot be used (%s): every file is read", path, e)
            return None

    def _disable(self, e: Exception) -> None:
        log.warning("files cache %s failed (%s): going on without it", self.path, e)
        if self._db is not None:
            self._db.close()
        self._db = None
        self._rows, self._pending = {}, []

    def _load(self, path: bytes) -> tuple[bytes, bytes]:
        directory, name = _split(path)
        if directory != self._dir and self._db is not None:
            try:
                cur = self._db.execute(
                    "SELECT name, size, mtime_ns, ctime_ns, inode, content, content_hash"
                    " FROM files WHERE dir = ?",
                    (directory,),
                )
                self._rows = {r[0]: r for r in cur.fetchall()}  # BLOBs come back as bytes
            except sqlite3.Error as e:
                self._disable(e)
            self._dir = directory
        return directory, name

    def lookup(self, path: bytes, node: Node) -> CachedFile | None:
        _, name = self._load(path)
        row = self._rows.get(name)
        if row is None:
            return None
        _, size, mtime, ctime, inode, content, chash = row
        if size != node.size or mtime != node.mtime_ns or ctime != node.ctime_ns:
            return None
        if inode != node.inode:
            return None
        ids = [content[i : i + 32] for i in range(0, len(content), 32)]
        return CachedFile(ids, chash)

    def known(self, path: bytes) -> bool:
        _, name = self._load(path)
        return name in self._rows

    def store(self, path: bytes, node: Node, read_started_ns: int) -> None:
        if self._db is None:
            return
        directory, name = _split(path)
        coarse = node.ctime_ns % _NS == 0 and node.mtime_ns % _NS == 0
        margin = _COARSE_MARGIN_NS if coarse else _FINE_MARGIN_NS
        # A racy entry is kept as "seen" (for the changed/new counts) with a size of -1,
        # which no file matches, so the next backup reads the file again.
        racy = node.ctime_ns >= read_started_ns - margin or node.content_hash is None
        self._pending.append(
            (
                directory,
                name,
                -1 if racy else node.size,
                node.mtime_ns,
                node.ctime_ns,
                node.inode,
                b"".join(node.content),
                node.content_hash or b"",
            )
        )
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Write the rows stored so far in one short transaction."""
        if self._db is None or not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            self._disable(e)

    def close(self, commit: bool) -> None:
        """Write what is left and close. Rows of an aborted backup are safe to keep: a hit
        also needs every blob of the file in the index."""
        if self._db is None:
            return
        if commit:
            self.flush()
        self._db.close()
        self._db = None
