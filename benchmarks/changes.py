"""The ``re-backup 1%`` change: modify 1 % of a tree's regular files, and undo it later.

Every tool must back up the same state, so the change is made once per repetition, before any
tool runs. Each picked file gets a few bytes rewritten in place and a few appended (its size
changes), and its mtime set to now + rep seconds, so that no mtime/size-based files cache can
miss it. The picks come from an RNG seeded with (seed, tree, rep): the same in every run,
different in every repetition.

The trees are cached between runs (the synthetic dataset, the copies of /usr), and a changed
tree would make the next run incomparable. So every change is first written to a journal
beside the tree (old size, the overwritten bytes, old atime and mtime) and fsynced; ``undo``
replays it backwards. The runner undoes at the end of each tree's benchmark, and at the start
of the next run in case one was interrupted; if undoing fails, the caller rebuilds the tree.
"""

from __future__ import annotations

import json
import os
import random
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

FRACTION = 0.01  # of the regular files, at least one
REWRITE_MAX = 64  # bytes overwritten in place
APPEND = 16  # bytes appended


@dataclass(frozen=True)
class Change:
    path: str  # relative to the tree's root
    size: int  # before the change
    offset: int  # of the overwritten bytes
    old: str  # hex of the bytes that were there
    atime_ns: int
    mtime_ns: int


def journal_path(root: Path) -> Path:
    return root.with_name(root.name + ".changes.jsonl")


def _open_for_write(path: Path) -> int:
    """A read-write descriptor of ``path`` (never following a symlink), made writable first
    if its mode forbids it (the copies keep the modes of /usr; root ignores them anyway)."""
    flags = os.O_RDWR | os.O_NOFOLLOW
    try:
        return os.open(path, flags)
    except PermissionError:
        mode = os.lstat(path).st_mode
        os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR)
        try:
            return os.open(path, flags)
        finally:
            os.chmod(path, stat.S_IMODE(mode))


def change_files(root: Path, files: list[str], workdir: Path, seed: str, rep: int) -> int:
    """Change ``FRACTION`` of ``files`` (paths relative to ``root``) for repetition ``rep``.

    ``root`` must lie inside ``workdir``: the benchmark changes its own copies, never /usr.
    Returns the number of files changed.
    """
    root = root.resolve()
    if not root.is_relative_to(workdir.resolve()):
        raise RuntimeError(f"refusing to change {root}: it is not inside {workdir}")
    rng = random.Random(f"{seed}/{rep}")
    picked = rng.sample(sorted(files), max(1, round(len(files) * FRACTION)))
    plan: list[tuple[Change, bytes]] = []
    for rel in picked:
        path = root / rel
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            continue
        offset = rng.randrange(st.st_size) if st.st_size else 0
        length = min(REWRITE_MAX, st.st_size - offset)
        with path.open("rb") as f:
            f.seek(offset)
            old = f.read(length)
        change = Change(rel, st.st_size, offset, old.hex(), st.st_atime_ns, st.st_mtime_ns)
        plan.append((change, rng.randbytes(length)))
    journal = journal_path(root)
    with journal.open("a") as j:  # written (and on disk) before any file is touched
        j.writelines(json.dumps(asdict(c)) + "\n" for c, _ in plan)
        j.flush()
        os.fsync(j.fileno())
    mtime_ns = time.time_ns() + rep * 1_000_000_000
    for change, new in plan:
        path = root / change.path
        fd = _open_for_write(path)
        try:
            os.pwrite(fd, new, change.offset)
            os.pwrite(fd, rng.randbytes(APPEND), change.size)
        finally:
            os.close(fd)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return len(plan)


def undo(root: Path) -> bool:
    """Undo every journaled change of ``root``, newest first. True if the tree is as before
    (or was never changed), False if a change could not be undone (rebuild the tree then)."""
    journal = journal_path(root)
    if not journal.exists():
        return True
    try:
        lines = journal.read_text().splitlines()
        changes = [Change(**json.loads(line)) for line in lines if line.strip()]
        for c in reversed(changes):
            path = root / c.path
            fd = _open_for_write(path)
            try:
                os.ftruncate(fd, c.size)
                os.pwrite(fd, bytes.fromhex(c.old), c.offset)
            finally:
                os.close(fd)
            os.utime(path, ns=(c.atime_ns, c.mtime_ns))
    except (OSError, ValueError, TypeError) as exc:
        print(f"could not undo the changes of {root} ({exc}): it will be rebuilt", flush=True)
        return False
    journal.unlink()
    return True
