"""Exit codes and messages stay what docs/cli.md says: with --debug, for odd option values,
failing password commands, unreadable inputs, closed pipes and overlapping backups."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from e2e_support import CLI, PASSWORD, Repo, assert_one_line_error, dac_drop_prefix

from drengine.core import passwords


def _dac_drop(tmp_path: Path) -> list[str]:
    prefix = dac_drop_prefix(tmp_path)
    if prefix is None:
        pytest.skip("cannot make a file unreadable for root here (setpriv missing)")
    return prefix


def test_debug_keeps_the_exit_code_and_adds_a_traceback(repo: Repo) -> None:
    result = repo.run(
        "--debug", "snapshots", check_code=12, env_extra={"DRENGINE_PASSWORD": "wrong"}
    )
    assert "Traceback" in result.err and "drengine: error: wrong password" in result.err


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e400", "8d"])
def test_retry_lock_takes_only_finite_durations(repo: Repo, value: str) -> None:
    result = repo.run(f"--retry-lock={value}", "snapshots", check_code=2, timeout=30)
    assert "--retry-lock" in assert_one_line_error(result) or value in result.err


def test_a_failing_password_command_says_why(repo: Repo) -> None:
    cmd = "echo 'vault: permission denied for secret/backup' >&2; exit 3"
    result = repo.run(
        "snapshots",
        check_code=2,
        env_extra={"DRENGINE_PASSWORD": None, "DRENGINE_PASSWORD_COMMAND": cmd},
    )
    line = assert_one_line_error(result)
    assert "exit code 3" in line and "vault: permission denied" in line


def test_a_password_command_that_hangs_is_killed_with_its_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "child-alive"
    # The shell starts a child that would outlive a plain kill of the shell.
    cmd = f"(while true; do touch {marker}; sleep 0.1; done) & sleep 600"
    monkeypatch.setattr(passwords, "PASSWORD_COMMAND_TIMEOUT", 1.0)
    started = time.monotonic()
    with pytest.raises(passwords.UsageError, match="did not finish"):
        passwords.password_from_command(cmd, "DRENGINE_PASSWORD_COMMAND")
    assert time.monotonic() - started < 10
    time.sleep(0.5)
    marker.unlink(missing_ok=True)
    time.sleep(0.5)
    assert not marker.exists(), "the password command's child is still running"


def test_a_backup_of_only_an_unreadable_file_exits_1_without_a_snapshot(
    repo: Repo, tmp_path: Path
) -> None:
    prefix = _dac_drop(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"cannot read me\n")
    secret.chmod(0)
    result = repo.run("backup", str(secret), check_code=1, prefix=prefix)
    line = assert_one_line_error(result)
    assert "no snapshot" in line and str(secret) in line
    assert repo.snapshots() == []


def test_a_backup_of_only_an_unreadable_directory_exits_1(repo: Repo, tmp_path: Path) -> None:
    prefix = _dac_drop(tmp_path)
    closed = tmp_path / "closed"
    closed.mkdir()
    (closed / "inside").write_bytes(b"x")
    closed.chmod(0)
    try:
        repo.run("backup", str(closed), check_code=1, prefix=prefix)
    finally:
        closed.chmod(0o755)
    assert repo.snapshots() == []


def test_dump_into_a_closed_pipe_stops_quietly(repo: Repo, tmp_path: Path, cli: CLI) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(8 << 20))
    repo.backup(str(big))
    proc = subprocess.Popen(
        [sys.executable, "-m", "drengine", "--repo", str(repo.path), "dump", "latest", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli.env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.read(1000)  # `| head -c 1000`
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(60) == 141, err
    assert err == b""


def test_two_backups_on_one_host_at_once_both_succeed(repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for d in range(10):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(400):
            (src / f"d{d}" / f"f{f}").write_bytes(b"%d/%d" % (d, f))
    results = []

    def backup() -> None:
        results.append(repo.run("backup", str(src), check_code=None))

    threads = [threading.Thread(target=backup) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0, 0], [r.describe() for r in results]
    assert len(repo.snapshots()) == 2


def test_a_damaged_files_cache_costs_speed_only(repo: Repo, tmp_path: Path, cli: CLI) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    repo.backup(str(src))
    (db,) = cli.cache_dir.rglob("files.sqlite")
    db.write_bytes(b"this is not an SQLite database" * 100)
    result = repo.run("backup", str(src))
    assert "files cache" in result.err and "Traceback" not in result.err
    assert len(repo.snapshots()) == 2


def test_no_password_prompt_hangs_with_a_password_given(repo: Repo) -> None:
    assert repo.snapshots(env_extra={"DRENGINE_PASSWORD": PASSWORD}) == []


def test_a_damaged_snapshot_is_reported_and_can_be_forgotten_by_id(
    repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    old = repo.backup(str(src))["snapshot_id"]
    (src / "f").write_bytes(b"newer")
    new = repo.backup(str(src))["snapshot_id"]
    path = repo.path / "snapshots" / new
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # the newest snapshot is damaged
    path.write_bytes(bytes(data))
    listed = repo.run("snapshots", "--json")
    assert [s["id"] for s in listed.json()] == [old] and new in listed.err
    out = tmp_path / "out"
    repo.restore("latest", out)  # the newest readable one, said on stderr
    assert (out / src.relative_to("/") / "f").read_bytes() == b"data"
    repo.run("forget", new[:8])
    assert not path.exists()
    repo.run("check")
