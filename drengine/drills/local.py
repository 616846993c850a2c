"""Drill what a snapshot restores to the sandbox's disk: files, images, streams, SQLite.

Files are restored with ``restore``'s own code, then read back from the sandbox and
compared with the snapshot (``verify_files``); a restore error is grouped by the damaged
repository object it names. Images, dumps and command output are hashed again with
SHA-256 against the digest recorded at backup. A SQLite dump is rebuilt into a database
file, ``PRAGMA integrity_check`` run and its row counts compared, then the policy's own
SQL checks run on it read-only.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from drengine.core.errors import Cancelled, DrengineError
from drengine.core.model import Snapshot
from drengine.core.phases import Phases
from drengine.core.progress import Progress
from drengine.drills.databases import Check, check, own_checks, result_text, sql_detail
from drengine.drills.verify_files import damaged_objects, verify_restored
from drengine.engine.restore import Restorer
from drengine.policy.model import Drill
from drengine.repository.repo import Repository
from drengine.sources.sqlite import rebuild_restored

_READ = 1 << 20


def restore_local(
    repo: Repository,
    snap: Snapshot,
    root: Path,
    paths: list[str],
    phases: Phases,
    cancel: threading.Event | None = None,
) -> tuple[list[Check], int, int]:
    """Restore ``paths`` of the snapshot below ``root`` and check what was written:
    (checks, bytes restored, files restored)."""
    short = _short_of_space(root, snap, paths)
    if short:
        return [check("files", "sandbox space", str(root), False, short)], 0, 0
    whole = set(paths) == set(snap.paths)
    restorer = Restorer(repo, str(root), [] if whole else paths, Progress(), phases, cancel)
    try:
        result = restorer.run(snap)
    except Cancelled:
        raise
    except DrengineError as e:
        return [check("files", "restore", "snapshot", False, str(e))], 0, 0
    prefix = str(root)
    for err in result.errors:  # as the snapshot names them, not as the sandbox does
        err["path"] = err["path"].removeprefix(prefix) or "/"
    checks = _restore_errors(result.errors)
    files_part = next((pt for pt in snap.parts if pt.get("kind") == "files"), None)
    if files_part is not None:
        roots = [str(x) for x in files_part.get("paths", [])] or paths
        tree = verify_restored(repo, snap, root, roots, set(), phases)
        bad = tree.problems
        detail = (
            f"{tree.verified} of {tree.names} files read back from the sandbox match the "
            "BLAKE3 hash and size recorded at backup"
        )
        if bad:
            detail += f"; {len(bad)} problems, first: {bad[0]['path']}: {bad[0]['problem']}"
        checks.append(check("files", "content hashes", "files", not bad, detail))
        absent = tree.names - tree.verified
        checks.append(_counts(snap, (tree.names, tree.files), tree.bytes, tree.dirs, absent))
    return checks, result.bytes, result.files


def _short_of_space(root: Path, snap: Snapshot, paths: list[str]) -> str:
    """Why the sandbox cannot hold what is restored there ("" if it can): said before
    anything is written, rather than as a hundred "no space left" errors."""
    # Images restore sparse: their size says little about the room they take.
    streams = {s["path"]: int(s.get("size", 0)) for s in snap.streams() if s["kind"] != "block"}
    need = sum(streams.get(p, 0) for p in paths)
    if any(pt.get("kind") == "files" for pt in snap.parts):
        need += int(snap.summary.get("bytes_total", 0))
    try:
        st = os.statvfs(root)
    except OSError:
        return ""
    free = st.f_bavail * st.f_frsize
    if need <= free:
        return ""
    return (
        f"the sandbox has {_mib(free)} free and the snapshot restores {_mib(need)} there: not "
        "restored; give the drill more room (drill.sandbox_dir or DRENGINE_DRILL_DIR)"
    )


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


def _restore_errors(errors: list[dict[str, str]]) -> list[Check]:
    """One failed check per damaged object (with the entries it cost), and one per
    other entry that could not be restored."""
    checks = []
    by_object = damaged_objects(errors)
    for obj, affected in by_object.items():
        more = f" and {len(affected) - 10} more" if len(affected) > 10 else ""
        checks.append(
            check("files", "restore", obj, False,
                  f"{obj} is damaged or missing: {len(affected)} entries affected: "
                  + ", ".join(affected[:10]) + more)
        )  # fmt: skip
    named = {a for affected in by_object.values() for a in affected}
    for err in errors:
        if err["path"] not in named:
            checks.append(check("files", "restore", err["path"], False, err["error"]))
    return checks


def _counts(snap: Snapshot, counted: tuple[int, int], size: int, dirs: int, absent: int) -> Check:
    """The snapshot's entries against its summary, and all of them on the sandbox's disk.
    ``counted``: the file names, and the files with a hard-linked inode counted once. A
    summary counts every name (since 675625a; a directory reused from the files cache
    always did); older snapshots counted a walked hard-linked file once: either holds."""
    files, inodes = counted
    want_files = snap.summary.get("files_total")
    want_bytes = snap.summary.get("bytes_total")
    wrong = (
        [f"{absent} of the snapshot's files are not in the sandbox as recorded"] if absent else []
    )
    if isinstance(want_files, int) and want_files not in (files, inodes):
        wrong.append(f"{files} files where the summary says {want_files}")
    if isinstance(want_bytes, int) and want_bytes != size:
        wrong.append(f"{size} bytes where the summary says {want_bytes}")
    detail = "; ".join(wrong) or (
        f"{files} files, {dirs} directories, {size} bytes, as the snapshot's summary says"
    )
    return check("files", "counts and bytes", "files", not wrong, detail)


def restored_streams(snap: Snapshot, root: Path, skip: set[str], phases: Phases) -> list[Check]:
    """Images, dumps and command streams restored as files: SHA-256 against the record."""
    out = []
    for s in snap.streams():
        if s["path"] in skip or not isinstance(s.get("sha256"), str):
            continue
        where = root / s["path"].lstrip("/")
        with phases.span("verify"):
            try:
                digest, size = _sha256(where)
            except OSError as e:
                why = f"not restored: {e.strerror}"
                out.append(check(s["kind"], "SHA-256", s["path"], False, why))
                continue
        ok = digest == s["sha256"] and size == s.get("size", size)
        how = "matches" if ok else "differs from"
        detail = f"{size} bytes, SHA-256 {how} the one recorded at backup"
        out.append(check(s["kind"], "SHA-256", s["path"], ok, detail))
    return out


def _sha256(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    buf = bytearray(_READ)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while n := os.readv(fd, [view]):
            h.update(view[:n])
            size += n
    finally:
        os.close(fd)
    return h.hexdigest(), size


def restored_sqlite(
    part: dict[str, Any], root: Path, drill: Drill | None, kinds: set[str], phases: Phases
) -> list[Check]:
    """Rebuild a restored SQLite dump into its database file and check it."""
    db = str(part.get("database", ""))
    try:
        done = rebuild_restored(part, str(root), phases)
    except DrengineError as e:
        return [check("sqlite", "integrity_check and row counts", db, False, str(e))]
    if done is None:
        return [check("sqlite", "restore", db, False, "the dump was not restored")]
    out = [
        check("sqlite", "integrity_check and row counts", db, True,
              f"integrity_check ok; {done['tables']} tables, {done['rows']} rows, as "
              "recorded at backup"),
        check("sqlite", "schema fingerprint", db, bool(done["schema_matches"]),
              "matches the one recorded at backup" if done["schema_matches"]
              else "differs from the one recorded at backup"),
    ]  # fmt: skip
    for c in own_checks(drill, "sqlite", kinds):
        name = f"SQL: {c.sql}"
        with phases.span("verify"):
            try:
                conn = sqlite3.connect(f"file:{done['database']}?mode=ro", uri=True)
                try:
                    got = result_text([[str(v) for v in r] for r in conn.execute(c.sql)])
                finally:
                    conn.close()
            except sqlite3.Error as e:
                out.append(check("sqlite", name, db, False, str(e)))
                continue
        ok = got == c.expect.strip()
        out.append(check("sqlite", name, db, ok, sql_detail(got, c.expect, ok)))
    return out
