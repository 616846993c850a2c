"""Exclude rules and files-from lists (``sources/excludes.py``), with restic's semantics.

The pattern cases follow restic's "Excluding files" documentation and the semantics its
filter tests pin down (Go ``filepath.Match`` per component, ``**``, anchoring, parents).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from drengine.core.errors import UsageError
from drengine.sources.excludes import (
    CACHEDIR_SIGNATURE,
    CACHEDIR_TAG,
    Excluder,
    ExcludeRules,
    expand_env,
    parse_size,
    pattern_error,
    read_exclude_file,
    read_files_from,
    read_files_from_raw,
    read_files_from_verbatim,
)


def excluded(patterns: str | tuple[str, ...], path: str | bytes, *, fold: bool = False) -> bool:
    pats = (patterns,) if isinstance(patterns, str) else patterns
    rules = ExcludeRules(ipatterns=pats) if fold else ExcludeRules(patterns=pats)
    return Excluder(rules).path_excluded(os.fsencode(path))


MATCH = [
    # A pattern without "/" at the start matches whole components anywhere.
    ("foo", "/dir1/foo/dir2/file", True),
    ("foo", "/dir/foo", True),
    ("foo", "/dir/foobar", False),
    ("foo", "/dir/barfoo", False),
    ("sdk", "/foo/bar/sdk/test/sdk_foo.go", True),
    ("bar/test.go", "/foo/bar/test.go", True),
    ("baz/*", "/foo/bar/test.go", False),
    ("foo bar star.txt", "/d/foo bar star.txt", True),
    # A leading "/" anchors at the root.
    ("/bin", "/bin/bash", True),
    ("/bin", "/usr/bin/restic", False),
    ("/bar*", "/foo/bar/test.go", False),
    # "*" never crosses "/".
    ("b*ash", "/bin/bash", True),
    ("b*ash", "/bin/ash", False),
    ("/srv/app/*.conf", "/srv/app/a.conf", True),
    ("/srv/app/*.conf", "/srv/app/sub/b.conf", False),
    ("/srv/app/*.conf", "/srv/app/a.conf.d", False),
    ("/foo/*", "/foo", False),
    ("/foo/*", "/foo/baz", True),
    ("/foo/*test.*", "/foo/bar/test.go", False),
    ("/foo/*/test.*", "/foo/bar/test.go", True),
    ("/*/*/baz/test.*", "/foo/bar/baz/test.go", True),
    ("/*/*/bar/test.*", "/foo/bar/test.go", False),
    ("*", "/x", True),
    ("*.go", "/foo/bar/test.go", True),
    ("*.c", "/foo/bar/test.go", False),
    # Component matching: a matched directory takes everything below it.
    ("adduser/examples", "/usr/share/doc/adduser/examples", True),
    ("adduser/examples", "/usr/share/doc/adduser/examples/adduser.conf", True),
    ("adduser/examples", "/usr/share/doc/adduser", False),
    ("adduser/examples", "/usr/share/doc/myadduser/examples", False),
    ("/foo", "/foo/baz", True),
    ("/foo/*", "/foo/baz/qux", True),
    ("*.go", "/src/pkg.go/inner.txt", True),
    # "**" at the start, in the middle, at the end.
    ("**", "/anything/at/all", True),
    ("**/foo", "/foo", True),
    ("**/foo", "/a/b/foo", True),
    ("/**/foo", "/a/b/foo/x", True),
    ("foo/**/bar", "/dir1/foo/dir2/bar/file", True),
    ("foo/**/bar", "/foo/bar/file", True),
    ("foo/**/bar", "/tmp/foo/bar", True),
    ("foo/**/bar", "/tmp/foo/barx", False),
    ("foo/**/bar/*.go", "/home/user/foo/work/special/project/bar/test.go", True),
    ("foo/**/bar/*.go", "/home/user/foo/test.c", False),
    ("foo/**/bar/**/x", "/home/user/foo/blaaa/blaz/bar/shared/work/x", True),
    ("/home/user/repos/**/target", "/home/user/repos/repo1/target", True),
    ("/home/user/repos/**/target", "/home/user/repos/ws/project1/target/x.o", True),
    ("/home/user/repos/**/target", "/home/user/repos/repo1/src", False),
    ("/home/user/repos/**/target", "/home/other/repos/repo1/target", False),
    ("/a/**", "/a", True),
    ("/a/**", "/a/b/c", True),
    ("/a/**", "/ab", False),
    ("/a/**/**/c", "/a/c", True),
    # "?" is one character, never "/".
    ("?.go", "/src/a.go", True),
    ("?.go", "/src/ab.go", False),
    ("a?c", "/a/c", False),
    ("?", "/d/é", True),
    # Character classes in Go's syntax: "^" negates, "!" is an ordinary character.
    ("/home/[uU]ser/?.go", "/home/user/F.go", True),
    ("file[0-9].txt", "/d/file7.txt", True),
    ("file[0-9].txt", "/d/filex.txt", False),
    ("file[^0-9].txt", "/d/filex.txt", True),
    ("file[^0-9].txt", "/d/file7.txt", False),
    ("[!a]x", "/d/!x", True),
    ("[!a]x", "/d/bx", False),
    ("a[!-~]b", "/a/b", False),
    ("foo[^a]bar", "/foo/bar", False),
    ("[\\]]", "/d/]", True),
    # Escapes.
    ("a\\*b", "/d/a*b", True),
    ("a\\*b", "/d/axb", False),
    ("\\!keep", "/d/!keep", True),
    # A trailing "/" is ignored; the pattern is cleaned like a path.
    ("/foo/bar/", "/foo/bar", True),
    ("cache/", "/home/u/cache/x", True),
    ("/foo///bar", "/foo/bar", True),
    ("/foo/../bar", "/bar", True),
    ("/foo/../bar", "/foo/bar", False),
    ("./foo", "/x/foo", True),
    # --exclude is case-sensitive.
    ("tesT.*", "/foo/bar/test.go", False),
    ("*.JPG", "/p/x.jpg", False),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), MATCH)
def test_pattern_table(pattern: str, path: str, expected: bool) -> None:
    assert excluded(pattern, path) is expected


NEGATION = [
    (("*.go", "!main.go"), "/src/main.go", False),
    (("*.go", "!main.go"), "/src/util.go", True),
    # A negation cancels only earlier matches: order matters.
    (("!main.go", "*.go"), "/src/main.go", True),
    (("/foo/*/test.*", "!*.c"), "/foo/bar/test.c", False),
    (("/foo/*/*", "!test.*", "*.c"), "/foo/bar/test.go", False),
    (("/foo/*/*", "!test.*", "*.c"), "/foo/bar/test.c", True),
    (("/**/*", "!/foo", "/foo/*", "!/foo/bar"), "/foo/other/test.go", True),
    (("/**/*", "!/foo", "/foo/*", "!/foo/bar"), "/foo/bar/test.go", False),
    # restic's documented example: exclude everything in $HOME, add back a selection.
    (("/home/u/*", "!/home/u/Documents", "*.pyc"), "/home/u/Music", True),
    (("/home/u/*", "!/home/u/Documents", "*.pyc"), "/home/u/Documents/a.txt", False),
    (("/home/u/*", "!/home/u/Documents", "*.pyc"), "/home/u/Documents/a.pyc", True),
    # The caveat: once a directory is excluded it is not walked, so a negation below it
    # cannot bring anything back (the directory itself stays excluded).
    (("/home/u/Documents", "!/home/u/Documents/keep"), "/home/u/Documents", True),
]


@pytest.mark.parametrize(("patterns", "path", "expected"), NEGATION)
def test_negation(patterns: tuple[str, ...], path: str, expected: bool) -> None:
    assert excluded(patterns, path) is expected


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        ("*.JPG", "/p/x.jpg", True),
        ("*.jpg", "/P/X.JpG", True),
        ("/Home/User/foo", "/home/USER/foo/x", True),
        ("/home/user/[A-C]*", "/home/user/bar", True),
        ("README.md", "/d/readme.mdx", False),
        (("*.TXT", "!KEEP.txt"), "/d/keep.TXT", False),
    ],
)
def test_iexclude_ignores_case(patterns: str | tuple[str, ...], path: str, expected: bool) -> None:
    assert excluded(patterns, path, fold=True) is expected


def test_exclude_and_iexclude_lists_are_independent() -> None:
    # restic rejects by each list on its own: a negation in one cannot cancel the other.
    ex = Excluder(ExcludeRules(patterns=("*.txt",), ipatterns=("!keep.txt",)))
    assert ex.path_excluded(b"/d/keep.txt")
    ex = Excluder(ExcludeRules(patterns=("!keep.txt",), ipatterns=("*.TXT",)))
    assert ex.path_excluded(b"/d/keep.txt")


def test_no_rules_excludes_nothing() -> None:
    rules = ExcludeRules()
    assert rules.empty
    ex = Excluder(rules)
    assert not ex.path_excluded(b"/anything")
    assert not ex.dir_excluded(b"/d", [CACHEDIR_TAG.encode()])
    assert not ex.size_excluded(1 << 40)
    assert not ex.has_dir_rules
    assert not ExcludeRules(exclude_caches=True).empty
    # Empty patterns are ignored, as restic does.
    assert not Excluder(ExcludeRules(patterns=("",))).path_excluded(b"/x")


def test_root_path() -> None:
    assert excluded("/", "/")
    assert excluded("/", "/etc/passwd")
    assert not excluded("/etc", "/")


# ---- non-UTF-8 names ------------------------------------------------------------------------


def test_non_utf8_names_match_byte_for_byte() -> None:
    path = b"/d/caf\xe9.txt"  # Latin-1 "café": not UTF-8
    assert excluded(os.fsdecode(b"caf\xe9.txt"), path)
    assert not excluded("café.txt", path)  # the UTF-8 spelling is other bytes
    assert excluded("caf?.txt", path)  # one undecodable byte is one character, as in Go
    assert excluded("caf*", path)
    assert excluded("/d/*", path)
    assert excluded("/d/??", b"/d/\xff\xfe")
    assert not excluded("/d/?", b"/d/\xff\xfe")
    assert excluded("CAF*", path, fold=True)
    assert excluded("[^a]", b"/d/\xff")


def test_non_utf8_pattern_from_an_exclude_file(tmp_path: Path) -> None:
    f = tmp_path / "ex"
    f.write_bytes(b"/data/caf\xe9\n")
    rules = ExcludeRules(patterns=tuple(read_exclude_file(str(f))))
    assert Excluder(rules).path_excluded(b"/data/caf\xe9/x")
    assert not Excluder(rules).path_excluded("/data/café/x".encode())


# ---- bad patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pattern", ["[", "foo/[bar", "a[", "[]", "[a-]", "*[._]log[.-][0-9]", "a\\", "[^", "!x["]
)
def test_malformed_patterns_are_usage_errors(pattern: str) -> None:
    assert pattern_error(pattern) is not None
    with pytest.raises(UsageError, match="invalid --exclude pattern"):
        Excluder(ExcludeRules(patterns=(pattern,)))
    with pytest.raises(UsageError, match="invalid --iexclude pattern"):
        Excluder(ExcludeRules(ipatterns=(pattern,)))


def test_unbalanced_bracket_message() -> None:
    with pytest.raises(UsageError) as e:
        Excluder(ExcludeRules(patterns=("/srv/[abc",)))
    assert str(e.value) == "invalid --exclude pattern '/srv/[abc': '[' without a closing ']'"


@pytest.mark.parametrize("pattern", ["[a-\\]]", "[\\]]", "[z-a]", "a]", "[[]", "[^^]", "**"])
def test_unusual_but_valid_patterns(pattern: str) -> None:
    assert pattern_error(pattern) is None


# ---- exclude files and the environment ------------------------------------------------------


def test_exclude_file_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/bob")
    monkeypatch.setenv("DRE_SUB", "cache")
    monkeypatch.delenv("DRE_UNSET", raising=False)
    f = tmp_path / "excludes.txt"
    f.write_bytes(
        b"\xef\xbb\xbf# exclude go-files\r\n"
        b"*.go\r\n"
        b"\n"
        b"   \t\n"
        b"  foo/**/bar  \n"
        b"   # an indented comment\n"
        b"$HOME/.cache\n"
        b"/var/${DRE_SUB}/x\n"
        b"price$$tag\n"
        b"$DRE_UNSET/tmp\n"
        b"!keep.go"  # no final newline
    )
    assert read_exclude_file(str(f)) == [
        "*.go",
        "foo/**/bar",
        "/home/bob/.cache",
        "/var/cache/x",
        "price$tag",
        "/tmp",
        "!keep.go",
    ]


def test_exclude_file_utf16(tmp_path: Path) -> None:
    f = tmp_path / "ex16"
    f.write_bytes("\ufeff*.tmp\r\n/ünï/x\r\n".encode("utf-16-le"))
    assert read_exclude_file(str(f)) == ["*.tmp", "/ünï/x"]


def test_unreadable_exclude_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(UsageError) as e:
        read_exclude_file(str(missing), "--iexclude-file")
    assert str(e.value) == f"cannot read --iexclude-file {missing}: No such file or directory"
    with pytest.raises(UsageError, match="cannot read --exclude-file"):
        read_exclude_file(str(tmp_path))  # a directory


def test_bad_pattern_in_exclude_file_names_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "ex"
    f.write_text("# fine\n*.o\n/srv/[abc\n")
    with pytest.raises(UsageError) as e:
        read_exclude_file(str(f))
    assert str(e.value) == (
        f"--exclude-file {f} line 3: invalid pattern '/srv/[abc': '[' without a closing ']'"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$HOME/foo", "/home/bob/foo"),
        ("${HOME}foo", "/home/bobfoo"),
        ("$HOMEfoo", ""),  # the longest name: HOMEfoo, unset
        ("$$", "$"),
        ("a$$b$", "a$b$"),  # a final "$" stays
        ("$/x", "$/x"),  # "$" before no name stays
        ("${}x", "x"),  # bad syntax is eaten, as Go does
        ("${HOME", "HOME"),
        ("$1x", "x"),  # special one-character names
        ("${V_1}", "one"),
        ("no dollars", "no dollars"),
    ],
)
def test_expand_env(text: str, expected: str) -> None:
    assert expand_env(text, {"HOME": "/home/bob", "V_1": "one"}) == expected


# ---- tag files ------------------------------------------------------------------------------


def listed(d: Path) -> list[bytes]:
    return sorted(os.listdir(os.fsencode(d)))


def make_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    for name, data in files.items():
        (d / name).write_bytes(data)
    return d


def test_exclude_caches_keeps_only_the_tag(tmp_path: Path) -> None:
    d = make_dir(
        tmp_path, {CACHEDIR_TAG: CACHEDIR_SIGNATURE.encode() + b"\n# a cache\n", "blob": b"x"}
    )
    (d / "sub").mkdir()
    ex = Excluder(ExcludeRules(exclude_caches=True))
    assert ex.has_dir_rules
    assert ex.dir_kept(os.fsencode(d), listed(d)) == frozenset({CACHEDIR_TAG.encode()})
    assert ex.dir_excluded(os.fsencode(d), listed(d))


def test_exclude_caches_wants_the_signature(tmp_path: Path) -> None:
    warnings: list[str] = []
    d = make_dir(tmp_path, {CACHEDIR_TAG: b"Signature: not the right one", "blob": b"x"})
    ex = Excluder(ExcludeRules(exclude_caches=True), warn=warnings.append)
    assert ex.dir_kept(os.fsencode(d), listed(d)) is None
    assert len(warnings) == 1 and "invalid signature" in warnings[0] and str(d) in warnings[0]
    (d / CACHEDIR_TAG).write_bytes(CACHEDIR_SIGNATURE.encode()[:-1])
    assert ex.dir_kept(os.fsencode(d), listed(d)) is None
    assert "too short" in warnings[1]


def test_tag_file_read_only_when_its_name_is_listed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make_dir(tmp_path, {"a": b"1", "b": b"2"})
    ex = Excluder(ExcludeRules(exclude_caches=True, if_present=(".nobackup:x",)))

    def no_open(*args: object, **kwargs: object) -> int:
        raise AssertionError("a tag file was opened")

    monkeypatch.setattr(os, "open", no_open)
    monkeypatch.setattr(os, "lstat", no_open)
    assert ex.dir_kept(os.fsencode(d), listed(d)) is None


def test_exclude_if_present(tmp_path: Path) -> None:
    d = make_dir(tmp_path, {".nobackup": b"", "data": b"x"})
    path = os.fsencode(d)
    kept = Excluder(ExcludeRules(if_present=(".nobackup",))).dir_kept(path, listed(d))
    assert kept == frozenset({b".nobackup"})
    # "NAME:" has an empty header: presence is enough, as in restic.
    assert Excluder(ExcludeRules(if_present=(".nobackup:",))).dir_excluded(path, listed(d))
    assert not Excluder(ExcludeRules(if_present=(".other",))).dir_excluded(path, listed(d))


def test_exclude_if_present_with_header(tmp_path: Path) -> None:
    d = make_dir(tmp_path, {".skip": b"SKIP-ME: yes\nmore", "data": b"x"})
    path = os.fsencode(d)
    assert Excluder(ExcludeRules(if_present=(".skip:SKIP-ME",))).dir_excluded(path, listed(d))
    # The header may contain ":"; only the first one separates it from the name.
    assert Excluder(ExcludeRules(if_present=(".skip:SKIP-ME: yes",))).dir_excluded(path, listed(d))
    assert not Excluder(ExcludeRules(if_present=(".skip:NOPE",))).dir_excluded(path, listed(d))
    # An empty tag file has no header at all.
    (d / ".skip").write_bytes(b"")
    assert not Excluder(ExcludeRules(if_present=(".skip:SKIP-ME",))).dir_excluded(path, listed(d))


def test_two_tag_rules_firing_keep_nothing(tmp_path: Path) -> None:
    # restic: each rule rejects every name but its own tag, so together they reject all.
    d = make_dir(tmp_path, {"NOFOO": b"", "NOBAR": b"", "x": b"1"})
    ex = Excluder(ExcludeRules(if_present=("NOFOO", "NOBAR")))
    assert ex.dir_kept(os.fsencode(d), listed(d)) == frozenset()
    ex = Excluder(ExcludeRules(if_present=("NOFOO", "NOFOO:")))
    assert ex.dir_kept(os.fsencode(d), listed(d)) == frozenset({b"NOFOO"})


def test_tag_name_with_a_slash(tmp_path: Path) -> None:
    d = make_dir(tmp_path, {"x": b"1"})
    (d / ".git").mkdir()
    (d / ".git" / "HEAD").write_bytes(b"ref: refs/heads/main\n")
    ex = Excluder(ExcludeRules(if_present=(".git/HEAD:ref:",)))
    assert ex.dir_excluded(os.fsencode(d), listed(d))
    assert not ex.dir_excluded(os.fsencode(d), [b"x"])


def test_a_fifo_as_tag_file_does_not_block(tmp_path: Path) -> None:
    d = make_dir(tmp_path, {"x": b"1"})
    os.mkfifo(d / CACHEDIR_TAG)
    warnings: list[str] = []
    ex = Excluder(ExcludeRules(exclude_caches=True), warn=warnings.append)
    assert ex.dir_kept(os.fsencode(d), listed(d)) is None
    assert "not a regular file" in warnings[0]


def test_tag_file_in_a_non_utf8_directory(tmp_path: Path) -> None:
    d = os.path.join(os.fsencode(tmp_path), b"\xff\xfe")
    os.mkdir(d)
    with open(os.path.join(d, b".nobackup\xe9"), "wb") as f:
        f.write(b"HDR")
    ex = Excluder(ExcludeRules(if_present=(os.fsdecode(b".nobackup\xe9:HDR"),)))
    assert ex.dir_kept(d, os.listdir(d)) == frozenset({b".nobackup\xe9"})


@pytest.mark.parametrize(("spec", "why"), [("", "empty"), (":Signature", "no file name")])
def test_bad_if_present_specs(spec: str, why: str) -> None:
    with pytest.raises(UsageError, match=f"invalid --exclude-if-present.*{why}"):
        Excluder(ExcludeRules(if_present=(spec,)))


# ---- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("2048", 2048),
        ("1024b", 1024),
        ("1024B", 1024),
        ("1k", 1024),
        ("10K", 10240),
        ("2M", 2 << 20),
        ("20m", 20 << 20),
        ("3G", 3 << 30),
        ("4T", 4 << 40),
        ("2t", 2 << 40),
        ("9223372036854775807", (1 << 63) - 1),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", " ", "k", "1.5M", "1 k", "1KB", "-1", "foobar", "9223372036854775807k", "1P"]
)
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="invalid --exclude-larger-than"):
        parse_size(text)


def test_size_excluded_is_strictly_larger() -> None:
    ex = Excluder(ExcludeRules(larger_than=1024))
    assert not ex.size_excluded(1024)
    assert ex.size_excluded(1025)
    assert not ex.path_excluded(b"/big")  # the size rule alone never excludes by path
    assert Excluder(ExcludeRules(larger_than=0)).size_excluded(1)


# ---- files-from -----------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "t"
    for rel in ["a/x.txt", "a/.hidden.txt", "a/y.log", "b/x.txt", "b/we*ird", "b/weXird"]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"-")
    (root / "a" / "deep").mkdir()
    (root / "a" / "deep" / "x.txt").write_bytes(b"-")
    return root


def test_files_from_globs(tree: Path, tmp_path: Path) -> None:
    lst = tmp_path / "list"
    lst.write_text(
        "# things to back up\n"
        "\n"
        f"  {tree}/a/*.txt  \n"
        f"{tree}/*/x.txt\n"
        f"{tree}/b\n"
        f"{tree}/b/we\\*ird\n"
        f"{tree}/nothing*\n"
        f"{tree}/missing\n"
    )
    warnings: list[str] = []
    got = read_files_from(str(lst), warn=warnings.append)
    t = str(tree)
    assert got == [
        f"{t}/a/.hidden.txt",  # Go's Glob matches hidden names with "*"
        f"{t}/a/x.txt",
        f"{t}/a/x.txt",
        f"{t}/b/x.txt",
        f"{t}/b",
        f"{t}/b/we*ird",
    ]
    assert len(warnings) == 2
    assert "nothing*" in warnings[0] and "does not match any files" in warnings[0]
    assert "missing" in warnings[1]


def test_files_from_relative_and_double_star(
    tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tree)
    lst = tmp_path / "list"
    lst.write_text("a/*.log\n./a/*.log\n**/x.txt\n")
    # "**" has no special meaning in a files-from glob: it is "*", one level.
    assert read_files_from(str(lst)) == ["a/y.log", "a/y.log", "a/x.txt", "b/x.txt"]


def test_files_from_stdin(tree: Path) -> None:
    stdin = io.BytesIO(f"{tree}/a/y.log\n".encode())
    assert read_files_from("-", stdin=stdin) == [f"{tree}/a/y.log"]


def test_files_from_bad_pattern(tmp_path: Path) -> None:
    lst = tmp_path / "list"
    lst.write_text("/ok\n/srv/[abc\n")
    with pytest.raises(UsageError) as e:
        read_files_from(str(lst))
    assert str(e.value) == (
        f"--files-from {lst} line 2: invalid pattern '/srv/[abc': '[' without a closing ']'"
    )
    with pytest.raises(UsageError, match=f"cannot read --files-from {tmp_path}/none"):
        read_files_from(str(tmp_path / "none"))


def test_files_from_verbatim(tmp_path: Path) -> None:
    lst = tmp_path / "list"
    lst.write_bytes(b"/a/# not a comment\r\n\n  /b/spaces kept  \n/c/*.txt\n/d/caf\xe9")
    assert read_files_from_verbatim(str(lst)) == [
        "/a/# not a comment",
        "  /b/spaces kept  ",
        "/c/*.txt",
        os.fsdecode(b"/d/caf\xe9"),
    ]
    assert read_files_from_verbatim("-", stdin=io.BytesIO(b"/x\n")) == ["/x"]


def test_files_from_raw(tmp_path: Path) -> None:
    lst = tmp_path / "list"
    lst.write_bytes(b"/a/new\nline\0/b/caf\xe9\0 /c/ spaced \0")
    got = read_files_from_raw(str(lst))
    assert [os.fsencode(p) for p in got] == [b"/a/new\nline", b"/b/caf\xe9", b" /c/ spaced "]
    lst.write_bytes(b"")
    assert read_files_from_raw(str(lst)) == []
    lst.write_bytes(b"/a\0/b")
    with pytest.raises(UsageError, match="terminating NUL"):
        read_files_from_raw(str(lst))
    lst.write_bytes(b"/a\0\0/b\0")
    with pytest.raises(UsageError, match=f"--files-from-raw {lst}: entry 2 is empty"):
        read_files_from_raw(str(lst))
