"""copy: snapshots move to a second repository, re-encrypted, deduplicated, once."""

from __future__ import annotations

import os
from pathlib import Path

from e2e_support import CLI, Repo

TO = {"DRENGINE_TO_PASSWORD": "other-password"}
OTHER = {"DRENGINE_PASSWORD": "other-password"}


def test_copy_to_a_second_repository(cli: CLI, tmp_path: Path) -> None:
    src_repo = Repo(cli, tmp_path / "a")
    src_repo.init()
    dst_repo = Repo(cli, tmp_path / "b")
    dst_repo.init(env_extra=OTHER)
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(3 << 20))
    (data / "small.txt").write_bytes(b"hello\n")
    src_repo.backup(str(data), "--tag", "one")
    (data / "small.txt").write_bytes(b"changed\n")
    src_repo.backup(str(data), "--tag", "two")

    first = src_repo.run("copy", "--to", str(dst_repo.path), "--json", env_extra=TO).json()
    assert len(first["copied"]) == 2 and first["skipped"] == []
    # The second snapshot shares big.bin with the first: stored once in the destination.
    assert first["bytes_new"] < 2 * (3 << 20)
    again = src_repo.run("copy", "--to", str(dst_repo.path), "--json", env_extra=TO).json()
    assert again["copied"] == [] and len(again["skipped"]) == 2

    snaps = dst_repo.snapshots(env_extra=OTHER)
    src_ids = {s["id"] for s in src_repo.snapshots()}
    assert sorted(s["tags"] for s in snaps) == [["one"], ["two"]]
    assert not src_ids & {s["id"] for s in snaps}  # re-encrypted: new object names
    out = tmp_path / "out"
    dst_repo.run("restore", "latest", "--target", str(out), env_extra=OTHER)
    restored = out / data.relative_to("/")
    assert (restored / "big.bin").read_bytes() == (data / "big.bin").read_bytes()
    assert (restored / "small.txt").read_bytes() == b"changed\n"
    dst_repo.run("check", "--read-data", env_extra=OTHER)
    # Nothing of the source's plaintext or keys is needed: the old password cannot open it.
    dst_repo.run("snapshots", check_code=12)
