"""restore, ls and dump through the CLI: a full target disk, planted symlinks, invalid and
damaged entries (``--json``), and a non-blocking stdout."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import pytest
from e2e_support import CLI, PASSWORD, Repo, restored_path, small_tmpfs

from drengine.core.model import Node, Snapshot, encode_tree
from drengine.crypto.keys import KdfParams
from drengine.pipeline.saver import BlobSaver
from drengine.repository.layout import BlobType
from drengine.repository.repo import Repository
from drengine.storage.local import LocalBackend

KIB = 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: the restore target that fills up."""
    with small_tmpfs(tmp_path / "small-disk", "2m") as mnt:
        yield mnt


def test_restore_into_a_full_disk(repo: Repo, tmp_path: Path, small_disk: Path) -> None:
    src = (tmp_path / "src").resolve()
    (src / "sub").mkdir(parents=True)
    expected: dict[str, str] = {}
    for i in range(24):  # 24 x 200 KiB random: far more than 2 MiB
        data = os.urandom(200 * KIB)
        rel = f"sub/big{i:02d}" if i % 2 else f"big{i:02d}"
        (src / rel).write_bytes(data)
        expected[rel] = hashlib.sha256(data).hexdigest()
    for i in range(30):
        data = b"small %d\n" % i
        (src / f"small{i:02d}").write_bytes(data)
        expected[f"small{i:02d}"] = hashlib.sha256(data).hexdigest()
    snap = repo.backup(str(src))["snapshot_id"]

    result = repo.restore(snap, small_disk, check_code=1)
    restored = restored_path(small_disk, src)
    lines = result.err.splitlines()
    reported = {line.split(": ")[1] for line in lines if line.startswith("error: ")}
    present = {}
    for dirpath, _dirs, files in os.walk(restored):
        for name in files:
            path = Path(dirpath) / name
            present[path.relative_to(restored).as_posix()] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    temporaries = [p for p in present if ".drengine-" in p]
    assert temporaries == [], result.describe()
    wrong = [p for p, digest in present.items() if expected.get(p) != digest]
    assert wrong == [], f"files with wrong content under final names: {wrong}"
    missing = set(expected) - set(present)
    assert missing, "the disk did not fill up: the test proves nothing"
    assert {str(restored / m) for m in missing} <= reported, result.describe()
    assert not {str(restored / p) for p in present} & reported, result.describe()
    final = lines[-1]
    assert final.startswith("drengine: error: ") and "could not be restored" in final
    assert "nothing unverified was written" not in result.err
    assert "every file this restore put under its final name was verified" in final
    assert any("No space left on device" in line for line in lines), result.describe()


def test_restore_refuses_a_symlink_planted_at_a_parent(repo: Repo, tmp_path: Path) -> None:
    src = (tmp_path / "src").resolve()
    (src / "conf" / "ssh").mkdir(parents=True)
    (src / "conf" / "ssh" / "authorized_keys").write_bytes(b"ssh-ed25519 AAAA attacker\n")
    (src / "other").write_bytes(b"other\n")
    snap = repo.backup(str(src))["snapshot_id"]
    outside = tmp_path / "outside"
    outside.mkdir()
    target = tmp_path / "target"
    planted = restored_path(target, src) / "conf"
    planted.parent.mkdir(parents=True)
    os.symlink(outside, planted)
    result = repo.restore(snap, target, check_code=1)
    assert list(outside.iterdir()) == []
    assert f"error: {planted}: refused: exists in the target and is not a directory" in result.err
    assert f"error: {planted}/ssh/authorized_keys: not restored" in result.err
    assert (restored_path(target, src) / "other").read_bytes() == b"other\n"


# ---- snapshots built with the repository API -------------------------------------------------


def _crafted(cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Repo, str]:
    """A repository whose snapshot holds a good file, a file with an out-of-range mode and
    a file a repair marked damaged."""
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(tmp_path / "api-cache"))
    path = tmp_path / "crafted-repo"
    path.mkdir()
    repo = Repository.init(
        LocalBackend(path), PASSWORD.encode(), kdf=KdfParams(memory_kib=8 * KIB, iterations=1)
    )
    saver = BlobSaver(repo)

    def file(name: bytes, content: bytes, **fields: Any) -> dict[str, Any]:
        node = Node(
            name=name,
            type="file",
            mode=0o644,
            mtime_ns=1_700_000_000_000_000_000,
            size=len(content),
            content=[saver.save_blob(BlobType.DATA, content)],
            content_hash=blake3.blake3(content).digest(),
        )
        return {**node.to_dict(), **fields}

    nodes = [
        file(b"good", b"good\n"),
        file(b"bad-mode", b"bad\n", mode=2**40),
        file(b"partial", b"what is left\n", damaged="lost 1 of 2 content blobs"),
    ]
    doc = {"nodes": sorted(nodes, key=lambda d: base64.b64decode(d["name"]))}
    tree = saver.save_blob(BlobType.TREE, json.dumps(doc, sort_keys=True).encode())
    damaged_only = saver.save_blob(BlobType.TREE, encode_tree([Node.from_dict(nodes[2])]))
    saver.close()
    ids = []
    for root in (tree, damaged_only):
        snap = Snapshot("2024-05-06T07:08:09+00:00", "h", "u", ["/"], [], root, "test")
        ids.append(repo.save_snapshot(snap))
    return Repo(cli, path), ids[0]


