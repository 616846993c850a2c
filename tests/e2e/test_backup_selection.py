"""backup: what the exclude and files-from options put in a snapshot, seen through ``ls --json``.

Semantics are restic's: patterns match the absolute path, ``*`` stays in one component, ``**``
spans directories, tag-file rules keep the directory and its tag file, and the paths given on
the command line are backed up whatever the excludes say.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from e2e_support import Repo, assert_one_line_error

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def stored(repo: Repo, snapshot_id: str, root: Path | bytes) -> set[bytes]:
    """Paths in the snapshot below ``root``, relative to it, as exact bytes."""
    prefix = os.fsencode(root) + b"/"
    found = set()
    for e in repo.ls(snapshot_id):
        raw = base64.b64decode(e["path_raw"]) if "path_raw" in e else e["path"].encode()
        if raw.startswith(prefix):
            found.add(raw[len(prefix) :])
    return found


def paths(*rels: str) -> set[bytes]:
    return {r.encode() for r in rels}


def test_anchored_and_component_patterns(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "srv/app/a.conf": b"a",
            "srv/app/keep.txt": b"k",
            "srv/app/sub/b.conf": b"b",
            "usr/share/doc/adduser/examples/adduser.local.conf": b"e",
            "usr/share/doc/adduser/README": b"r",
            "usr/share/doc/myadduser/examples/x": b"x",
            "node_modules/m.js": b"m",
            "lib/node_modules/n/i.js": b"n",
            "bin/bash": b"b",
            "bin/ash": b"a",
        },
    )
    snap = repo.backup(
        str(src),
        "--exclude",
        f"{src}/srv/app/*.conf",
        "-e",
        "adduser/examples",
        "--exclude",
        "node_modules/",
        "-e",
        "b*ash",
    )["snapshot_id"]
    assert stored(repo, snap, src) == paths(
        "srv",
        "srv/app",
        "srv/app/keep.txt",
        "srv/app/sub",
        "srv/app/sub/b.conf",
        "usr",
        "usr/share",
        "usr/share/doc",
        "usr/share/doc/adduser",
        "usr/share/doc/adduser/README",
        "usr/share/doc/myadduser",
        "usr/share/doc/myadduser/examples",
        "usr/share/doc/myadduser/examples/x",
        "lib",
        "bin",
        "bin/ash",
    )


def test_double_star_and_negation(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "repos/repo1/target/a.o": b"o",
            "repos/repo1/src/a.rs": b"s",
            "repos/ws/project1/target/b.o": b"o",
            "repos/ws/project1/src/b.rs": b"s",
            "home/Documents/letter.txt": b"l",
            "home/Documents/old.pyc": b"p",
            "home/Music/song.ogg": b"m",
            "home/code/main.py": b"c",
        },
    )
    snap = repo.backup(
        str(src),
        "-e",
        f"{src}/repos/**/target",
        "-e",
        f"{src}/home/*",
        "-e",
        f"!{src}/home/Documents",
        "-e",
        f"!{src}/home/code",
        "-e",
        "*.pyc",
    )["snapshot_id"]
    assert stored(repo, snap, src) == paths(
        "repos",
        "repos/repo1",
        "repos/repo1/src",
        "repos/repo1/src/a.rs",
        "repos/ws",
        "repos/ws/project1",
        "repos/ws/project1/src",
        "repos/ws/project1/src/b.rs",
        "home",
        "home/Documents",
        "home/Documents/letter.txt",
        "home/code",
        "home/code/main.py",
    )


def test_iexclude(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {"a.jpg": b"1", "B.JpG": b"2", "c.png": b"3", "Cache/x": b"4", "cache2/y": b"5"},
    )
    snap = repo.backup(str(src), "--iexclude", "*.JPG", "--iexclude", f"{src}/cache")["snapshot_id"]
    assert stored(repo, snap, src) == paths("c.png", "cache2", "cache2/y")


def test_exclude_files_with_comments_and_environment(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "skipme/a": b"a",
            "skipme2": b"b",
            "price$tag": b"c",
            "notes.TMP": b"d",
            "notes.txt": b"e",
            "main.go": b"f",
            "keep.go": b"g",
        },
    )
    ex = tmp_path / "excludes.txt"
    ex.write_text(
        "# exclude go files, but not keep.go\n"
        "*.go\n"
        "\n"
        "   !keep.go   \n"
        "$SRC/$DRE_SKIP\n"
        "${DRE_SKIP}2\n"
        "price$$tag\n"
    )
    iex = tmp_path / "iexcludes.txt"
    iex.write_text("# case does not matter here\n*.tmp\n")
    snap = repo.backup(
        str(src),
        "--exclude-file",
        str(ex),
        "--iexclude-file",
        str(iex),
        env_extra={"DRE_SKIP": "skipme", "SRC": str(src)},
    )["snapshot_id"]
    assert stored(repo, snap, src) == paths("notes.txt", "keep.go")


def test_exclude_caches_keeps_the_directory_and_its_tag(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "cache/CACHEDIR.TAG": SIGNATURE + b"\n# This file is a cache directory tag.\n",
            "cache/blob": b"b",
            "cache/sub/deeper": b"d",
            "fake/CACHEDIR.TAG": b"Signature: something else\n",
            "fake/blob": b"b",
            "plain/file": b"f",
        },
    )
    snap = repo.backup(str(src), "--exclude-caches")["snapshot_id"]
    assert stored(repo, snap, src) == paths(
        "cache",
        "cache/CACHEDIR.TAG",
        "fake",
        "fake/CACHEDIR.TAG",
        "fake/blob",
        "plain",
        "plain/file",
    )


def test_exclude_if_present(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "a/.nobackup": b"",
            "a/data": b"1",
            "a/sub/more": b"2",
            "b/MARK": b"skip: this one\n",
            "b/data": b"3",
            "c/MARK": b"keep this one\n",
            "c/data": b"4",
        },
    )
    snap = repo.backup(
        str(src), "--exclude-if-present", ".nobackup", "--exclude-if-present", "MARK:skip:"
    )["snapshot_id"]
    assert stored(repo, snap, src) == paths(
        "a", "a/.nobackup", "b", "b/MARK", "c", "c/MARK", "c/data"
    )


def test_exclude_larger_than(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {"small": b"x" * 10, "exact": b"x" * 1024, "over": b"x" * 1025, "big": b"x" * 5000},
    )
    snap = repo.backup(str(src), "--exclude-larger-than", "1k")["snapshot_id"]
    assert stored(repo, snap, src) == paths("small", "exact")


def test_paths_given_are_backed_up_whatever_the_excludes(repo: Repo, tmp_path: Path) -> None:
    # restic (since 0.19) never applies excludes to the paths named on the command line;
    # what lies inside them is still filtered.
    src = make_tree(tmp_path / "src", {"big.tmp": b"x" * 5000, "dir.tmp/in.tmp": b"i"})
    snap = repo.backup(
        str(src / "big.tmp"),
        str(src / "dir.tmp"),
        "--exclude",
        "*.tmp",
        "--exclude-larger-than",
        "1k",
    )["snapshot_id"]
    assert stored(repo, snap, src) == paths("big.tmp", "dir.tmp")


def test_files_from_variants(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(
        tmp_path / "src",
        {
            "logs/a.log": b"a",
            "logs/b.log": b"b",
            "logs/c.txt": b"c",
            "# not a comment": b"h",
            " spaced ": b"s",
            "star*": b"*",
            "starX": b"X",
            "new\nline": b"n",
            "arg": b"g",
            "unlisted": b"u",
        },
    )
    latin = os.path.join(os.fsencode(src), b"caf\xe9")
    with open(latin, "wb") as f:
        f.write(b"latin-1 name")
    globs = tmp_path / "globs"
    globs.write_text(f"# logs\n\n  {src}/logs/*.log  \n{src}/nothing-here*\n")
    verbatim = tmp_path / "verbatim"
    verbatim.write_text(f"{src}/# not a comment\n\n{src}/ spaced \n{src}/star*\n")
    raw = tmp_path / "raw"
    raw.write_bytes(os.fsencode(src) + b"/new\nline\0" + latin + b"\0")
    result = repo.run(
        "backup",
        "--json",
        "--files-from",
        str(globs),
        "--files-from-verbatim",
        str(verbatim),
        "--files-from-raw",
        str(raw),
        str(src / "arg"),
    )
    assert "nothing-here" in result.err  # a glob matching nothing is skipped with a warning
    snap = result.json()["snapshot_id"]
    assert stored(repo, snap, src) == {
        b"logs",
        b"logs/a.log",
        b"logs/b.log",
        b"# not a comment",
        b" spaced ",
        b"star*",
        b"new\nline",
        b"caf\xe9",
        b"arg",
    }


def test_files_from_stdin_without_path_arguments(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"one": b"1", "two": b"2"})
    result = repo.run("backup", "--json", "--files-from", "-", input=f"{src}/one\n".encode())
    assert stored(repo, result.json()["snapshot_id"], src) == paths("one")


def test_excludes_match_names_that_are_not_utf8(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"ok.txt": b"1"})
    base = os.fsencode(src)
    for name in (b"caf\xe9.tmp", b"caf\xe9", b"\xff\xfe-keep"):
        with open(os.path.join(base, name), "wb") as f:
            f.write(name)
    ex = tmp_path / "ex"
    ex.write_bytes(base + b"/caf\xe9\n")
    snap = repo.backup(str(src), "--exclude", "*.tmp", "--exclude-file", str(ex))["snapshot_id"]
    assert stored(repo, snap, src) == {b"ok.txt", b"\xff\xfe-keep"}


def test_no_paths_at_all_is_a_usage_error(repo: Repo, tmp_path: Path) -> None:
    result = repo.run("backup", check_code=2)
    assert "nothing to back up" in assert_one_line_error(result)
    empty = tmp_path / "empty"
    empty.write_text("# nothing listed\n")
    result = repo.run("backup", "--files-from", str(empty), check_code=2)
    assert "nothing to back up" in assert_one_line_error(result)
    assert repo.snapshots() == []


def test_bad_exclude_options_are_usage_errors(repo: Repo, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"f": b"1"})
    missing = tmp_path / "missing.txt"
    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("*.o\n/srv/[abc\n")
    cases = [
        (["--exclude", "/srv/[abc"], "/srv/[abc"),
        (["--iexclude", "a\\"], "--iexclude"),
        (["--exclude-file", str(missing)], str(missing)),
        (["--exclude-file", str(bad_file)], f"{bad_file} line 2"),
        (["--exclude-larger-than", "12x"], "12x"),
        (["--exclude-if-present", ":header"], "--exclude-if-present"),
        (["--files-from", str(missing)], str(missing)),
        (["--files-from-raw", str(bad_file)], "NUL"),
    ]
    for args, needle in cases:
        result = repo.run("backup", str(src), *args, check_code=2)
        assert needle in assert_one_line_error(result), result.describe()
    assert repo.snapshots() == []
