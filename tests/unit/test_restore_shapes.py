"""Tree shapes: any depth, paths beyond PATH_MAX, and shared subtrees that would expand to
more entries than any stored tree holds (ls and restore refuse those in one sentence)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_restore_support import Builder, chain, read_at, remove_tree, walk_fd

from drengine.core.errors import IntegrityError
from drengine.core.model import Node
from drengine.engine import tree_paths
from drengine.engine.restore import run_restore
from drengine.engine.tree_paths import list_entries
from drengine.repository.repo import Repository


@pytest.mark.parametrize(
    ("depth", "name"),
    [
        (600, b"d"),  # 600 levels
        (1500, b"d"),  # deeper than Python's recursion limit
        (20, b"n" * 250),  # 5,000-byte paths: beyond PATH_MAX (4096)
        (600, b"level-%d"),  # both: 600 levels, ~5,400-byte paths
    ],
    ids=["600-levels", "1500-levels", "path-over-4096", "600-levels-over-4096"],
)
def test_deep_and_long_paths_list_and_restore(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, depth: int, name: bytes
) -> None:
    b = Builder(mem_repo, repo_password)
    leaf = [b.file(b"leaf.txt", b"at the bottom\n"), b.dir(b"empty")]
    node: Node = b.dir(name.replace(b"%d", b"%d" % depth), leaf)
    for level in range(depth - 1, 0, -1):
        node = b.dir(name.replace(b"%d", b"%d" % level), [node])
    reader, snap = b.snapshot([node])

    listed = list(list_entries(reader, snap))
    assert len(listed) == depth + 2
    deepest = listed[-1][0]  # "empty" sorts before "leaf.txt"
    assert deepest.endswith(b"/leaf.txt") and deepest.count(b"/") == depth + 1
    if name == b"n" * 250:
        assert len(deepest) > 4096

    target = tmp_path / "target"
    try:
        result = run_restore(reader, snap, str(target))
        assert result.errors == []
        assert (result.files, result.dirs) == (1, depth + 1)
        leaves = [(p, st) for p, st, _ in walk_fd(target) if p.endswith(b"leaf.txt")]
        assert [p for p, _ in leaves] == [deepest.lstrip(b"/")]
        assert leaves[0][1].st_size == len(b"at the bottom\n")
        assert leaves[0][1].st_mtime_ns == leaf[0].mtime_ns
        for p, st, fd in walk_fd(target):
            if p.endswith(b"leaf.txt"):
                assert read_at(fd, b"leaf.txt") == b"at the bottom\n"
            elif p.endswith(b"empty"):
                assert st.st_mode & 0o777 == 0o755
    finally:
        if target.exists():
            remove_tree(target)  # pytest's own cleanup recurses per level


def test_walk_order_is_depth_first_preorder(mem_repo: Repository, repo_password: bytes) -> None:
    b = Builder(mem_repo, repo_password)
    a = b.dir(b"a", [b.dir(b"b", [b.file(b"c", b"1")]), b.file(b"d", b"2")])
    reader, snap = b.snapshot([a, b.file(b"e", b"3")])
    paths = [p for p, _ in list_entries(reader, snap)]
    assert paths == [b"/a", b"/a/b", b"/a/b/c", b"/a/d", b"/e"]
    assert [p for p, _ in list_entries(reader, snap, "/a/b")] == [b"/a/b", b"/a/b/c"]
    assert [p for p, _ in list_entries(reader, snap, "/e")] == [b"/e"]


def _doubling(b: Builder, levels: int) -> bytes:
    """T0 holds a file; T(k) holds two directories that are both T(k-1): 2**levels paths."""
    tree = b.tree([b.file(b"f", b"x")])
    for _ in range(levels):
        tree = b.tree([b.dir_of(b"a", tree), b.dir_of(b"b", tree)])
    return tree


def test_shared_subtree_bomb_is_refused(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = Builder(mem_repo, repo_password)
    bomb = _doubling(b, 40)
    reader, snap = b.snapshot([b.dir_of(b"bomb", bomb), b.file(b"ok", b"fine")])
    loads: list[bytes] = []
    real = Repository.load_tree

    def counting(self: Repository, tree_id: bytes) -> list[Node]:
        loads.append(tree_id)
        return real(self, tree_id)

    monkeypatch.setattr(Repository, "load_tree", counting)
    expected = r"would expand to 3,298,534,883,328 entries from 83 stored ones"
    with pytest.raises(IntegrityError, match=expected):
        list(list_entries(reader, snap))
    assert len(loads) == len(set(loads)) <= 43  # each distinct tree loaded once
    with pytest.raises(IntegrityError, match="refusing to walk /bomb/a"):
        list(list_entries(reader, snap, "/bomb/a"))
    target = tmp_path / "target"
    with pytest.raises(IntegrityError, match="refusing to walk snapshot"):
        run_restore(reader, snap, str(target))
    assert not target.exists()
    # The part asked for decides: what is outside the bomb lists and restores.
    assert [p for p, _ in list_entries(reader, snap, "/ok")] == [b"/ok"]
    result = run_restore(reader, snap, str(target), ["/ok"])
    assert result.errors == [] and (target / "ok").read_bytes() == b"fine"


def test_legit_sharing_still_works(
    mem_repo: Repository, repo_password: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """100 identical node_modules deduplicate to one tree: 100x expansion is fine, and a
    small bound still admits a moderate doubling chain."""
    b = Builder(mem_repo, repo_password)
    modules = b.tree([b.file(b"m%d.js" % i, b"module %d" % i) for i in range(50)])
    projects = [b.dir(b"p%03d" % i, [b.dir_of(b"node_modules", modules)]) for i in range(100)]
    reader, snap = b.snapshot([b.dir(b"projects", projects), b.dir_of(b"pow", _doubling(b, 8))])
    assert len(list(list_entries(reader, snap))) == 1 + 100 * 52 + 1 + 3 * 2**8 - 2
    result = run_restore(reader, snap, str(tmp_path / "t"))
    assert result.errors == []
    assert result.files == 100 * 50 + 2**8
    assert (tmp_path / "t/projects/p042/node_modules/m7.js").read_bytes() == b"module 7"
    # The same snapshot against a bound of 1000 per stored entry but no floor: 5,000 file
    # entries from ~200 stored are far below it.
    monkeypatch.setattr(tree_paths, "EXPANSION_FLOOR", 0)
    assert len(list(list_entries(reader, snap))) > 5000


def test_expansion_counts_and_bound_rule(mem_repo: Repository, repo_password: bytes) -> None:
    b = Builder(mem_repo, repo_password)
    root = _doubling(b, 12)
    reader, _ = b.snapshot(root)
    trees = tree_paths.TreeCache(reader)
    total, stored = tree_paths.expansion(trees, [root])
    assert (total, stored) == (2 * (2**12 - 1) + 2**12, 2 * 12 + 1)
    assert tree_paths.check_expansion(trees, [root], "x") == total


def test_chain_helper_depth(mem_repo: Repository, repo_password: bytes) -> None:
    b = Builder(mem_repo, repo_password)
    reader, snap = b.snapshot([chain(b, 3, b"c", [])])
    assert [p for p, _ in list_entries(reader, snap)] == [b"/c", b"/c/c", b"/c/c/c"]
