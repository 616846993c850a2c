"""Many hosts writing to one S3 repository at once, with forget --prune among them.

Three "hosts" (``backup --host hostA|hostB|hostC``, each with its own tree and its own
``DRENGINE_CACHE_DIR``) back up into one ``s3://`` repository on the session's SeaweedFS
server, always started at the same moment. Their trees overlap (a shared library, later
shared updates), so they deduplicate against each other. Rounds 0 and 1 give every host two
snapshots. Round 2 starts together with ``forget --keep-last 1 --prune``, and round 3 as soon
as forget has removed snapshots, that is while its prune is about to take, holds, or waits
for the exclusive lock. Everyone uses ``--retry-lock 2m``: prune's exclusive lock and the
backups' shared ones exclude each other, so one side must wait, not fail. Afterwards every
remaining snapshot must restore to exactly the tree it was taken of, ``check --read-data``
must be clean, and (after a last prune) every distinct content must be stored once.

The lock tests pause a backup (SIGSTOP) while it holds its shared lock, to see prune refused
with exit 11 naming the holder (or waiting with ``--retry-lock``), and kill one (SIGKILL) to
leave a stale lock behind for ``drengine unlock``.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_cli import KDF_ARGS, Drengine, describe
from seaweed_server import BUCKET, SeaweedS3

pytestmark = pytest.mark.integration

PASSWORD = "many writers correct horse"
LOCK_WAIT = ("--retry-lock", "2m")
HOSTS = ("hostA", "hostB", "hostC")
KiB = 1024
MiB = 1024 * KiB

# relative path -> (size, sha256 hex)
Manifest = dict[str, tuple[int, str]]


def _drengine(server: SeaweedS3, url: str, cache: Path, cwd: Path) -> Drengine:
    return Drengine(server, url, cache, cwd, PASSWORD)


class Running:
    """A started CLI command; ``finish`` waits for it and checks its exit code."""

    def __init__(self, name: str, args: tuple[str, ...], proc: subprocess.Popen[str]) -> None:
        self.name, self.args, self.proc = name, args, proc
        self.started = time.monotonic()
        self.out = self.err = ""

    def finish(self, code: int = 0, timeout: float = 150) -> str:
        self.out, self.err = self.proc.communicate(timeout=timeout)
        rc = self.proc.returncode
        assert rc == code, f"{self.name}: " + describe(self.args, rc, code, self.out, self.err)
        return self.out


class Processes:
    """Starts CLI commands and kills whatever still runs when the test ends."""

    def __init__(self) -> None:
        self.running: list[Running] = []

    def start(self, run: Drengine, name: str, *args: str) -> Running:
        r = Running(name, args, run.start(*args))
        self.running.append(r)
        return r

    def kill_all(self) -> None:
        for r in self.running:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.communicate()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.kill_all()


def manifest(root: Path) -> Manifest:
    out: Manifest = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            data = (Path(dirpath) / name).read_bytes()
            out[os.path.relpath(os.path.join(dirpath, name), root)] = (
                len(data),
                hashlib.sha256(data).hexdigest(),
            )
    return out


def tree_bytes(m: Manifest) -> int:
    return sum(size for size, _ in m.values())


class Host:
    """One host's tree: content shared by every host, content of its own, changes per round.

    Round 2 and round 3 each bring an 8 MiB "update" identical on every host, which the three
    concurrent backups upload at the same time: each host's copy is indexed, and prune later
    keeps one. Every round adds a file of the host's own and removes the one of two rounds
    before, so the versions of a tree differ in content and in the set of files.
    """

    def __init__(self, name: str, base: Path, shared: dict[str, bytes]) -> None:
        self.name = name
        self.root = base / name / "data"
        self.shared = shared
        self.write("shared/lib.bin", shared["lib"])
        self.write("shared/words.txt", shared["words"])
        self.write("own/unique.bin", os.urandom(MiB))
        self.write("own/notes.txt", f"the notes of {name}\n".encode() * 500)

    def write(self, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def next_round(self, rnd: int) -> Manifest:
        """Change the tree for round ``rnd``; return what it holds now."""
        self.write("state.txt", f"{self.name} at round {rnd}\n".encode() * (rnd + 1))
        self.write(f"rounds/r{rnd}.bin", os.urandom(512 * KiB))
        (self.root / f"rounds/r{rnd - 2}.bin").unlink(missing_ok=True)
        if rnd >= 2:
            self.write(f"shared/update-{rnd}.bin", self.shared[f"update-{rnd}"])
        if rnd == 2:  # the shared library under a second name: deduplicated, not stored
            self.write("copies/lib-copy.bin", self.shared["lib"])
        return manifest(self.root)

    def backup(self, procs: Processes, run: Drengine, rnd: int) -> Running:
        args = (*LOCK_WAIT, "backup", "--host", self.name, "--tag", f"round-{rnd}", "--json")
        return procs.start(run, f"{self.name} round {rnd}", *args, str(self.root))


@pytest.fixture
def client(seaweed: SeaweedS3) -> Iterator[Any]:
    """A plain boto3 client of the server, to watch the repository's objects."""
    c = seaweed.client()
    try:
        yield c
    finally:
        c.close()


