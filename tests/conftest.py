"""Fixtures shared by every test folder: a cheap in-memory repository and a file-tree maker.

Kept small on purpose; folder-specific helpers belong in that folder's own conftest. Test
modules should take these values as fixtures rather than import this file (pytest may load
several ``conftest`` modules under the same name).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Union

import pytest

from drengine.crypto.keys import KdfParams
from drengine.repository.config import Settings
from drengine.repository.repo import Repository
from drengine.storage.base import Backend
from drengine.storage.memory import MemoryBackend

RepoFactory = Callable[..., Repository]
TreeSpec = Mapping[str, Union[bytes, "TreeSpec"]]


@pytest.fixture(scope="session")
def repo_password() -> bytes:
    return b"unit-test password"


@pytest.fixture(scope="session")
def cheap_kdf() -> KdfParams:
    """Argon2id at 1 MiB and one pass: a key file opens in well under a millisecond."""
    return KdfParams(memory_kib=1024, iterations=1)


@pytest.fixture(scope="session")
def small_settings() -> Settings:
    """Chunks of 1-16 KiB and 32 KiB packs: a few hundred KiB give many chunks and packs."""
    return Settings(
        chunker_min=1024,
        chunker_avg=4096,
        chunker_max=16384,
        compression_level=3,
        pack_size=32 * 1024,
    )


@pytest.fixture
def drengine_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DRENGINE_CACHE_DIR (the files cache) into the test's tmp dir."""
    path = tmp_path / "drengine-cache"
    path.mkdir()
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(path))
    return path


@pytest.fixture
def repo_factory(
    drengine_cache_dir: Path, repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> RepoFactory:
    """``repo_factory(backend=None, password=None, **settings) -> Repository``.

    A new repository with cheap Argon2 and ``small_settings`` (any field overridable) on a
    fresh ``MemoryBackend`` unless a backend is given. Safe to call many times in one test.
    """

    def make(
        backend: Backend | None = None, password: bytes | None = None, **settings: int
    ) -> Repository:
        fields = {**small_settings.__dict__, **settings}
        return Repository.init(
            backend if backend is not None else MemoryBackend(),
            password if password is not None else repo_password,
            Settings(**fields),
            cheap_kdf,
        )

    return make


@pytest.fixture
def mem_repo(repo_factory: RepoFactory) -> Repository:
    """A new repository on a ``MemoryBackend``; its password is the ``repo_password`` fixture."""
    return repo_factory()


def _write_tree(root: Path, spec: TreeSpec) -> dict[str, bytes]:
    files: dict[str, bytes] = {}
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, bytes | bytearray):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(value)
            files[name] = bytes(value)
        else:
            for rel, content in _write_tree(path, value).items():
                files[f"{name}/{rel}"] = content
    return files


@pytest.fixture
def make_tree() -> Callable[[Path, TreeSpec], dict[str, bytes]]:
    """``make_tree(root, {"a": b"..", "d": {"b": b".."}})`` creates the files and directories
    and returns every file as {"/"-separated path relative to root: content}."""
    return _write_tree
