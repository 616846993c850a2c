"""What a tree holds, for comparing a restore with its source: files, symlinks, directories.

A restore is correct when its manifest equals the source's: every regular file with the same
size and SHA-256, every symlink with the same target string (real trees have thousands, many
dangling or absolute, so they are compared, never followed), every directory (empty ones
included). Owners, modes and times are not compared.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

FILE, SYMLINK, DIRECTORY, OTHER = "file", "symlink", "dir", "other"


class Entry(NamedTuple):
    kind: str  # FILE, SYMLINK, DIRECTORY or OTHER (socket, fifo, device)
    size: int  # bytes of a file, length of a symlink's target, else 0
    digest: str  # SHA-256 hex of a file, target of a symlink, else ""


# relative path -> entry; the root itself is not in it
Manifest = dict[str, Entry]


def _hash_file(path: str) -> Entry:
    with open(path, "rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
        return Entry(FILE, os.fstat(f.fileno()).st_size, digest)


def build_manifest(root: Path) -> Manifest:
    """The manifest of ``root``; files are hashed on a thread pool. Symlinks are not followed."""
    entries: Manifest = {}
    files: list[str] = []
    stack = [str(root)]
    while stack:
        with os.scandir(stack.pop()) as it:
            for e in it:
                rel = os.path.relpath(e.path, root)
                if e.is_symlink():
                    target = os.readlink(e.path)
                    entries[rel] = Entry(SYMLINK, len(target), target)
                elif e.is_dir(follow_symlinks=False):
                    entries[rel] = Entry(DIRECTORY, 0, "")
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    files.append(e.path)
                else:
                    entries[rel] = Entry(OTHER, 0, "")
    files.sort()
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) * 2)) as pool:
        hashed = list(pool.map(_hash_file, files, chunksize=64))
    entries.update((os.path.relpath(p, root), h) for p, h in zip(files, hashed, strict=True))
    return dict(sorted(entries.items()))


def counts(manifest: Manifest) -> dict[str, int]:
    """Number of entries of each kind (files, symlinks, dirs, other)."""
    out = {FILE: 0, SYMLINK: 0, DIRECTORY: 0, OTHER: 0}
    for entry in manifest.values():
        out[entry.kind] += 1
    return out


def describe(manifest: Manifest) -> str:
    c = counts(manifest)
    return f"{c[FILE]} files, {c[SYMLINK]} symlinks, {c[DIRECTORY]} dirs"


def largest_file(manifest: Manifest) -> tuple[str, Entry]:
    """The largest regular file (the first by path among equals)."""
    files = [(rel, e) for rel, e in manifest.items() if e.kind == FILE]
    if not files:
        raise ValueError("the tree has no regular file")
    return min(files, key=lambda item: (-item[1].size, item[0]))


def compare_manifests(expected: Manifest, actual: Manifest) -> list[str]:
    """Human-readable differences, empty if the two trees are identical."""
    problems: list[str] = []
    for rel in sorted(expected.keys() - actual.keys()):
        problems.append(f"missing {expected[rel].kind}: {rel}")
    for rel in sorted(actual.keys() - expected.keys()):
        problems.append(f"unexpected {actual[rel].kind}: {rel}")
    for rel in sorted(expected.keys() & actual.keys()):
        e, a = expected[rel], actual[rel]
        if e.kind != a.kind:
            problems.append(f"kind differs: {rel}: expected {e.kind}, got {a.kind}")
        elif e.kind == SYMLINK and e.digest != a.digest:
            problems.append(
                f"symlink target differs: {rel}: expected {e.digest!r}, got {a.digest!r}"
            )
        elif e.size != a.size:
            problems.append(f"size differs: {rel}: expected {e.size}, got {a.size}")
        elif e.digest != a.digest:
            problems.append(f"content differs: {rel}")
    return problems
