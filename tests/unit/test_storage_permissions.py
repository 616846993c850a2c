"""What drengine creates is private whatever the umask: directories 0700, files 0600; and the
cache root is tagged as a cache directory (https://bford.info/cachedir/)."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest

from drengine.core import cache_dir
from drengine.core.errors import DrengineError
from drengine.core.fsutil import make_dirs
from drengine.storage.cache import CachingBackend
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend


@pytest.fixture
def umask_000() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def _modes_below(top: Path) -> dict[str, int]:
    return {p.relative_to(top).as_posix(): _mode(p) for p in top.rglob("*")}


def test_make_dirs_creates_every_component_0700(tmp_path: Path, umask_000: None) -> None:
    assert make_dirs(tmp_path / "a" / "b" / "c") is True
    assert _modes_below(tmp_path) == {"a": 0o700, "a/b": 0o700, "a/b/c": 0o700}
    assert make_dirs(tmp_path / "a" / "b") is False  # exists: left alone


def test_make_dirs_leaves_existing_directories_alone(tmp_path: Path, umask_000: None) -> None:
    (tmp_path / "shared").mkdir(mode=0o755)
    make_dirs(tmp_path / "shared" / "mine")
    assert _mode(tmp_path / "shared") == 0o755
    assert _mode(tmp_path / "shared" / "mine") == 0o700


def test_make_dirs_despite_a_umask_that_takes_owner_bits(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        make_dirs(tmp_path / "x" / "y")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "x") == 0o700 and _mode(tmp_path / "x" / "y") == 0o700


def test_make_dirs_with_concurrent_creators(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        try:
            make_dirs(tmp_path / "p" / "q" / "r")
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and (tmp_path / "p" / "q" / "r").is_dir()


def test_local_repository_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    root = tmp_path / "backups" / "host1"  # neither exists yet
    backend = LocalBackend(root)
    backend.put("data/ab/abcd", b"pack")
    backend.put_if_absent("locks/l1", b"lock")
    backend.put("config", b"cfg")
    assert _mode(tmp_path / "backups") == 0o700
    assert _modes_below(root) | {".": _mode(root)} == {
        ".": 0o700,
        "data": 0o700,
        "data/ab": 0o700,
        "data/ab/abcd": 0o600,
        "locks": 0o700,
        "locks/l1": 0o600,
        "config": 0o600,
    }


def test_object_cache_is_private_under_umask_000(tmp_path: Path, umask_000: None) -> None:
    inner = MemoryBackend()
    data = b"a snapshot"
    name = "snapshots/" + blake3.blake3(data).hexdigest()
    inner.put(name, data)
    top = tmp_path / "cache"
    cache = CachingBackend(inner, top / "repo-id" / "objects", ("snapshots/",))
    assert cache.get(name) == data
    modes = _modes_below(top)
    assert modes.pop(f"repo-id/objects/{name}") == 0o600
    assert set(modes.values()) == {0o700}, modes


@pytest.fixture
def cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("DRENGINE_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "drengine"


def test_cache_root_and_its_parents_are_private(cache_env: Path, umask_000: None) -> None:
    path = cache_dir.repo_cache_dir("0123abcd")
    assert path == cache_env / "0123abcd"
    for p in (cache_env.parent, cache_env, path):
        assert _mode(p) == 0o700, p


def test_cache_root_carries_a_cachedir_tag(cache_env: Path) -> None:
    assert cache_dir.cache_root() == cache_env
    assert not cache_env.exists()  # cache_root only names it
    cache_dir.repo_cache_dir("0123abcd")
    tag = (cache_env / "CACHEDIR.TAG").read_bytes()
    first, second = tag.split(b"\n")[:2]
    assert first == b"Signature: 8a477f597d28d172789f06886806bc55"
    assert second.startswith(b"#")
    assert tag.startswith(cache_dir.CACHEDIR_SIGNATURE)
    assert _mode(cache_env / "CACHEDIR.TAG") == 0o600
    cache_dir.repo_cache_dir("other")  # a second run leaves it as it is
    assert (cache_env / "CACHEDIR.TAG").read_bytes() == tag
    assert sorted(p.name for p in cache_env.iterdir()) == ["0123abcd", "CACHEDIR.TAG", "other"]


def test_default_cache_root_made_by_an_older_version_gets_tagged(cache_env: Path) -> None:
    (cache_env / "0123abcd").mkdir(parents=True)
    cache_dir.repo_cache_dir("0123abcd")
    assert (cache_env / "CACHEDIR.TAG").exists()


def test_cache_dir_env_creates_and_tags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(tmp_path / "mine" / "cache"))
    cache_dir.repo_cache_dir("r1")
    assert (tmp_path / "mine" / "cache" / "CACHEDIR.TAG").exists()


def test_existing_directory_named_by_env_is_not_tagged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The user may point DRENGINE_CACHE_DIR at a directory holding other things: a tag would
    # silently exclude all of it from their backups.
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(tmp_path))
    cache_dir.repo_cache_dir("r1")
    assert not (tmp_path / "CACHEDIR.TAG").exists()


def test_uncreatable_cache_dir_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_bytes(b"not a directory")
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(tmp_path / "file" / "cache"))
    with pytest.raises(DrengineError, match="cannot create the cache directory"):
        cache_dir.repo_cache_dir("r1")