def repository_objects(client: Any, prefix: str, under: str = "") -> dict[str, int]:
    """Name (below the prefix) -> size of every object of the repository (below ``under``)."""
    out: dict[str, int] = {}
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{prefix}/{under}"
    )
    for page in pages:
        for obj in page.get("Contents", []):
            out[obj["Key"][len(prefix) + 1 :]] = obj["Size"]
    return out


def lock_names(client: Any, prefix: str) -> list[str]:
    return list(repository_objects(client, prefix, "locks/"))


def wait_until(what: str, condition: Any, timeout: float = 60, every: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def test_three_hosts_back_up_while_forget_prune_runs(
    seaweed: SeaweedS3, client: Any, processes: Processes, tmp_path: Path, s3_prefix: str
) -> None:
    url = f"s3://{BUCKET}/{s3_prefix}"
    admin = _drengine(seaweed, url, tmp_path / "cache-admin", tmp_path)
    admin("init", *KDF_ARGS)
    shared = {
        "lib": os.urandom(6 * MiB),
        "words": b"lorem ipsum dolor sit amet " * 20000,
        "update-2": os.urandom(8 * MiB),
        "update-3": os.urandom(8 * MiB),
    }
    hosts = [Host(name, tmp_path, shared) for name in HOSTS]
    runs = {h.name: _drengine(seaweed, url, tmp_path / f"cache-{h.name}", tmp_path) for h in hosts}
    expected: dict[tuple[str, int], Manifest] = {}
    snapshot_ids: dict[tuple[str, int], str] = {}

    def collect(host: Host, rnd: int, backup: Running) -> None:
        backup.finish()
        snapshot_ids[(host.name, rnd)] = json.loads(backup.out)["snapshot_id"]

    # Rounds 0 and 1: three backups started together, twice: two snapshots per host, so
    # forget --keep-last 1 has at least one per host to remove.
    for rnd in (0, 1):
        for h in hosts:
            expected[(h.name, rnd)] = h.next_round(rnd)
        backups = [h.backup(processes, runs[h.name], rnd) for h in hosts]
        for h, b in zip(hosts, backups, strict=True):
            collect(h, rnd, b)

    # Round 2 and forget --prune start together; forget needs the exclusive lock, the backups
    # hold shared ones, so one side waits. Each host's round 3 starts once forget has removed
    # snapshots (and the host's round 2 is done): forget's prune is then about to take the
    # exclusive lock, holds it, or waits for it, while the round-3 backups want shared ones.
    for h in hosts:
        expected[(h.name, 2)] = h.next_round(2)
    round2 = {h.name: h.backup(processes, runs[h.name], 2) for h in hosts}
    forget_args = (*LOCK_WAIT, "forget", "--keep-last", "1", "--prune")
    forget = processes.start(admin, "forget --prune", *forget_args)
    round0 = {f"snapshots/{snapshot_ids[(h, 0)]}" for h in HOSTS}

    def forgotten() -> bool:
        if forget.proc.poll() is not None:  # failed early: forget.finish() says why
            return True
        return not round0 <= repository_objects(client, s3_prefix, "snapshots/").keys()

    wait_until("forget to remove the round-0 snapshots", forgotten, timeout=130, every=0.05)
    round3: dict[str, Running] = {}
    for h in hosts:
        collect(h, 2, round2[h.name])
        expected[(h.name, 3)] = h.next_round(3)
        round3[h.name] = h.backup(processes, runs[h.name], 3)
    for h in hosts:
        collect(h, 3, round3[h.name])
    forget_out = forget.finish()
    assert "removed" in forget_out and "packs:" in forget_out, forget_out  # prune ran

    # What is left: no round-0 snapshot; every round-2 and round-3 one (forget never saw a
    # snapshot newer than round 2); round 1 unless forget already saw the host's round 2.
    snaps = json.loads(admin("snapshots", "--json").stdout)
    left = {(s["host"], int(s["tags"][0].removeprefix("round-"))): s["id"] for s in snaps}
    assert len(left) == len(snaps), snaps
    must = {(h, r) for h in HOSTS for r in (2, 3)}
    may = {(h, r) for h in HOSTS for r in (1, 2, 3)}
    assert must <= left.keys() <= may, sorted(left)
    assert all(snapshot_ids[key] == sid for key, sid in left.items())

    # The repository as the concurrent writers and prune left it is sound ...
    check = admin("check", "--read-data")
    assert "no errors found" in check.stdout, check.stdout
    assert not [line for line in check.stderr.splitlines() if line.startswith("warning:")], (
        check.stderr
    )

    # ... and once a last prune has dropped the copies that concurrent backups uploaded at
    # the same moment, every distinct content is stored once.
    admin("prune")
    unique = {digest: size for key in left for size, digest in expected[key].values()}
    stored = sum(repository_objects(client, s3_prefix).values())
    latest_inputs = sum(tree_bytes(expected[(h, 3)]) for h in HOSTS)
    assert stored < 1.05 * sum(unique.values()) + 256 * KiB, (stored, sum(unique.values()))
    assert stored < 0.5 * latest_inputs, (stored, latest_inputs)

    # Every remaining snapshot restores to exactly the tree it was taken of (three restores
    # at a time, each with a cache of its own), and the data reads back clean.
    items = sorted(left.items())
    for first in range(0, len(items), 3):
        batch = items[first : first + 3]
        restores = []
        for i, (_key, sid) in enumerate(batch):
            run = _drengine(seaweed, url, tmp_path / f"cache-restore{i}", tmp_path)
            target = tmp_path / "restored" / sid[:8]
            restores.append(
                processes.start(run, f"restore {sid[:8]}", "restore", sid, "--target", str(target))
            )
        for r in restores:
            r.finish()
        for (host, rnd), sid in batch:
            src = tmp_path / host / "data"
            got = manifest(tmp_path / "restored" / sid[:8] / src.relative_to(src.anchor))
            assert got == expected[(host, rnd)], f"snapshot {sid[:8]} ({host}, round {rnd}) differs"
    admin("check", "--read-data")


def _big_tree(root: Path) -> None:
    # Large enough that a backup runs for a second or more after taking its lock.
    root.mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(64 * MiB))


