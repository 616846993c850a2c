"""Copy snapshots into another repository, re-encrypted with its keys.

The destination has its own ID key and chunker seed, so blob IDs differ between the two.
Blobs are copied as they were cut in the source (not re-chunked): each is read and verified
from the source, re-identified with the destination's key, and stored unless the destination
already has it. Copies of the same data therefore deduplicate in the destination, and a
snapshot already copied (recorded as ``original``) is skipped.

Reads go as restore's do: trees in runs of their pack (``TreeCache(read_runs=True)``), and
a directory's data blobs through ``blob_stream``, one ranged read per few MiB of
neighbouring blobs with several in flight, instead of a GET per blob from S3.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from drengine.core.model import Snapshot, encode_tree
from drengine.engine.blobstream import blob_stream
from drengine.engine.tree_paths import TreeCache, subtrees_first
from drengine.pipeline.saver import BlobSaver
from drengine.repository.layout import BlobType
from drengine.repository.locks import locked
from drengine.repository.repo import Repository


@dataclass
class CopyResult:
    copied: list[tuple[str, str]] = field(default_factory=list)  # (source ID, new ID)
    skipped: list[str] = field(default_factory=list)  # already in the destination
    blobs_new: int = 0
    bytes_new: int = 0


_FETCH_WORKERS = 4


class _Translator:
    def __init__(self, src: Repository, saver: BlobSaver, pool: ThreadPoolExecutor) -> None:
        self.src, self.saver, self.pool = src, saver, pool
        self.dst = saver.repo
        self.trees: dict[bytes, bytes] = {}
        self.data: dict[bytes, bytes] = {}
        # No decoded trees kept: each is handled once (``subtrees_first``), and its nodes
        # are rewritten in place below.
        self._cache = TreeCache(src, max_nodes=0, read_runs=True, done=self.trees)

    def _copy_data(self, ids: list[bytes]) -> None:
        """Copy the blobs of ``ids`` the destination has not been given yet."""
        todo = list(dict.fromkeys(b for b in ids if b not in self.data))
        # Each authenticated and checked against its ID, as read_blob does.
        for bid, plain in zip(todo, blob_stream(self.src, todo, self.pool), strict=True):
            new = self.dst.blob_id(plain)
            self.saver.save(BlobType.DATA, new, plain)
            self.data[bid] = new

    def tree(self, root: bytes) -> bytes:
        """The destination ID of a source tree, subtrees first."""
        for tree_id, nodes in subtrees_first(root, self._cache.load, self.trees):
            self._copy_data([b for node in nodes for b in node.content])
            for node in nodes:
                node.content = [self.data[b] for b in node.content]
                if node.subtree is not None:  # only directories have one that is walked
                    node.subtree = self.trees.get(node.subtree) if node.type == "dir" else None
            self.trees[tree_id] = self.saver.save_blob(BlobType.TREE, encode_tree(nodes))
        return self.trees[root]


def run_copy(
    src: Repository,
    dst: Repository,
    snapshots: list[Snapshot],
    say: Callable[[str], None] = lambda _m: None,
) -> CopyResult:
    res = CopyResult()
    with locked(src, False, "copy (source)"), locked(dst, False, "copy") as dst_lock:
        src.load_index()
        dst.load_index(present=dst.list_packs())  # never deduplicate against lost packs
        done = {s.original for s in dst.snapshots() if s.original} | set(dst.snapshot_ids())
        todo = [s for s in snapshots if s.id not in done]
        res.skipped = [s.id for s in snapshots if s.id in done]
        saver = BlobSaver(dst)
        try:
            with ThreadPoolExecutor(_FETCH_WORKERS, thread_name_prefix="fetch") as pool:
                translator = _Translator(src, saver, pool)
                roots = []
                for snap in todo:
                    say(f"copying snapshot {snap.id[:8]}")
                    roots.append(translator.tree(snap.tree))
            saver.close()
        except BaseException:
            saver.abort()
            raise
        dst_lock.prove()
        saver.prove_references()
        dst_lock.check_valid()
        for snap, root in zip(todo, roots, strict=True):
            copy = Snapshot(
                time=snap.time,
                host=snap.host,
                username=snap.username,
                paths=snap.paths,
                tags=snap.tags,
                tree=root,
                program_version=snap.program_version,
                source=snap.source,
                summary=snap.summary,
                original=snap.id,
            )
            res.copied.append((snap.id, dst.save_snapshot(copy)))
        res.blobs_new, res.bytes_new = saver.stats.blobs_new, saver.stats.bytes_new
    return res
