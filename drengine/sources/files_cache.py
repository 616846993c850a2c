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

Directory rows (``dirs``) let an unchanged directory's tree blob be reused without building
or encoding its nodes (``files_dirsig.py`` says what "unchanged" means), and the unchanged
entries of a changed directory keep their nodes' JSON. A row is trusted
only when the backup that wrote it committed (``gens``: it wrote its snapshot's tree, every
blob below it uploaded and indexed) and no pack has disappeared from storage since: the
cache remembers every pack it has seen with the number of index entries it had
(``pack_blobs``), and when one of them is no longer listed or the index no longer holds that
many entries for it (a prune, a repair, a lost or damaged index object) every directory row
is dropped and the next backup checks each file's blobs again, as without them. A blob's
pack being in storage is not enough: restore finds blobs through the index.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
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
_DIR_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dirs (dir BLOB PRIMARY KEY, sig BLOB, sub_sig BLOB, tree BLOB,"
    " gen INTEGER) WITHOUT ROWID",
    # Apart from ``dirs``: they are large, and an unchanged directory never reads them.
    "CREATE TABLE IF NOT EXISTS dir_entries (dir BLOB PRIMARY KEY, gen INTEGER, entries BLOB)",
    "CREATE TABLE IF NOT EXISTS gens (gen INTEGER PRIMARY KEY, committed INTEGER NOT NULL)",
    # Written by versions that recorded packs without their index entries: rows they
    # committed are dropped once (``start_dirs``).
    "CREATE TABLE IF NOT EXISTS packs (id BLOB PRIMARY KEY) WITHOUT ROWID",
    "CREATE TABLE IF NOT EXISTS pack_blobs (id BLOB PRIMARY KEY, blobs INTEGER NOT NULL)"
    " WITHOUT ROWID",
)
_NS = 1_000_000_000
# Timestamps that are whole seconds come from a coarse file system (ext3, FAT, some NFS):
# there a change within two seconds of our read could keep the same ctime.
_COARSE_MARGIN_NS = 2 * _NS
_FINE_MARGIN_NS = 20_000_000

_Row = tuple[bytes, int, int, int, int, bytes, bytes]
_FLUSH_EVERY = 2000
_FLUSH_BYTES = 4 << 20  # of directory rows' entry records: memory stays bounded
_BUSY_TIMEOUT_S = 120.0

log = logging.getLogger(__name__)


def _split(path: bytes) -> tuple[bytes, bytes]:
    """``os.path.split`` for the walker's normalized paths (no doubled or trailing
    slashes), at a fraction of its cost; anything else goes to ``os.path.split``."""
    i = path.rfind(b"/")
    if i > 0 and path[i - 1] != 0x2F and i < len(path) - 1:
        return path[:i], path[i + 1 :]
    return os.path.split(path)


def racy_margin_ns(ctime_ns: int, mtime_ns: int) -> int:
    """How long before our read a change must lie to be told apart by its timestamps."""
    coarse = ctime_ns % _NS == 0 and mtime_ns % _NS == 0
    return _COARSE_MARGIN_NS if coarse else _FINE_MARGIN_NS


