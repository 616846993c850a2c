"""snapshots, ls and dump: the listing surface scripts rely on."""

from __future__ import annotations

import getpass
import os
import re
import socket
import stat
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from e2e_support import CLI, Repo, make_repo

SNAPSHOT_FIELDS = {
    "id",
    "short_id",
    "time",
    "host",
    "username",
    "paths",
    "tags",
    "tree",
    "source",
    "program_version",
    "summary",
}
LS_FIELDS = {"path", "type", "size", "mode", "mtime", "uid", "gid"}
MTIME_NS = 1_650_000_000_987_654_321
RFC3339 = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_rfc3339_ns(text: str) -> int:
    """RFC 3339 timestamp -> nanoseconds since the epoch, keeping every digit."""
    match = RFC3339.match(text)
    assert match, f"not an RFC 3339 timestamp: {text!r}"
    base, frac, zone = match.groups()
    dt = datetime.fromisoformat(base + ("+00:00" if zone == "Z" else zone))
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "").ljust(9, "0")[:9])


def parse_mode(text: str) -> int:
    assert isinstance(text, str), f"mode should be an octal string, got {text!r}"
    return int(text.removeprefix("0o"), 8)


def below(entries: list[dict[str, Any]], root: Path) -> dict[str, dict[str, Any]]:
    prefix = str(root) + "/"
    return {e["path"]: e for e in entries if e["path"] == str(root) or e["path"].startswith(prefix)}


def make_src(tmp_path: Path) -> Path:
    src = (tmp_path / "src").resolve()
    (src / "dir").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "dir" / "file").write_bytes(b"file in dir\n")
    os.chown(src / "dir" / "file", 1234, 5678)
    os.chmod(src / "dir" / "file", 0o640)
    (src / "bin").write_bytes(os.urandom(1234))
    os.chmod(src / "bin", 0o751)
    os.symlink("dir/file", src / "link")
    os.utime(src / "dir" / "file", ns=(MTIME_NS, MTIME_NS))
    return src


def test_snapshots_json_fields(repo: Repo, tmp_path: Path) -> None:
    src = make_src(tmp_path)
    before = time.time()
    summary = repo.backup(str(src))
    after = time.time()
    snaps = repo.snapshots()
    assert len(snaps) == 1
    snap = snaps[0]
    assert snap.keys() >= SNAPSHOT_FIELDS, f"missing: {SNAPSHOT_FIELDS - snap.keys()}"
    assert re.fullmatch(r"[0-9a-f]{16,}", snap["id"]), snap["id"]
    assert snap["id"] == summary["snapshot_id"]
    assert snap["short_id"] == summary["short_id"]
    assert snap["id"].startswith(snap["short_id"]) and len(snap["short_id"]) < len(snap["id"])
    ts = parse_rfc3339_ns(snap["time"]) / 1e9
    assert before - 5 <= ts <= after + 5, (snap["time"], before, after)
    assert snap["host"] == socket.gethostname()
    assert snap["username"] == getpass.getuser()
    assert snap["paths"] == [str(src)]
    assert snap["tags"] in ([], None)
    assert snap["source"] == "files"
    assert isinstance(snap["program_version"], str) and snap["program_version"]
    assert isinstance(snap["tree"], str) and snap["tree"]
    assert snap["summary"]["files_total"] == 2, snap["summary"]
    assert snap["summary"]["bytes_total"] == 1234 + len(b"file in dir\n"), snap["summary"]


def test_tags_and_host_are_stored_and_filter(repo: Repo, tmp_path: Path) -> None:
    src = make_src(tmp_path)
    first = repo.backup(str(src), "--tag", "daily", "--tag", "db", "--host", "host-a")
    second = repo.backup(str(src), "--tag", "weekly")
    by_id = {s["id"]: s for s in repo.snapshots()}
    assert by_id.keys() == {first["snapshot_id"], second["snapshot_id"]}
    one, two = by_id[first["snapshot_id"]], by_id[second["snapshot_id"]]
    assert sorted(one["tags"]) == ["daily", "db"]
    assert one["host"] == "host-a"
    assert two["tags"] == ["weekly"]
    assert two["host"] == socket.gethostname()

    assert [s["id"] for s in repo.snapshots("--host", "host-a")] == [first["snapshot_id"]]
    assert [s["id"] for s in repo.snapshots("--tag", "weekly")] == [second["snapshot_id"]]
    assert [s["id"] for s in repo.snapshots("--tag", "db")] == [first["snapshot_id"]]
    assert repo.snapshots("--tag", "monthly") == []
    assert repo.snapshots("--host", "no-such-host") == []


def unique_prefix(ident: str, others: list[str], start: int = 6) -> str:
    for n in range(start, len(ident)):
        if not any(o.startswith(ident[:n]) for o in others):
            return ident[:n]
    raise AssertionError("no unique prefix")


