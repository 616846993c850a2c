"""Restore a snapshot (or parts of it) into a directory.

Order matters for safety and for metadata: directories first (each checked to be a real
directory, never a symlink), then files (written under a temporary name, verified against
the whole-file content hash, then renamed), then hard links, then symlinks and special files,
and last the directories' own metadata, deepest first. No restored symlink exists while
anything is written, so nothing can be written through one. A name that is empty, ``.``,
``..`` or contains ``/`` or NUL is refused.
"""

from __future__ import annotations

import itertools
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from drengine.core.errors import DrengineError, IntegrityError, RestoreError
from drengine.core.model import Node, Snapshot
from drengine.engine.blobstream import blob_stream
from drengine.engine.progress import Progress
from drengine.engine.restore_batches import Batch, pack_batches
from drengine.engine.tree_paths import find_node, split_path
from drengine.repository.locks import locked
from drengine.repository.repo import Repository
from drengine.sources.files import apply_metadata, apply_metadata_fd, make_special

_FILE_WORKERS = 2
_FETCH_WORKERS = 4


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    errors: list[dict[str, str]] = field(default_factory=list)


def _bad_name(name: bytes) -> bool:
    return name in (b"", b".", b"..") or b"/" in name or b"\0" in name


def _is_zero(data: bytes) -> bool:
    return not data or (data[0] == 0 and data == bytes(len(data)))


class _Plan:
    """What to create, in the order it must be created."""

    def __init__(self) -> None:
        self.dirs: list[tuple[bytes, Node | None]] = []
        self.files: list[tuple[bytes, Node]] = []
        self.links: list[tuple[bytes, bytes]] = []  # (new name, existing restored file)
        self.specials: list[tuple[bytes, Node]] = []
        self.first_link: dict[tuple[int, int], bytes] = {}


