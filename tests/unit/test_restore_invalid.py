"""Invalid metadata costs its entry only (restore reports it, ls shows why); entries marked
``damaged`` by a repair restore, verified, with a warning."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import blake3
import pytest
from test_restore_support import MTIME, Builder

from drengine.cli.cmd_ls import entry_json
from drengine.core.errors import IntegrityError
from drengine.core.model import Snapshot
from drengine.engine.dump import run_dump
from drengine.engine.restore import run_restore
from drengine.engine.tree_paths import list_entries
from drengine.repository.repo import Repository


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _file_dict(b: Builder, name: bytes, content: bytes, **fields: Any) -> dict[str, Any]:
    d = b.file(name, content).to_dict()
    d.update(fields)
    return d


def _snapshot(repo: Repository, password: bytes) -> tuple[Repository, Snapshot]:
    b = Builder(repo, password)
    inner = b.tree([b.file(b"inside", b"below an invalid directory\n")])
    nodes = [
        _file_dict(b, b"huge-mode", b"1", mode=2**40),
        _file_dict(b, b"huge-uid", b"2", uid=2**40),
        _file_dict(b, b"no-mtime", b"3"),
        _file_dict(b, b"good", b"good\n"),
        _file_dict(b, b"nul-xattr", b"4", xattrs=[[_b64(b"user.a\0b"), _b64(b"v")]]),
        {**b.dir_of(b"bad-dir", inner).to_dict(), "mode": -1},
        {"name": _b64(b"link"), "type": "symlink", "mode": 0o777, "uid": 0, "gid": 0},
    ]
    del nodes[2]["mtime_ns"]
    return b.snapshot(b.raw_tree(nodes))


def test_invalid_entries_cost_only_themselves(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path
) -> None:
    reader, snap = _snapshot(mem_repo, repo_password)
    target = tmp_path / "t"
    result = run_restore(reader, snap, str(target))
    errors = {os.path.relpath(e["path"], target): e["error"] for e in result.errors}
    assert set(errors) == {"huge-mode", "huge-uid", "no-mtime", "nul-xattr", "bad-dir", "link"}
    assert "mode 1099511627776 is out of range" in errors["huge-mode"]
    assert "uid 1099511627776 is out of range" in errors["huge-uid"]
    assert "mtime_ns is missing" in errors["no-mtime"]
    assert "embedded null character" in errors["nul-xattr"]
    assert errors["bad-dir"].startswith("restored without its metadata: invalid in the snapshot")
    assert "target is missing" in errors["link"]
    assert (target / "good").read_bytes() == b"good\n"
    assert (target / "bad-dir" / "inside").read_bytes() == b"below an invalid directory\n"
    assert sorted(os.listdir(target)) == ["bad-dir", "good"]  # no temporaries, no guesses


def test_os_errors_of_one_entry_cost_that_entry(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = Builder(mem_repo, repo_password)
    reader, snap = b.snapshot([b.file(b"a", b"a", mode=0o640), b.file(b"b", b"b", mode=0o600)])
    real = os.fchmod

    def picky(fd: int, mode: int) -> None:
        if mode == 0o640:
            raise OverflowError("mode does not fit")
        real(fd, mode)

    monkeypatch.setattr(os, "fchmod", picky)
    result = run_restore(reader, snap, str(tmp_path / "t"))
    assert [(os.path.basename(e["path"]), e["error"]) for e in result.errors] == [
        ("a", "cannot set metadata: mode does not fit")
    ]
    assert os.listdir(tmp_path / "t") == ["b"]


def test_ls_lists_invalid_entries_with_the_reason(
    mem_repo: Repository, repo_password: bytes
) -> None:
    reader, snap = _snapshot(mem_repo, repo_password)
    listed = {p: entry_json(p, n) for p, n in list_entries(reader, snap)}
    assert "mode 1099511627776 is out of range" in str(listed[b"/huge-mode"]["invalid"])
    assert "invalid" not in listed[b"/good"]
    assert listed[b"/bad-dir/inside"]["type"] == "file"


def test_damaged_entries_restore_with_a_warning(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path
) -> None:
    b = Builder(mem_repo, repo_password)
    left = b"what the repair kept\n"
    damaged = b.file(b"partial", left, damaged="lost 1 of 2 content blobs (repaired 2024)")
    emptied = b.dir(b"lost-dir", [], damaged="its contents are lost (repaired 2024)")
    reader, snap = b.snapshot([damaged, emptied, b.file(b"whole", b"whole\n")])
    result = run_restore(reader, snap, str(tmp_path / "t"))
    assert result.errors == []
    warnings = {os.path.basename(w["path"]): w["warning"] for w in result.warnings}
    assert warnings == {
        "partial": "restored incomplete: lost 1 of 2 content blobs (repaired 2024)",
        "lost-dir": "restored incomplete: its contents are lost (repaired 2024)",
    }
    assert (tmp_path / "t" / "partial").read_bytes() == left
    assert stat.S_ISDIR(os.lstat(tmp_path / "t" / "lost-dir").st_mode)
    assert os.lstat(tmp_path / "t" / "partial").st_mtime_ns == MTIME
    assert blake3.blake3(left).digest() == damaged.content_hash


def test_dump_refuses_an_invalid_file(mem_repo: Repository, repo_password: bytes) -> None:
    reader, snap = _snapshot(mem_repo, repo_password)
    with (
        open(os.devnull, "wb") as out,
        pytest.raises(IntegrityError, match=r"is invalid in snapshot .* not dumped"),
    ):
        run_dump(reader, snap, "/huge-mode", out)