def _backup_holding_its_lock(
    client: Any, run: Drengine, prefix: str, src: Path
) -> subprocess.Popen[str]:
    """Start a backup and return it once its shared lock is in the repository."""
    backup = run.start("backup", str(src))

    def locked_or_done() -> bool:
        return bool(lock_names(client, prefix)) or backup.poll() is not None

    try:
        wait_until("the backup's lock", locked_or_done)
    except BaseException:
        backup.kill()
        backup.communicate()
        raise
    assert backup.poll() is None, "the backup finished before it could be paused or killed"
    return backup


def test_conflicting_lock_exits_11_naming_the_holder(
    seaweed: SeaweedS3, client: Any, tmp_path: Path, s3_prefix: str
) -> None:
    run = _drengine(seaweed, f"s3://{BUCKET}/{s3_prefix}", tmp_path / "cache", tmp_path)
    run("init", *KDF_ARGS)
    src = tmp_path / "src"
    _big_tree(src)
    backup = _backup_holding_its_lock(client, run, s3_prefix, src)
    os.kill(backup.pid, signal.SIGSTOP)  # holds its shared lock, deterministically, until CONT
    waiting: subprocess.Popen[str] | None = None
    try:
        refused = run("prune", code=11)
        lines = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("drengine: error:"), refused.stderr
        msg = lines[0]
        assert "locked" in msg and "shared lock" in msg and "held by backup" in msg, msg
        assert f"pid {backup.pid} on {socket.gethostname()}" in msg, msg

        kept = run("unlock")  # a live lock (of a paused process) is not stale
        assert "removed 0 locks" in kept.stdout and "kept live shared lock" in kept.stderr
        assert len(lock_names(client, s3_prefix)) == 1

        # With --retry-lock, prune waits for the backup instead, and runs once it is done.
        waiting = run.start("--retry-lock", "2m", "prune")
        time.sleep(2)
        assert waiting.poll() is None, "prune did not wait for the backup's lock"
    except BaseException:
        if waiting is not None:
            waiting.kill()
            waiting.communicate()
        raise
    finally:
        os.kill(backup.pid, signal.SIGCONT)
        out, err = backup.communicate(timeout=120)
    assert backup.returncode == 0, describe(("backup",), backup.returncode, 0, out, err)
    assert waiting is not None
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, describe(("prune",), waiting.returncode, 0, out, err)
    assert lock_names(client, s3_prefix) == []
    run("check", "--read-data")


def test_unlock_removes_the_stale_lock_of_a_killed_backup(
    seaweed: SeaweedS3, client: Any, tmp_path: Path, s3_prefix: str
) -> None:
    run = _drengine(seaweed, f"s3://{BUCKET}/{s3_prefix}", tmp_path / "cache", tmp_path)
    run("init", *KDF_ARGS)
    src = tmp_path / "src"
    _big_tree(src)
    backup = _backup_holding_its_lock(client, run, s3_prefix, src)
    backup.kill()  # SIGKILL: no chance to remove its lock; its pid is dead on this host
    backup.communicate()
    assert len(lock_names(client, s3_prefix)) == 1

    # A stale lock blocks no one: prune runs, warns about it, and leaves it for unlock.
    pruned = run("prune")
    assert "ignoring stale shared lock" in pruned.stderr, pruned.stderr
    assert len(lock_names(client, s3_prefix)) == 1

    unlocked = run("unlock")
    assert "removed 1 locks" in unlocked.stdout, unlocked.stdout
    assert "removed stale shared lock" in unlocked.stderr, unlocked.stderr
    assert f"held by backup (pid {backup.pid} on {socket.gethostname()}" in unlocked.stderr
    assert lock_names(client, s3_prefix) == []

    pruned = run("prune")  # and now without a word about locks
    assert "stale" not in pruned.stderr, pruned.stderr
    assert "packs:" in pruned.stdout, pruned.stdout
    run("check", "--read-data")