def test_ls_shows_invalid_and_damaged_entries(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, snap = _crafted(cli, tmp_path, monkeypatch)
    entries = {e["path"]: e for e in repo.ls(snap)}
    assert set(entries) == {"/good", "/bad-mode", "/partial"}
    assert "mode 1099511627776 is out of range" in entries["/bad-mode"]["invalid"]
    assert entries["/partial"]["damaged"] == "lost 1 of 2 content blobs"
    assert "invalid" not in entries["/good"] and "damaged" not in entries["/good"]
    text = repo.run("ls", snap)
    assert text.out.splitlines() == ["/bad-mode", "/good", "/partial"]
    assert "warning: /bad-mode: invalid in the snapshot: mode 1099511627776" in text.err


def test_restore_json_reports_invalid_and_damaged(
    cli: CLI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo, snap = _crafted(cli, tmp_path, monkeypatch)
    target = tmp_path / "target"
    result = repo.restore(snap, target, "--json", check_code=1)
    summary = result.json()
    assert summary["files"] == 2 and summary["snapshot_id"] == snap
    assert [(e["path"], e["error"][:32]) for e in summary["errors"]] == [
        (str(target / "bad-mode"), "refused: invalid in the snapshot")
    ]
    assert summary["warnings"] == [
        {
            "path": str(target / "partial"),
            "warning": "restored incomplete: lost 1 of 2 content blobs",
        }
    ]
    assert sorted(os.listdir(target)) == ["good", "partial"]
    assert (target / "partial").read_bytes() == b"what is left\n"

    # Damaged but nothing failed: exit 0, the warning printed.
    second = next(s["id"] for s in repo.snapshots() if s["id"] != snap)
    again = repo.restore(second, tmp_path / "t2")
    assert f"warning: {tmp_path / 't2' / 'partial'}: restored incomplete: lost 1" in again.err
    assert "1 incomplete" in again.out


def test_dump_to_a_non_blocking_stdout(repo: Repo, tmp_path: Path) -> None:
    src = (tmp_path / "src").resolve()
    src.mkdir()
    data = os.urandom(3 << 20)  # several blobs, far more than a pipe holds
    (src / "f").write_bytes(data)
    snap = repo.backup(str(src))["snapshot_id"]
    r, w = os.pipe()
    os.set_blocking(w, False)  # shared with the child: its stdout is non-blocking
    got = bytearray()
    proc = subprocess.Popen(
        [sys.executable, "-m", "drengine", "--repo", str(repo.path), "dump", snap, str(src / "f")],
        stdout=w,
        stderr=subprocess.PIPE,
        env=repo.cli.env,
        cwd=tmp_path,
    )
    os.close(w)

    def drain() -> None:
        while chunk := os.read(r, 65536):
            got.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    _, err = proc.communicate(timeout=120)
    reader.join()
    os.close(r)
    assert proc.returncode == 0, err.decode()
    assert bytes(got) == data


def test_a_restore_removes_what_a_killed_restore_left(repo: Repo, tmp_path: Path) -> None:
    """A restore killed with SIGKILL leaves its temporary files (they never got a final
    name); the next restore into the target removes those of processes that no longer run,
    and nothing else."""
    src = (tmp_path / "src").resolve()
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "a").write_bytes(b"a\n")
    (src / "b").write_bytes(b"b\n")
    snap = repo.backup(str(src))["snapshot_id"]
    target = tmp_path / "target"
    restored = restored_path(target, src)
    (restored / "sub").mkdir(parents=True)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, alive = gone.pid, os.getpid()
    stale = [target / f".drengine-{dead}-3.tmp", restored / "sub" / f".drengine-{dead}-12.tmp"]
    kept = [restored / f".drengine-{alive}-1.tmp"]  # perhaps another restore, running
    for p in stale + kept:
        p.write_bytes(b"half a file")
    os.symlink("/etc/hostname", restored / "sub" / f".drengine-{dead}-4.tmp")  # not a file
    kept.append(restored / "sub" / f".drengine-{dead}-4.tmp")
    if os.geteuid() == 0:  # another user's file of that name is not ours to remove
        other = restored / f".drengine-{dead}-5.tmp"
        other.write_bytes(b"theirs")
        os.chown(other, 54321, 54321)
        kept.append(other)

    out = repo.restore(snap, target, "--json").json()
    assert out["leftovers_removed"] == len(stale) and out["errors"] == [], out
    assert not any(os.path.lexists(p) for p in stale)
    assert all(os.path.lexists(p) for p in kept)
    assert (restored / "sub" / "a").read_bytes() == b"a\n"
    assert (restored / "b").read_bytes() == b"b\n"
    text = repo.restore(snap, target)
    assert "removed" not in text.err  # nothing left to remove
