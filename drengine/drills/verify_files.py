"""Prove a restored tree is the snapshot: every file read back from the sandbox's disk and
its BLAKE3 hash and size compared with those recorded at backup, every directory and
symlink where the snapshot has it, and the counts against the snapshot's summary.

The restore already verified each file's bytes as it wrote them; this reads them again
from the file system, so it also catches what the write path or the disk got wrong, and
what is missing. What failed is grouped by the damaged repository object (pack or blob)
named in the errors, so a reviewer sees "pack 3fa2… is damaged: 12 files affected".
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import blake3

from drengine.core.model import Node, Snapshot
from drengine.core.phases import Phases
from drengine.engine.tree_paths import TreeCache, walk_tree
from drengine.repository.repo import Repository

_READ = 1 << 20
_OBJECT = re.compile(r"\b(pack|blob|tree|index) ([0-9a-f]{64})\b")


@dataclass
class TreeCheck:
    files: int = 0  # regular files, a hard-linked inode counted once (as old summaries did)
    names: int = 0  # regular file names, hard links included (as the summary counts)
    bytes: int = 0  # sizes of all file names (as the summary's bytes_total)
    dirs: int = 0
    symlinks: int = 0
    verified: int = 0  # files whose content read back from disk matched
    problems: list[dict[str, str]] = field(default_factory=list)  # {"path", "problem"}


def _under(path: bytes, roots: list[bytes]) -> bool:
    return not roots or any(path == r or path.startswith(r + b"/") for r in roots)


def verify_restored(
    repo: Repository,
    snap: Snapshot,
    root: Path,
    roots: list[str],
    skip: set[str],
    phases: Phases,
) -> TreeCheck:
    """Compare what is under ``root`` with the snapshot's entries below ``roots`` (all when
    empty), leaving out the stream entries in ``skip`` (verified by their own checks)."""
    res = TreeCheck()
    want = [os.fsencode(r.rstrip("/")) for r in roots]
    skipped = {os.fsencode(s) for s in skip}
    base = os.fsencode(root)
    trees = TreeCache(repo, read_runs=True)
    files: list[tuple[bytes, Node]] = []
    seen_inodes: set[tuple[int, int]] = set()

    def lost(path: bytes, why: str) -> None:
        res.problems.append({"path": os.fsdecode(path), "problem": f"contents lost: {why}"})

    with phases.span("verify"):
        for path, node in walk_tree(trees, snap.tree, b"", lost):
            inside = _under(path, want)
            if not inside or path in skipped:
                continue
            if node.type == "file":
                res.names += 1
                res.bytes += node.size
                if node.links > 1:
                    key = (node.device, node.inode)
                    if key in seen_inodes:
                        files.append((path, node))
                        continue
                    seen_inodes.add(key)
                res.files += 1
                files.append((path, node))
            elif node.type == "dir":
                res.dirs += 1
                if not os.path.isdir(base + path) or os.path.islink(base + path):
                    res.problems.append({"path": os.fsdecode(path), "problem": "directory missing"})
            elif node.type == "symlink":
                res.symlinks += 1
                _check_link(base + path, node, path, res)
        with ThreadPoolExecutor(2, thread_name_prefix="verify") as pool:
            for path, problem in zip(
                (p for p, _ in files),
                pool.map(lambda pn: _check_file(base + pn[0], pn[1]), files),
                strict=True,
            ):
                if problem:
                    res.problems.append({"path": os.fsdecode(path), "problem": problem})
                else:
                    res.verified += 1
    return res


def _check_link(where: bytes, node: Node, path: bytes, res: TreeCheck) -> None:
    try:
        if os.readlink(where) != node.target:
            res.problems.append({"path": os.fsdecode(path), "problem": "symlink target differs"})
    except OSError:
        res.problems.append({"path": os.fsdecode(path), "problem": "symlink missing"})


def _check_file(where: bytes, node: Node) -> str:
    """ "" when the file on disk is the snapshot's, else what is wrong."""
    if node.damaged:
        return f"recorded as damaged in the snapshot ({node.damaged})"
    try:
        fd = os.open(where, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        return "missing" if isinstance(e, FileNotFoundError) else f"cannot open: {e.strerror}"
    try:
        h = blake3.blake3()
        buf = bytearray(_READ)
        view = memoryview(buf)
        size = 0
        while n := os.readv(fd, [view]):
            h.update(view[:n])
            size += n
    except OSError as e:
        return f"cannot read: {e.strerror}"
    finally:
        os.close(fd)
    if size != node.size:
        return f"holds {size} bytes, the snapshot {node.size}"
    if h.digest() != node.content_hash:
        return "content differs from the snapshot (BLAKE3 mismatch)"
    return ""


def damaged_objects(problems: list[dict[str, str]]) -> dict[str, list[str]]:
    """Repository objects named in problems ("pack 3fa2…") -> the paths they affect."""
    by_object: dict[str, list[str]] = defaultdict(list)
    for p in problems:
        found = dict(_OBJECT.findall(p.get("problem", "") or p.get("error", "")))
        for kind in ("pack", "index", "tree", "blob"):  # the stored object first
            if kind in found:
                by_object[f"{kind} {found[kind]}"].append(p["path"])
                break
    return dict(by_object)
