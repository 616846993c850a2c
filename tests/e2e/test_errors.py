"""Exit codes and messages for the ways things go wrong."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from e2e_support import (
    CLI,
    PASSWORD,
    Repo,
    assert_one_line_error,
    dac_drop_prefix,
    make_repo,
    restored_path,
    write_random,
)

# --------------------------------------------------------------------------- passwords


def test_wrong_password_exits_12(repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data\n")
    repo.backup(str(src))
    files_before = repo.files()

    wrong = {"DRENGINE_PASSWORD": "not the password"}
    result = repo.run("snapshots", check_code=12, env_extra=wrong)
    assert_one_line_error(result)
    result = repo.run("backup", str(src), check_code=12, env_extra=wrong)
    assert_one_line_error(result)
    assert repo.files() == files_before, "a backup with a wrong password wrote to the repository"


def test_password_file_first_line(repo: Repo, tmp_path: Path) -> None:
    good = tmp_path / "pw-good"
    good.write_text(PASSWORD + "\nsecond line is ignored\n")
    bad = tmp_path / "pw-bad"
    bad.write_text("wrong\n" + PASSWORD + "\n")
    env = {"DRENGINE_PASSWORD": None, "DRENGINE_PASSWORD_FILE": str(good)}
    assert repo.snapshots(env_extra=env) == []
    env["DRENGINE_PASSWORD_FILE"] = str(bad)
    assert_one_line_error(repo.run("snapshots", check_code=12, env_extra=env))


def test_password_command_first_line(repo: Repo, tmp_path: Path) -> None:
    good = tmp_path / "pw-good.sh"
    good.write_text(f"#!/bin/sh\necho '{PASSWORD}'\necho 'second line is ignored'\n")
    bad = tmp_path / "pw-bad.sh"
    bad.write_text("#!/bin/sh\necho wrong\n")
    for script in (good, bad):
        script.chmod(0o755)
    env = {"DRENGINE_PASSWORD": None, "DRENGINE_PASSWORD_COMMAND": str(good)}
    assert repo.snapshots(env_extra=env) == []
    env["DRENGINE_PASSWORD_COMMAND"] = str(bad)
    assert_one_line_error(repo.run("snapshots", check_code=12, env_extra=env))


def test_no_password_and_no_terminal_exits_2(repo: Repo) -> None:
    # A new session has no controlling terminal, so /dev/tty cannot be opened either.
    result = repo.run(
        "snapshots",
        check_code=2,
        env_extra={"DRENGINE_PASSWORD": None},
        new_session=True,
        timeout=60,
    )
    line = assert_one_line_error(result)
    assert "password" in line.lower(), line


# --------------------------------------------------------------------------- repositories


@pytest.mark.parametrize("kind", ["missing", "empty-dir"])
def test_no_repository_exits_10(cli: CLI, tmp_path: Path, kind: str) -> None:
    where = tmp_path / "nothing-here"
    if kind == "empty-dir":
        where.mkdir()
    result = cli("--repo", str(where), "snapshots", check_code=10)
    assert_one_line_error(result)
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    assert_one_line_error(cli("--repo", str(where), "backup", str(src), check_code=10))
    if kind == "missing":
        assert not where.exists(), "backup created a directory where no repository was"
    else:
        assert list(where.iterdir()) == [], "backup wrote into a directory that is no repository"


def test_init_twice_fails_and_keeps_the_repository(repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"precious\n")
    snap = repo.backup(str(src))["snapshot_id"]
    files_before = repo.files()

    result = repo.init(check_code=None, env_extra={"DRENGINE_PASSWORD": "another password"})
    assert result.returncode != 0, result.describe()
    line = assert_one_line_error(result)
    assert "exist" in line.lower() or str(repo.path) in line, line

    assert repo.files() == files_before
    assert [s["id"] for s in repo.snapshots()] == [snap]
    repo.run("snapshots", check_code=12, env_extra={"DRENGINE_PASSWORD": "another password"})


@pytest.mark.parametrize(
    "args",
    [
        ("ls", "0123456789abcdef"),
        ("restore", "deadbeefdeadbeef", "--target", "{target}"),
        ("dump", "deadbeef", "/etc/passwd"),
        ("ls", "latest"),  # no snapshots yet
    ],
)
def test_unknown_snapshot_exits_2(repo: Repo, tmp_path: Path, args: tuple[str, ...]) -> None:
    target = tmp_path / "target"
    argv = [a.format(target=target) for a in args]
    result = repo.run(*argv, check_code=2)
    assert_one_line_error(result)
    assert result.stdout == b""
    assert not target.exists() or list(target.iterdir()) == []


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),  # unknown command
        ("backup", "--no-such-option", "/etc/hostname"),
        ("backup",),  # PATH missing
        ("ls",),  # SNAPSHOT missing
        ("snapshots", "--host"),  # option without its value
        ("restore", "latest", "--target"),
    ],
    ids=["unknown-command", "unknown-option", "no-paths", "no-snapshot", "no-value", "no-target"],
)
def test_usage_errors_exit_2(repo: Repo, args: tuple[str, ...]) -> None:
    result = repo.run(*args, check_code=2)
    assert_one_line_error(result)


def test_bad_option_value_exits_2(cli: CLI, tmp_path: Path) -> None:
    where = tmp_path / "repo"
    result = cli("--repo", str(where), "init", "--kdf-iterations", "many", check_code=2)
    assert_one_line_error(result)
    assert not where.exists() or list(where.iterdir()) == []


# --------------------------------------------------------------------------- damaged data


@dataclass
class Damaged:
    repo: Repo
    src: Path
    snapshot: str
    expected: dict[str, str]  # relative path -> sha256
    pack: Path


def data_files(repo: Repo) -> list[Path]:
    data = repo.path / "data"
    assert data.is_dir(), f"no data/ directory in the repository: {sorted(repo.files())}"
    packs = [p for p in data.rglob("*") if p.is_file()]
    assert packs, "no pack files under data/"
    return packs


@pytest.fixture
def damaged(cli: CLI, tmp_path: Path) -> Damaged:
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    (src / "sub").mkdir(parents=True)
    expected = {}
    for i in range(6):
        name = f"sub/random{i}.bin" if i % 2 else f"random{i}.bin"
        expected[name] = hashlib.sha256(write_random(src / name, 256 * 1024)).hexdigest()
    for i in range(4):
        data = f"small text file {i}\n".encode() * (i + 1)
        (src / f"small{i}.txt").write_bytes(data)
        expected[f"small{i}.txt"] = hashlib.sha256(data).hexdigest()
    snapshot = repo.backup(str(src))["snapshot_id"]
    pack = max(data_files(repo), key=lambda p: p.stat().st_size)
    return Damaged(repo, src, snapshot, expected, pack)


def damage(pack: Path, how: str) -> None:
    size = pack.stat().st_size
    os.chmod(pack, 0o644)  # the repository may store packs read-only
    if how == "flip":
        with open(pack, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0x5A]))
    elif how == "truncate":
        os.truncate(pack, size // 2)
    elif how == "delete":
        pack.unlink()
    else:  # pragma: no cover
        raise ValueError(how)


def names_pack(output: str, pack: Path) -> bool:
    return pack.name in output or (pack.stem != pack.name and pack.stem in output)


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_check_read_data_finds_damaged_pack(damaged: Damaged, how: str) -> None:
    damaged.repo.run("check", "--read-data")  # sound before the damage
    damage(damaged.pack, how)
    result = damaged.repo.run("check", "--read-data", check_code=1)
    assert "Traceback" not in result.err
    assert names_pack(result.output, damaged.pack), (
        f"check output does not name the damaged pack {damaged.pack.name}\n{result.describe()}"
    )


def test_check_finds_deleted_pack_without_reading_data(damaged: Damaged) -> None:
    damaged.repo.run("check")
    damage(damaged.pack, "delete")
    result = damaged.repo.run("check", check_code=1)
    assert "Traceback" not in result.err
    assert names_pack(result.output, damaged.pack), result.describe()


@pytest.mark.parametrize("how", ["flip", "truncate", "delete"])
def test_restore_of_damaged_snapshot_never_writes_wrong_data(
    damaged: Damaged, tmp_path: Path, how: str
) -> None:
    damage(damaged.pack, how)
    target = tmp_path / "restore"
    result = damaged.repo.restore(damaged.snapshot, target, check_code=None)
    assert result.returncode != 0, f"restore of a damaged snapshot succeeded\n{result.describe()}"
    assert "Traceback" not in result.err, result.describe()
    restored = restored_path(target, damaged.src)
    wrong = []
    if restored.exists():
        for path in restored.rglob("*"):
            rel = path.relative_to(restored).as_posix()
            if path.is_file() and rel in damaged.expected:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                if digest != damaged.expected[rel]:
                    wrong.append(f"{rel} ({path.stat().st_size} bytes)")
    assert not wrong, f"files with wrong content at their final names: {wrong}"


# --------------------------------------------------------------------------- unreadable inputs


def assert_partial_backup(repo: Repo, summary: dict, bad: list[Path], good: Path) -> None:
    reported = [e["path"] for e in summary["errors"]]
    for path in bad:
        assert str(path) in reported, f"{path} not in backup --json errors: {summary['errors']}"
    for err in summary["errors"]:
        assert err["error"], err
    snaps = repo.snapshots()
    assert [s["id"] for s in snaps] == [summary["snapshot_id"]]
    stored = json.dumps(snaps[0]["summary"])
    for path in bad:
        assert json.dumps(str(path)) in stored, f"{path} not in the snapshot's summary: {stored}"
    listed = {e["path"] for e in repo.ls(summary["snapshot_id"])}
    assert str(good) in listed, f"the readable file {good} is missing from the snapshot"


def test_missing_input_path_exits_3(repo: Repo, tmp_path: Path) -> None:
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "good").write_bytes(b"readable\n")
    missing = (tmp_path / "vanished").resolve()
    summary = repo.backup(str(src), str(missing), check_code=3)
    assert_partial_backup(repo, summary, [missing], src / "good")


def test_unreadable_file_and_directory_exit_3(repo: Repo, tmp_path: Path) -> None:
    prefix = dac_drop_prefix(tmp_path)
    if prefix is None:
        pytest.skip("cannot make a file unreadable for root here (setpriv missing)")
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "good").write_bytes(b"readable\n")
    secret = src / "secret"
    secret.write_bytes(b"cannot read me\n")
    secret.chmod(0)
    closed = src / "closed_dir"
    closed.mkdir()
    (closed / "inside").write_bytes(b"x\n")
    closed.chmod(0)
    try:
        result = repo.run("backup", "--json", str(src), check_code=3, prefix=prefix)
    finally:
        closed.chmod(0o755)
    summary = result.json()
    assert_partial_backup(repo, summary, [secret, closed], src / "good")


def test_unreadable_path_named_on_one_line(repo: Repo, tmp_path: Path) -> None:
    """Messages go to logs and cron mail: a long path must not be folded across lines."""
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "good").write_bytes(b"readable\n")
    missing = (tmp_path / ("a-long-directory-name-" * 4) / ("and-a-long-file-name-" * 3)).resolve()
    assert len(str(missing)) > 160
    result = repo.run("backup", str(src), str(missing), check_code=3)
    assert any(str(missing) in line for line in result.err.splitlines()), result.describe()


def test_restore_target_that_is_a_file_is_one_clear_error(repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")
    repo.backup(str(src))
    target = tmp_path / "target"
    target.write_bytes(b"not a directory")
    result = repo.run("restore", "latest", "--target", str(target), check_code=1)
    line = assert_one_line_error(result)
    assert "restore target" in line and str(target) in line
    assert target.read_bytes() == b"not a directory"
