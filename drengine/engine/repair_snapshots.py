"""``repair snapshots``: rewrite snapshots that reference lost data, saving what is left.

After data was lost (a pack gone or damaged, found by ``check``; ``repair index`` first, so
the index says what exists), every snapshot whose trees reference blobs that are no longer
indexed is rewritten, restic's way:

- a file that lost content keeps the blobs that remain, in order; its size and content hash
  are recomputed from them (each remaining blob is read and verified), and it is marked
  ``damaged`` with what was lost, so restore says so instead of failing verification;
- a directory whose tree cannot be read becomes empty, marked ``damaged``;
- an entry with invalid metadata keeps the defaults its reader chose, marked ``damaged``.

A repaired snapshot keeps the original's time, host, paths and tags, adds the tag
``repaired``, and names the original in ``original``. With ``forget`` the originals are
removed afterwards, and so are snapshot objects that cannot be read at all (they cannot be
repaired). Unchanged subtrees keep their IDs, so a repair writes only what changed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import blake3

from drengine.core.errors import DrengineError
from drengine.core.model import Node, Snapshot, encode_tree
from drengine.engine.tree_paths import subtrees_first
from drengine.pipeline.saver import BlobSaver
from drengine.repository import layout
from drengine.repository.layout import BlobType
from drengine.repository.locks import locked
from drengine.repository.repo import Repository

REPAIRED_TAG = "repaired"


@dataclass
class RepairSnapshotsResult:
    dry_run: bool
    checked: int = 0
    repaired: list[tuple[str, str]] = field(default_factory=list)  # (original, new ID)
    forgotten: list[str] = field(default_factory=list)
    unrepairable: list[str] = field(default_factory=list)  # objects that cannot be read
    damaged_entries: list[str] = field(default_factory=list)  # "snapshot: path: what"


class _Rewriter:
    """Rewrites trees bottom-up, memoized per tree ID (shared subtrees once). Without a
    saver (a dry run) new tree IDs are computed but nothing is written."""

    def __init__(self, repo: Repository, saver: BlobSaver | None, when: str) -> None:
        self.repo, self.saver, self.when = repo, saver, when
        self.done: dict[bytes, tuple[bytes, list[str]]] = {}  # old tree -> (new, damage)
        self.unreadable: set[bytes] = set()

    def rewrite(self, root: bytes) -> tuple[bytes, list[str]]:
        """(new root ID, "path: what" for every damaged entry below it)."""
        for tree_id, nodes in subtrees_first(root, self._load, self.done):
            self.done[tree_id] = self._tree(tree_id, nodes)
        return self.done[root]

    def _load(self, tree_id: bytes) -> list[Node]:
        try:
            return self.repo.load_tree(tree_id)
        except DrengineError:
            self.unreadable.add(tree_id)  # its parent marks the directory
            return []

    def _tree(self, tree_id: bytes, nodes: list[Node]) -> tuple[bytes, list[str]]:
        damage: list[str] = []
        changed = False
        for node in nodes:
            name = node.name.decode("utf-8", "replace")
            what = []
            if node.invalid:
                what.append(f"invalid metadata reset ({node.invalid})")
            if node.type == "dir":
                if node.subtree is None or node.subtree in self.unreadable:
                    what.append("its contents are lost (the directory's tree cannot be read)")
                    node.subtree = self._save_tree([])
                else:
                    new, below = self.done[node.subtree]
                    damage += [f"{name}/{d}" for d in below]
                    if new != node.subtree:
                        node.subtree, changed = new, True
            elif node.type == "file":
                lost = self._repair_content(node)
                if lost:
                    what.append(lost)
            if what:
                node.damaged = f"{'; '.join(what)} (repaired {self.when})"
                damage.append(f"{name}: {'; '.join(what)}")
                changed = True
        return (self._save_tree(nodes) if changed else tree_id), damage

    def _save_tree(self, nodes: list[Node]) -> bytes:
        data = encode_tree(nodes)
        if self.saver is None:
            return self.repo.blob_id(data, BlobType.TREE)
        return self.saver.save_blob(BlobType.TREE, data)

    def _repair_content(self, node: Node) -> str:
        present = [b for b in node.content if self.repo.index.lookup(b) is not None]
        if len(present) == len(node.content) and not node.invalid:
            return ""
        kept, hasher, size = [], blake3.blake3(), 0
        for bid in present:  # verified reads: a blob that does not read counts as lost
            try:
                data = self.repo.read_blob(bid)
            except DrengineError:
                continue
            kept.append(bid)
            hasher.update(data)
            size += len(data)
        lost = len(node.content) - len(kept)
        node.content, node.content_hash, node.size = kept, hasher.digest(), size
        if not lost:
            return ""
        return f"lost {lost} of {lost + len(kept)} content blobs; {size} bytes remain"


def run_repair_snapshots(
    repo: Repository,
    snapshot_ids: list[str] | None = None,
    forget: bool = False,
    dry_run: bool = False,
    say: Callable[[str], None] = lambda _m: None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> RepairSnapshotsResult:
    res = RepairSnapshotsResult(dry_run)
    with locked(repo, exclusive=True, operation="repair snapshots") as lock:
        repo.load_index(present=repo.list_packs())
        wanted = set(snapshot_ids) if snapshot_ids else None
        snaps = [s for s in repo.snapshots() if wanted is None or s.id in wanted]
        if wanted is None:
            res.unrepairable = sorted(
                n[len(layout.SNAPSHOTS) :] for n in repo.damaged if n.startswith(layout.SNAPSHOTS)
            )
        saver = None if dry_run else BlobSaver(repo)
        rewriter = _Rewriter(repo, saver, now().strftime("%Y-%m-%d"))
        todo: list[tuple[Snapshot, bytes]] = []
        try:
            for snap in snaps:
                res.checked += 1
                say(f"checking snapshot {snap.id[:8]}")
                root, damage = rewriter.rewrite(snap.tree)
                if snap.tree in rewriter.unreadable:  # nothing of it can be saved
                    res.unrepairable.append(snap.id)
                    continue
                res.damaged_entries += [f"{snap.id[:8]}: /{d}" for d in damage]
                if root != snap.tree:
                    todo.append((snap, root))
            if saver is not None:
                saver.close()
        except BaseException:
            if saver is not None:
                saver.abort()
            raise
        if dry_run:
            res.repaired = [(s.id, "") for s, _ in todo]
            res.forgotten = [s.id for s, _ in todo] + res.unrepairable if forget else []
            return res
        assert saver is not None
        lock.prove()
        saver.prove_references()
        for snap, root in todo:
            lock.check_valid()
            new = _repaired(snap, root)
            res.repaired.append((snap.id, repo.save_snapshot(new)))
        if forget:
            for oid in [s.id for s, _ in todo] + res.unrepairable:
                lock.check_valid()
                repo.delete_snapshot(oid)
                res.forgotten.append(oid)
    return res


def _repaired(snap: Snapshot, root: bytes) -> Snapshot:
    return Snapshot(
        time=snap.time,
        host=snap.host,
        username=snap.username,
        paths=snap.paths,
        tags=sorted({*snap.tags, REPAIRED_TAG}),
        tree=root,
        program_version=snap.program_version,
        source=snap.source,
        parent=snap.parent,
        original=snap.id,
        summary=snap.summary,
    )
