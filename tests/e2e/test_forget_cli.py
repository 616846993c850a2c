"""forget: policies per group, --dry-run, --json, removal by ID, and the refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_support import Repo, assert_one_line_error


def _ids(snaps: list[dict[str, Any]]) -> list[str]:
    return [s["id"] for s in snaps]


def _make_snapshots(repo: Repo, tmp_path: Path) -> dict[str, str]:
    """Five snapshots of one tiny tree, oldest first: a1 (tagged keep), a2, a3 on host-a;
    b1, b2 on host-b. Returns name -> ID."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_bytes(b"tiny\n")
    made = {}
    for name, host, tags in [
        ("a1", "host-a", ["keep"]),
        ("a2", "host-a", []),
        ("b1", "host-b", []),
        ("a3", "host-a", []),
        ("b2", "host-b", []),
    ]:
        args = ["--host", host, *[a for t in tags for a in ("--tag", t)], str(src)]
        made[name] = repo.backup(*args)["snapshot_id"]
    return made


def test_forget_policy_dry_run_json_and_removal(repo: Repo, tmp_path: Path) -> None:
    ids = _make_snapshots(repo, tmp_path)
    everything = _ids(repo.snapshots())
    assert sorted(everything) == sorted(ids.values())

    # A dry run decides per host and path group, and changes nothing.
    result = repo.run("forget", "--keep-last", "1", "--dry-run", "--json")
    groups = result.json()
    assert [g["group_key"]["host"] for g in groups] == ["host-a", "host-b"]
    a, b = groups
    assert a["group_key"] == {"host": "host-a", "paths": [str(tmp_path / "src")], "tags": None}
    assert [k["id"] for k in a["keep"]] == [ids["a3"]]
    assert a["keep"][0]["reasons"] == ["last snapshot"]
    assert a["keep"][0]["short_id"] == ids["a3"][:8]
    assert {"id", "short_id", "time", "host", "paths", "tags"} <= set(a["remove"][0])
    assert [r["id"] for r in a["remove"]] == [ids["a1"], ids["a2"]]
    assert [k["id"] for k in b["keep"]] == [ids["b2"]]
    assert [r["id"] for r in b["remove"]] == [ids["b1"]]
    assert _ids(repo.snapshots()) == everything

    # The human dry run says the same without removing anything.
    text = repo.run("forget", "--keep-last", "1", "--dry-run").out
    assert "snapshots for host host-a" in text and "last snapshot" in text
    assert "would remove 3 snapshots" in text
    assert _ids(repo.snapshots()) == everything

    # --host limits what is considered.
    repo.run("forget", "--host", "host-b", "--keep-last", "1")
    assert set(_ids(repo.snapshots())) == {ids["a1"], ids["a2"], ids["a3"], ids["b2"]}

    # --keep-tag keeps the tagged snapshot on top of the newest.
    repo.run("forget", "--keep-last", "1", "--keep-tag", "keep")
    assert set(_ids(repo.snapshots())) == {ids["a1"], ids["a3"], ids["b2"]}

    # Without it, the newest of each group is all that remains.
    out = repo.run("forget", "--keep-last", "1").out
    assert "removed 1 snapshots" in out
    left = repo.snapshots()
    assert sorted(_ids(left)) == sorted([ids["a3"], ids["b2"]])
    assert {s["host"] for s in left} == {"host-a", "host-b"}


def test_forget_by_id_removes_exactly_that(repo: Repo, tmp_path: Path) -> None:
    ids = _make_snapshots(repo, tmp_path)
    result = repo.run("forget", ids["a2"][:10])
    assert f"removed snapshot {ids['a2'][:8]}" in result.out
    assert sorted(_ids(repo.snapshots())) == sorted(v for k, v in ids.items() if k != "a2")

    dry = repo.run("forget", ids["b1"], "--dry-run", "--json").json()
    assert [r["id"] for r in dry[0]["remove"]] == [ids["b1"]]
    assert len(repo.snapshots()) == 4

    # One unknown ID among good ones: a usage error, and nothing is removed.
    bad = repo.run("forget", ids["b1"], "0" * 16, check_code=2)
    assert "0000000000000000" in assert_one_line_error(bad)
    assert len(repo.snapshots()) == 4


def test_forget_refusals_are_usage_errors(repo: Repo, tmp_path: Path) -> None:
    ids = _make_snapshots(repo, tmp_path)
    for args in [
        (),  # no policy: refusing, rather than removing everything
        ("--keep-last", "0"),
        ("--dry-run",),
        ("--keep-within", "1w"),
        ("--keep-daily", "-1"),
        ("--group-by", "hostname", "--keep-last", "1"),
        (ids["a1"], "--keep-last", "1"),
        ("--keep-tag", "nonexistent"),  # would leave host-b with nothing
    ]:
        result = repo.run("forget", *args, check_code=2)
        assert_one_line_error(result)
    assert len(repo.snapshots()) == 5


def test_forget_prune(repo: Repo, tmp_path: Path) -> None:
    ids = _make_snapshots(repo, tmp_path)
    result = repo.run("forget", "--keep-last", "1", "--prune", "--json")
    assert len(result.json()) == 2  # stdout stays one JSON document
    assert result.err.strip(), "the prune report goes to stderr under --json"
    assert sorted(_ids(repo.snapshots())) == sorted([ids["a3"], ids["b2"]])
    repo.run("check")
