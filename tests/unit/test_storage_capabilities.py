"""Capabilities are declared once per backend and every wrapper forwards them, together with
the optional operations, to the backend it wraps (``drengine/storage/base.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from drengine.core.errors import UsageError
from drengine.storage.base import Backend, BackendDefaults, Capabilities, TemporaryFile
from drengine.storage.cache import CachingBackend
from drengine.storage.faults import FaultyBackend
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend

UNTIL = datetime(2030, 1, 2, tzinfo=UTC)


class Recording(MemoryBackend):
    """A backend with every capability, recording the optional calls it receives."""

    capabilities = Capabilities(remote=True, object_lock=True, temporary_files=True)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[object, ...]] = []

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        self.seen.append(("set_retention", mode, days, exempt))

    def object_lock_enabled(self) -> bool:
        self.seen.append(("object_lock_enabled",))
        return True

    def retained_until(self, name: str) -> datetime | None:
        self.seen.append(("retained_until", name))
        return UNTIL

    def list_temporary(self) -> list[TemporaryFile]:
        self.seen.append(("list_temporary",))
        return [TemporaryFile("data/.tmp-1", 3, 1.0)]

    def remove_temporary(self, name: str) -> None:
        self.seen.append(("remove_temporary", name))


_WRAPPERS: dict[str, Callable[[Backend, Path], Backend]] = {
    "retry": lambda inner, tmp: RetryingBackend(inner),
    "cache": lambda inner, tmp: CachingBackend(inner, tmp, ("index/",)),
    "faults": lambda inner, tmp: FaultyBackend(inner),
    "all": lambda inner, tmp: CachingBackend(
        RetryingBackend(FaultyBackend(inner)), tmp, ("index/",)
    ),
}


@pytest.mark.parametrize("wrap", sorted(_WRAPPERS))
def test_wrappers_forward_capabilities_and_optional_operations(wrap: str, tmp_path: Path) -> None:
    inner = Recording()
    b = _WRAPPERS[wrap](inner, tmp_path)
    assert isinstance(b, Backend)
    assert b.capabilities is inner.capabilities
    assert getattr(b, "remote", False) is True  # the old spelling, read with getattr
    b.set_retention("GOVERNANCE", 7, ("locks/",))
    assert b.object_lock_enabled() is True
    assert b.retained_until("data/ab/abcd") == UNTIL
    assert list(b.list_temporary()) == [TemporaryFile("data/.tmp-1", 3, 1.0)]
    b.remove_temporary("data/.tmp-1")
    assert inner.seen == [
        ("set_retention", "GOVERNANCE", 7, ("locks/",)),
        ("object_lock_enabled",),
        ("retained_until", "data/ab/abcd"),
        ("list_temporary",),
        ("remove_temporary", "data/.tmp-1"),
    ]


@pytest.mark.parametrize("wrap", sorted(_WRAPPERS))
def test_wrappers_keep_a_plain_backend_plain(wrap: str, tmp_path: Path) -> None:
    b = _WRAPPERS[wrap](MemoryBackend(), tmp_path)
    assert b.capabilities == Capabilities()
    assert getattr(b, "remote", True) is False
    with pytest.raises(UsageError, match="memory: does not support S3 Object Lock"):
        b.set_retention("GOVERNANCE", 1)
    assert b.object_lock_enabled() is False
    assert b.retained_until("data/x") is None


def test_declared_capabilities() -> None:
    assert MemoryBackend().capabilities == Capabilities()
    assert LocalBackend("/nonexistent").capabilities == Capabilities(temporary_files=True)
    assert MemoryBackend.capabilities is MemoryBackend().capabilities  # declared on the class


def test_defaults_of_the_optional_operations() -> None:
    b = MemoryBackend()
    assert isinstance(b, BackendDefaults)
    with pytest.raises(UsageError, match="does not support S3 Object Lock"):
        b.set_retention("COMPLIANCE", 30)
    assert b.object_lock_enabled() is False
    assert b.retained_until("index/i1") is None
    assert b.list_temporary() == []
    b.remove_temporary("data/.tmp-1")  # nothing there: nothing to do
    with pytest.raises(ValueError):
        b.retained_until("../x")  # names are still checked
    with pytest.raises(ValueError):
        b.remove_temporary("/abs")


def test_capabilities_are_immutable() -> None:
    caps = Capabilities(remote=True)
    with pytest.raises(AttributeError):
        caps.remote = False  # type: ignore[misc]
    assert caps == Capabilities(remote=True, object_lock=False, temporary_files=False)
