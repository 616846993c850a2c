"""The files source: walk file trees into entries (the walk itself is ``files_walk.py``).

Each path given becomes one entry: a walked directory (its tree already stored), a file or
a symlink. A path that lies inside another one given is dropped when walking that one
reaches it. The parents of each path are recorded by the engine as directories, with their
metadata read from this host (``parent_node``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

from drengine.core.errors import DrengineError, UsageError
from drengine.core.model import Node
from drengine.sources.base import BackupContext, Entry, StoredStream
from drengine.sources.excludes import Excluder, ExcludeRules
from drengine.sources.files_cache import FilesCache
from drengine.sources.files_dirsig import context_digest
from drengine.sources.files_meta import node_from_stat
from drengine.sources.files_walk import Child, NoExcludes, Walker

log = logging.getLogger(__name__)


class NothingBackedUp(DrengineError):
    """No input could be read at all: no snapshot is written (exit 1, not 3)."""


class FileSource:
    kind = "files"

    def __init__(
        self,
        paths: list[str],
        exclude: ExcludeRules | None = None,
        one_file_system: bool = False,
    ) -> None:
        self.paths = normalize(paths)
        self._exclude = exclude
        self._one_file_system = one_file_system
        self._walker: Walker | None = None
        self._cache: FilesCache | None = None
        self._ctx: BackupContext | None = None
        self.errors: list[dict[str, str]] = []

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        dir_context = None
        if ctx.cache_dir is not None:
            self._cache = FilesCache.open_or_none(ctx.cache_dir / "files.sqlite")
            indexed = ctx.store.indexed_blob_counts
            if self._cache is not None and self._cache.start_dirs(ctx.present_packs, indexed()):
                dir_context = context_digest(self._exclude, self._one_file_system)
        self._ctx = ctx
        w = self._walker = Walker(
            ctx.store,
            excluder=_excluder(self._exclude),
            one_file_system=self._one_file_system,
            cache=self._cache,
            dir_context=dir_context,
        )
        self.errors = w.errors  # the walk appends to it
        tops: dict[bytes, Child] = {}
        for p in self.paths:
            try:
                st = os.lstat(p)
            except OSError as e:
                w.error(p, e)
                continue
            w.root_dev = st.st_dev
            child = w.walk(p, os.path.basename(p) or b"/")
            if child is not None:
                tops[p] = child
        w.drain(0)
        resolved = {p: n for p, c in tops.items() if (n := w.resolve(c, os.path.dirname(p)))}
        readable = [p for p in resolved if p not in w.unlisted]
        if not readable:
            raise NothingBackedUp(
                "nothing was backed up, no snapshot written"
                + (": " + _first_errors(w.errors) if w.errors else "")
            )
        for p, node in resolved.items():
            yield Entry(p, node, real_parents=True)

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {"kind": self.kind, "paths": [os.fsdecode(p) for p in self.paths]}

    def summary(self) -> dict[str, int]:
        w = self._walker
        if w is None:
            return {}
        files = w.counts["files_new"] + w.counts["files_changed"] + w.counts["files_unmodified"]
        return {
            "files_total": files,
            **{k: v for k, v in w.counts.items() if k != "dirs"},
            "dirs_total": w.counts["dirs"],
            "bytes_total": w.bytes_total,
        }

    def close(self, ok: bool) -> None:
        if self._walker is not None:
            self._walker.shutdown(ok)
        if self._cache is not None:
            packs: dict[bytes, int] = {}
            if ok and self._ctx is not None:  # what the directory rows may reference
                indexed = self._ctx.store.indexed_blob_counts()
                for p in (*self._ctx.present_packs, *self._ctx.store.uploaded_packs):
                    packs[p] = indexed.get(p, 0)
            self._cache.close(commit=ok, packs=packs)
            self._cache = None


def parent_node(path: bytes) -> Node:
    """A parent of a backed-up path: the directory it leads to (symlinks followed)."""
    name = os.path.basename(path)
    try:
        st = os.stat(path)
        node = node_from_stat(name, path, st)
    except OSError:
        return Node(name=name, type="dir", mode=0o755)
    if node.type != "dir":  # it was walked through, so it is one; stay safe regardless
        return Node(name=name, type="dir", mode=0o755)
    node.xattrs = []  # those of a symlink's target would be misleading here
    return node


def normalize(paths: list[str]) -> list[bytes]:
    """Absolute paths; drop any that lies inside another one given, when walking that one
    reaches it (not when the other one is a symlink: walking stores the link only)."""
    if not paths:
        raise UsageError("backup needs at least one path")
    out: list[bytes] = []
    for p in sorted({os.path.abspath(os.fsencode(p)) for p in paths}):
        if any(_walk_reaches(q, p) for q in out):
            continue
        out.append(p)
    return out


def _walk_reaches(top: bytes, path: bytes) -> bool:
    if not (path == top or path.startswith(top.rstrip(b"/") + b"/")):
        return False
    try:
        return not os.path.islink(top)
    except OSError:
        return True


def _excluder(rules: ExcludeRules | None) -> Excluder | NoExcludes:
    if rules is None or rules.empty:
        return NoExcludes()
    return Excluder(rules, warn=log.warning)


def _first_errors(errors: list[dict[str, str]]) -> str:
    return "; ".join(f"{e['path']}: {e['error']}" for e in errors[:5]) + (
        f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
    )