def test_latest_and_prefixes_resolve(repo: Repo, tmp_path: Path) -> None:
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "a").write_bytes(b"version 1\n")
    first = repo.backup(str(src))["snapshot_id"]
    (src / "a").write_bytes(b"version 2, longer\n")
    (src / "b").write_bytes(b"new file\n")
    second = repo.backup(str(src))["snapshot_id"]
    assert first != second
    path_a, path_b = str(src / "a"), str(src / "b")

    assert path_b in below(repo.ls("latest"), src)
    assert repo.run("dump", "latest", path_a).stdout == b"version 2, longer\n"

    prefix1 = unique_prefix(first, [second])
    prefix2 = unique_prefix(second, [first])
    listed = below(repo.ls(prefix1), src)
    assert path_a in listed and path_b not in listed
    assert listed[path_a]["size"] == len(b"version 1\n")
    assert repo.run("dump", prefix1, path_a).stdout == b"version 1\n"
    assert repo.run("dump", prefix2, path_a).stdout == b"version 2, longer\n"
    assert repo.run("dump", first, path_a).stdout == b"version 1\n"

    short = {s["id"]: s["short_id"] for s in repo.snapshots()}
    assert repo.run("dump", short[first], path_a).stdout == b"version 1\n"


def test_ls_json_entries(repo: Repo, tmp_path: Path) -> None:
    src = make_src(tmp_path)
    snap = repo.backup(str(src))["snapshot_id"]
    entries = repo.ls(snap)
    for entry in entries:
        assert entry.keys() >= LS_FIELDS, f"missing {LS_FIELDS - entry.keys()} in {entry}"
    listed = below(entries, src)
    names = {"", "/dir", "/dir/file", "/empty", "/bin", "/link"}
    assert set(listed) == {str(src) + n for n in names}

    types = {p.removeprefix(str(src)): e["type"] for p, e in listed.items()}
    assert types == {
        "": "dir",
        "/dir": "dir",
        "/dir/file": "file",
        "/empty": "dir",
        "/bin": "file",
        "/link": "symlink",
    }
    file = listed[str(src / "dir" / "file")]
    assert file["size"] == len(b"file in dir\n")
    assert stat.S_IMODE(parse_mode(file["mode"])) == 0o640
    assert (file["uid"], file["gid"]) == (1234, 5678)
    assert parse_rfc3339_ns(file["mtime"]) == MTIME_NS, file["mtime"]
    assert listed[str(src / "bin")]["size"] == 1234
    assert stat.S_IMODE(parse_mode(listed[str(src / "bin")]["mode"])) == 0o751
    assert listed[str(src / "link")]["target"] == "dir/file"
    for path, entry in listed.items():
        st = os.lstat(path)
        assert parse_rfc3339_ns(entry["mtime"]) == st.st_mtime_ns, (path, entry["mtime"])

    # ls SNAPSHOT PATH: only what is below PATH.
    sub = {e["path"] for e in repo.ls(snap, str(src / "dir"))}
    assert sub - {str(src / "dir")} == {str(src / "dir" / "file")}, sub


def test_dump_writes_exact_bytes(repo: Repo, tmp_path: Path) -> None:
    src = (tmp_path / "src").resolve()
    src.mkdir()
    every_byte = bytes(range(256)) * 64 + os.urandom(300_000) + b"\r\n\x00no newline at end"
    big = os.urandom(3 << 20)  # several chunks: their order matters
    (src / "every_byte").write_bytes(every_byte)
    (src / "big").write_bytes(big)
    (src / "empty").write_bytes(b"")
    snap = repo.backup(str(src))["snapshot_id"]
    assert repo.run("dump", snap, str(src / "every_byte")).stdout == every_byte
    assert repo.run("dump", snap, str(src / "big")).stdout == big
    assert repo.run("dump", snap, str(src / "empty")).stdout == b""
    missing = repo.run("dump", snap, str(src / "no-such-file"), check_code=None)
    assert missing.returncode != 0 and missing.stdout == b"", missing.describe()


def test_repository_from_environment_and_file_url(cli: CLI, tmp_path: Path) -> None:
    repo = make_repo(cli, tmp_path / "repo")
    src = (tmp_path / "src").resolve()
    src.mkdir()
    (src / "f").write_bytes(b"f\n")
    snap = repo.backup(str(src))["snapshot_id"]
    via_env = cli("snapshots", "--json", env_extra={"DRENGINE_REPOSITORY": str(repo.path)}).json()
    assert [s["id"] for s in via_env] == [snap]
    via_url = cli("--repo", f"file://{repo.path}", "snapshots", "--json").json()
    assert [s["id"] for s in via_url] == [snap]
