"""Metadata someone who can write the storage plants to slow or break every command: costly
key files, settings beyond what the format allows, unreadable locks."""

from __future__ import annotations

import json

import pytest

from drengine.core.errors import IntegrityError, UsageError
from drengine.crypto import keys as keys_module
from drengine.crypto.keys import KdfParams, check_kdf, make_key_file
from drengine.repository import layout
from drengine.repository.config import Settings
from drengine.repository.locks import Locks, acquire
from drengine.repository.repo import Repository


def test_cheap_key_files_are_tried_first(
    mem_repo: Repository, repo_password: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A key file of another password that costs 64x more, and sorts first by name.
    (legit,) = [o.name for o in mem_repo.backend.list(layout.KEYS)]
    base = json.loads(
        make_key_file(
            keys_module.MasterKeys.generate(), b"another", KdfParams(1024, 1), {"created": ""}
        )
    )
    base["kdf"]["memory_kib"] = 64 * 1024
    for n in range(10_000):
        base["created"] = str(n)
        costly = json.dumps(base).encode()
        if layout.KEYS + layout.object_id(costly) < legit:
            break
    mem_repo.backend.put(layout.KEYS + layout.object_id(costly), costly)
    tried: list[int] = []
    real = KdfParams.derive

    def derive(self: KdfParams, password: bytes, salt: bytes) -> bytes:
        tried.append(self.memory_kib)
        return real(self, password, salt)

    monkeypatch.setattr(KdfParams, "derive", derive)
    Repository.open(mem_repo.backend, repo_password)
    assert tried == [1024]  # the cheap key file opened; the costly one was never derived


def test_key_files_that_would_take_hours_are_refused_not_derived() -> None:
    with pytest.raises(ValueError, match="too costly"):
        check_kdf(KdfParams(memory_kib=4 * 1024 * 1024, iterations=1000))
    check_kdf(KdfParams())  # the default is far inside


def test_a_huge_key_file_is_not_read_into_memory(
    mem_repo: Repository, repo_password: bytes
) -> None:
    mem_repo.backend.put(layout.KEYS + "f" * 64, b"{" + b" " * (1 << 20) + b"}")
    Repository.open(mem_repo.backend, repo_password)  # skipped as not a key file


@pytest.mark.parametrize(
    "fields",
    [
        {"chunker_max": 32 << 20},  # data blobs readers refuse: backups nobody could restore
        {"chunker_min": 8},
        {"chunker_min": 8192, "chunker_avg": 4096},
        {"compression_level": 99},
        {"pack_size": 0},
        {"pack_size": 1 << 40},
    ],
)
def test_settings_beyond_the_format_are_refused(fields: dict[str, int]) -> None:
    base = {"chunker_min": 1024, "chunker_avg": 4096, "chunker_max": 16384}
    with pytest.raises(ValueError):
        Settings(**{**base, **fields})


def test_init_refuses_kdf_parameters_no_reader_accepts() -> None:
    from drengine.cli.state import kdf_params

    with pytest.raises(UsageError, match="--kdf-memory-mib"):
        kdf_params(0, 1)
    with pytest.raises(UsageError, match="too costly"):
        kdf_params(4096, 1000)


def test_unreadable_locks_block_no_one_and_unlock_removes_them(mem_repo: Repository) -> None:
    garbage = layout.LOCKS + "ab" * 32
    mem_repo.backend.put(garbage, b"garbage that is not a lock")
    acquire(mem_repo, True, "prune").release()  # an exclusive lock is not blocked
    locks = Locks(mem_repo)
    assert locks.list() == [] and locks.unreadable == ["ab" * 32]


def test_a_lock_crafted_with_the_key_never_crashes_listing(mem_repo: Repository) -> None:
    from drengine.crypto.aead import seal
    from drengine.repository.locks import _LOCK_AAD

    doc = {"host": "x", "pid": 2**70, "time": "2026-01-01T00:00:00", "exclusive": True}
    data = seal(mem_repo.keys.encryption, json.dumps(doc).encode(), _LOCK_AAD)
    mem_repo.backend.put(layout.LOCKS + layout.object_id(data), data)
    assert Locks(mem_repo).list() == []


def test_a_settings_object_out_of_range_fails_open_in_one_sentence(
    mem_repo: Repository, repo_password: bytes
) -> None:
    from drengine.crypto.aead import seal
    from drengine.repository import config as config_module

    cfg = json.loads(mem_repo.backend.get(layout.CONFIG))
    settings = {
        "chunker_min": 1024,
        "chunker_avg": 4096,
        "chunker_max": 64 << 20,
        "compression_level": 3,
        "pack_size": 1 << 20,
    }
    sealed = seal(
        mem_repo.keys.encryption,
        json.dumps(settings).encode(),
        config_module._SETTINGS_AAD + mem_repo.id.encode(),
    )
    import base64

    cfg["settings"] = base64.b64encode(sealed).decode()
    mem_repo.backend.put(layout.CONFIG, json.dumps(cfg).encode())
    with pytest.raises(IntegrityError, match="out of range"):
        Repository.open(mem_repo.backend, repo_password)