@dataclass(frozen=True, slots=True)
class DirRow:
    sig: bytes  # listing signature
    sub_sig: bytes  # subtree signature
    tree: bytes  # the directory's tree ID
    entries: bytes | None = None  # its entries' records (``files_dirsig.pack_entries``)


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
            for ddl in _DIR_SCHEMA:
                self._db.execute(ddl)
            # A new cache (a first backup) has nothing to look up: no query per directory.
            # Rows another backup writes meanwhile are only missed hits, never wrong ones.
            self._no_files = self._db.execute("SELECT 1 FROM files LIMIT 1").fetchone() is None
            self._no_dirs = self._db.execute("SELECT 1 FROM dirs LIMIT 1").fetchone() is None
        except sqlite3.Error:
            self._db.close()
            raise
        self._dir: bytes | None = None
        self._rows: dict[bytes, _Row] = {}
        self._pending: list[tuple[bytes, bytes, int, int, int, int, bytes, bytes]] = []
        self._gen: int | None = None  # this backup's generation of directory rows
        self._packs: set[bytes] = set()  # every pack the cache has seen
        self._dirs_pending: list[tuple[bytes, bytes, bytes, bytes, int]] = []
        self._entries_pending: list[tuple[bytes, int, bytes | None]] = []
        self._dirs_bytes = 0

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
        self._rows, self._pending, self._dirs_pending, self._gen = {}, [], [], None
        self._entries_pending = []

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

    def lookup(self, path: bytes, node: Node) -> tuple[CachedFile | None, bool]:
        """(the file's cached content if it is unchanged, whether it has a row at all: a
        file seen before counts as changed, not new)."""
        return self.lookup_fields(path, node.size, node.mtime_ns, node.ctime_ns, node.inode)

    def lookup_stat(self, path: bytes, st: os.stat_result) -> tuple[CachedFile | None, bool]:
        """``lookup`` by the file's ``lstat``."""
        return self.lookup_fields(path, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    def lookup_fields(
        self, path: bytes, size: int, mtime_ns: int, ctime_ns: int, inode: int
    ) -> tuple[CachedFile | None, bool]:
        if self._no_files:
            return None, False
        _, name = self._load(path)
        row = self._rows.get(name)
        if row is None:
            return None, False
        _, rsize, mtime, ctime, rinode, content, chash = row
        if rsize != size or mtime != mtime_ns or ctime != ctime_ns or rinode != inode:
            return None, True
        ids = [content[i : i + 32] for i in range(0, len(content), 32)]
        return CachedFile(ids, chash), True

    def store(self, directory: bytes, name: bytes, node: Node, read_started_ns: int) -> None:
        """The row of file ``name`` in ``directory`` (the walker's path of it)."""
        self.store_fields(
            directory, name, node.size, node.mtime_ns, node.ctime_ns, node.inode,
            node.content, node.content_hash, read_started_ns,
        )  # fmt: skip

    def store_fields(
        self,
        directory: bytes,
        name: bytes,
        size: int,
        mtime_ns: int,
        ctime_ns: int,
        inode: int,
        content: list[bytes],
        content_hash: bytes | None,
        read_started_ns: int,
    ) -> None:
        if self._db is None:
            return
        margin = racy_margin_ns(ctime_ns, mtime_ns)
        # A racy entry is kept as "seen" (for the changed/new counts) with a size of -1,
        # which no file matches, so the next backup reads the file again.
        racy = ctime_ns >= read_started_ns - margin or content_hash is None
        self._pending.append(
            (
                directory,
                name,
                -1 if racy else size,
                mtime_ns,
                ctime_ns,
                inode,
                b"".join(content),
                content_hash or b"",
            )
        )
        if len(self._pending) >= _FLUSH_EVERY:
            self.flush()

    # ---- directories ----------------------------------------------------------------------

    def start_dirs(self, present: Collection[bytes], indexed: Mapping[bytes, int]) -> bool:
        """Begin this backup's generation of directory rows, given the packs in storage and
        the index's entries per pack (``Index.blob_counts``); whether directory rows can be
        used (False once the cache failed)."""
        if self._db is None:
            return False
        try:
            with self._transaction() as db:
                known = dict(db.execute("SELECT id, blobs FROM pack_blobs").fetchall())
                legacy = db.execute("SELECT 1 FROM packs LIMIT 1").fetchone() is not None
                if legacy or any(
                    p not in present or indexed.get(p, 0) != n for p, n in known.items()
                ):
                    log.info(
                        "packs have left storage or the index since the last backup: "
                        "directories rebuilt"
                    )
                    for table in ("dirs", "dir_entries", "packs", "pack_blobs"):
                        db.execute(f"DELETE FROM {table}")
                    known = {}
                    self._no_dirs = True
                cur = db.execute("INSERT INTO gens (committed) VALUES (0)")
        except sqlite3.Error as e:
            self._disable(e)
            return False
        self._packs, self._gen = set(known), cur.lastrowid
        return True

    @property
    def known_packs(self) -> frozenset[bytes]:
        """The packs seen by earlier committed backups: directory rows reference only these."""
        return frozenset(self._packs)

    def lookup_dir(self, path: bytes) -> DirRow | None:
        if self._db is None or self._gen is None or self._no_dirs:
            return None
        try:
            row = self._db.execute(
                "SELECT d.sig, d.sub_sig, d.tree FROM dirs d"
                " JOIN gens g ON g.gen = d.gen WHERE d.dir = ? AND g.committed = 1",
                (path,),
            ).fetchone()
        except sqlite3.Error as e:
            self._disable(e)
            return None
        return DirRow(*row) if row is not None else None

    def dir_entries(self, path: bytes) -> bytes | None:
        """The entry records of a directory's row (read only when it changed: an unchanged
        directory needs none of them)."""
        if self._db is None or self._gen is None or self._no_dirs:
            return None
        try:
            row = self._db.execute(
                "SELECT e.entries FROM dir_entries e JOIN gens g ON g.gen = e.gen"
                " WHERE e.dir = ? AND g.committed = 1",
                (path,),
            ).fetchone()
        except sqlite3.Error as e:
            self._disable(e)
            return None
        return row[0] if row is not None else None

    def store_dir(self, path: bytes, row: DirRow) -> None:
        if self._db is None or self._gen is None:
            return
        self._dirs_pending.append((path, row.sig, row.sub_sig, row.tree, self._gen))
        self._entries_pending.append((path, self._gen, row.entries))
        self._dirs_bytes += len(row.entries or b"")
        if len(self._dirs_pending) >= _FLUSH_EVERY or self._dirs_bytes >= _FLUSH_BYTES:
            self.flush()

    # ---- writing --------------------------------------------------------------------------

    def flush(self, packs: Mapping[bytes, int] | None = None, commit_gen: bool = False) -> None:
        """Write the rows stored so far in one short transaction; with ``commit_gen``, also
        the packs the committed backup relied on (with their index entries) and that its
        directory rows are valid."""
        if self._db is None:
            return
        rows, self._pending = self._pending, []
        dirs, self._dirs_pending, self._dirs_bytes = self._dirs_pending, [], 0
        entries, self._entries_pending = self._entries_pending, []
        new_packs = [(p, n) for p, n in (packs or {}).items() if p not in self._packs]
        if not (rows or dirs or new_packs or commit_gen):
            return
        try:
            with self._transaction() as db:
                db.executemany("INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?)", rows)
                db.executemany("INSERT OR REPLACE INTO dirs VALUES (?,?,?,?,?)", dirs)
                db.executemany("INSERT OR REPLACE INTO dir_entries VALUES (?,?,?)", entries)
                if commit_gen and self._gen is not None:
                    db.executemany("INSERT OR IGNORE INTO pack_blobs VALUES (?,?)", new_packs)
                    db.execute("UPDATE gens SET committed = 1 WHERE gen = ?", (self._gen,))
        except sqlite3.Error as e:
            self._disable(e)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction (``sqlite3.Error`` is the caller's to handle)."""
        assert self._db is not None
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def close(self, commit: bool, packs: Mapping[bytes, int] | None = None) -> None:
        """Write what is left and close. File rows of an aborted backup are safe to keep: a
        hit also needs every blob of the file in the index. Its directory rows stay unused:
        its generation is never committed. ``packs``: every pack in storage at the start
        and every pack this backup uploaded, with the index's entries for each."""
        if self._db is None:
            return
        if commit:
            self.flush(packs, commit_gen=True)
        self._db.close()
        self._db = None