class Restorer:
    def __init__(
        self, repo: Repository, target: str, includes: list[str], progress: Progress
    ) -> None:
        self.repo = repo
        self.target = os.path.abspath(os.fsencode(target))
        self.includes = [split_path(p) for p in includes]
        self.progress = progress
        self.result = RestoreResult()
        self.is_root = os.geteuid() == 0
        self._tmp_counter = itertools.count()

    def error(self, path: bytes, msg: str) -> None:
        self.result.errors.append({"path": os.fsdecode(path), "error": msg})

    # ---- planning -------------------------------------------------------------------------

    def wanted(self, parts: list[bytes]) -> tuple[bool, bool]:
        """(restore this entry, descend into it) for a path given as components."""
        if not self.includes:
            return True, True
        for inc in self.includes:
            if parts[: len(inc)] == inc:
                return True, True
            if inc[: len(parts)] == parts:
                return True, True  # an ancestor of an included path
        return False, False

    def plan(self, tree: bytes, parts: list[bytes], plan: _Plan) -> None:
        seen: set[bytes] = set()
        for node in self.repo.load_tree(tree):
            rel = b"/".join([*parts, node.name])
            if _bad_name(node.name) or node.name in seen:
                self.error(rel, "refused: the name would escape the target or is a duplicate")
                continue
            seen.add(node.name)
            take, descend = self.wanted([*parts, node.name])
            if not take:
                continue
            dest = self.target + b"/" + rel
            included_fully = not self.includes or any(
                [*parts, node.name][: len(i)] == i for i in self.includes
            )
            if node.type == "dir":
                plan.dirs.append((dest, node))
                if descend and node.subtree is not None:
                    self.plan(node.subtree, [*parts, node.name], plan)
            elif not included_fully:
                continue
            elif node.type == "file":
                key = (node.device, node.inode)
                if node.links > 1 and key in plan.first_link:
                    plan.links.append((dest, plan.first_link[key]))
                else:
                    if node.links > 1:
                        plan.first_link[key] = dest
                    plan.files.append((dest, node))
            else:
                plan.specials.append((dest, node))

    # ---- doing ----------------------------------------------------------------------------

    def make_dir(self, path: bytes) -> bool:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                self.error(path, "refused: exists in the target and is not a directory")
                return False
        except OSError as e:
            self.error(path, f"cannot create directory: {e.strerror}")
            return False
        return True

    def restore_batch(self, batch: Batch) -> None:
        """One ranged read of a pack, then every one-blob file whose blob lies in it."""
        try:
            buf = self.repo.read_pack(batch.pack_id, batch.start, batch.end - batch.start)
        except DrengineError as e:
            for dest, _node, _entry in batch.items:
                self.error(dest, str(e))
            return
        view = memoryview(buf)
        for dest, node, entry in batch.items:
            rel = entry.offset - batch.start
            try:
                data = self.repo.open_blob(node.content[0], entry, view[rel : rel + entry.length])
            except DrengineError as e:
                self.error(dest, str(e))
                continue
            self.restore_file(dest, node, None, data)

    def restore_file(
        self,
        dest: bytes,
        node: Node,
        fetch: ThreadPoolExecutor | None,
        data: bytes | None = None,
    ) -> None:
        """Write one file; ``data`` is its content when the caller already read it."""
        parent = os.path.dirname(dest)
        tmp = parent + b"/.drengine-%d-%d.tmp" % (os.getpid(), next(self._tmp_counter))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            self.error(dest, f"cannot create file: {e.strerror}")
            return
        try:
            try:
                hasher = blake3.blake3()
                pos = 0

                def write(offset: int, data: bytes) -> None:
                    if not (node.sparse and _is_zero(data)):
                        os.pwrite(fd, data, offset)

                if data is not None:
                    write(0, data)
                source = (
                    [data]
                    if data is not None
                    else blob_stream(self.repo, node.content, fetch, write)
                )
                for blob in source:
                    hasher.update(blob)
                    pos += len(blob)
                    self.progress.add_bytes(len(blob))
                if pos != node.size or hasher.digest() != node.content_hash:
                    raise IntegrityError(
                        f"restored content of {os.fsdecode(dest)} does not match the snapshot"
                    )
                if node.sparse:
                    os.ftruncate(fd, pos)  # a hole at the end was never written
                apply_metadata_fd(fd, node, is_root=self.is_root)
            finally:
                os.close(fd)
            os.replace(tmp, dest)
        except (DrengineError, OSError) as e:
            os.unlink(tmp)
            msg = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.error(dest, msg or type(e).__name__)
            return
        self.result.files += 1
        self.result.bytes += pos
        self.progress.file_done(os.fsdecode(dest))

    def run(self, snap: Snapshot) -> RestoreResult:
        plan = _Plan()
        self.plan(snap.tree, [], plan)
        self.progress.files_total = len(plan.files)
        self.progress.bytes_total = sum(n.size for _, n in plan.files)
        self.progress.total_known = True
        try:
            os.makedirs(self.target, exist_ok=True)
        except OSError as e:
            raise RestoreError(
                f"cannot use {os.fsdecode(self.target)} as the restore target: {e.strerror or e}"
            ) from None
        created = {d for d, _ in plan.dirs if self.make_dir(d)}
        writable = created | {self.target}
        files = [(d, n) for d, n in plan.files if os.path.dirname(d) in writable]
        # Files of one blob are restored in batches: one ranged read of a pack serves many
        # (and the files of one directory mostly share a pack). Larger files stream their
        # blobs with prefetch and parallel writes.
        empty = [(d, n) for d, n in files if not n.content]
        single = [(d, n) for d, n in files if len(n.content) == 1]
        large = [(d, n) for d, n in files if len(n.content) > 1]
        with (
            ThreadPoolExecutor(_FETCH_WORKERS, thread_name_prefix="fetch") as fetch,
            ThreadPoolExecutor(_FILE_WORKERS, thread_name_prefix="write") as writers,
        ):
            tasks = [writers.submit(self.restore_batch, b) for b in pack_batches(self.repo, single)]
            tasks += [writers.submit(self.restore_file, d, n, fetch) for d, n in large]
            for d, n in empty:
                self.restore_file(d, n, None)
            for t in tasks:
                t.result()
        for dest, src in plan.links:
            try:
                if os.path.lexists(dest):
                    os.unlink(dest)
                os.link(src, dest)
            except OSError as e:
                self.error(dest, f"cannot create hard link: {e.strerror}")
        for dest, node in plan.specials:
            try:
                if os.path.lexists(dest):
                    os.unlink(dest)
                make_special(dest, node)
                apply_metadata(dest, node, is_root=self.is_root)
            except OSError as e:
                self.error(dest, f"cannot create {node.type}: {e.strerror}")
        for dest, dnode in reversed(plan.dirs):
            if dnode is not None and dest in created:
                try:
                    apply_metadata(dest, dnode, is_root=self.is_root)
                    self.result.dirs += 1
                except OSError as e:
                    self.error(dest, f"cannot set metadata: {e.strerror}")
        return self.result


def run_restore(
    repo: Repository,
    snap: Snapshot,
    target: str,
    includes: list[str] | None = None,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore all it can; entries that failed are listed in ``errors``, never left wrong."""
    for path in includes or []:
        find_node(repo, snap, path)  # a typo must not look like a successful empty restore
    with locked(repo, exclusive=False, operation="restore"):  # prune must not run meanwhile
        return Restorer(repo, target, includes or [], progress or Progress()).run(snap)
