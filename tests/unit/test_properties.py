"""Property tests (hypothesis): chunking, backup/restore round trips, single-bit damage.

(a) ``Chunker`` cuts exactly where FastCDC cuts the whole input at once, whatever the read
    sizes, buffer size and size hint, and the chunks concatenate to the input.
(b) Random trees round-trip through ``run_backup`` + ``run_restore`` on a memory repository
    with small chunks and packs, and ``run_check`` finds nothing wrong.
(c) One flipped bit anywhere in any stored object is either reported (open fails, check or
    restore report errors) or changes nothing; a restore never writes different content.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
import tempfile
import unittest.mock
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from drengine.core.errors import DrengineError
from drengine.crypto.keys import KdfParams
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.restore import run_restore
from drengine.pipeline import chunker as chunker_module
from drengine.pipeline.chunker import Chunker
from drengine.repository.config import Settings
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.memory import MemoryBackend

MiB = 1024 * 1024


# ---- helpers ----------------------------------------------------------------------------------


class ShortReader:
    """``readinto`` that hands out the data in pieces of the given sizes (cycled)."""

    def __init__(self, data: bytes, sizes: Iterator[int]) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._sizes = sizes
        self.calls = 0

    def readinto(self, buf: memoryview) -> int:
        self.calls += 1
        n = min(len(buf), next(self._sizes), len(self._data) - self._pos)
        buf[:n] = self._data[self._pos : self._pos + n]
        self._pos += n
        return n


def _cycle(sizes: list[int]) -> Iterator[int]:
    while True:
        yield from sizes


def _random_sizes(seed: int, largest: int) -> Iterator[int]:
    rnd = random.Random(seed)
    while True:
        yield rnd.choice((1, rnd.randint(1, 64), rnd.randint(1, largest)))


def _generated(seed: int, size: int, kind: str) -> bytes:
    """Large test data from a seed: random, long zero runs in random, or a small alphabet."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.bytes(size)
    if kind == "zero-runs":  # long runs without any cut point: max-size chunks
        data = np.frombuffer(rng.bytes(size), dtype=np.uint8).copy()
        for _ in range(size // (256 * 1024) + 1):
            start = int(rng.integers(0, max(size, 1)))
            data[start : start + int(rng.integers(0, 300_000))] = 0
        return data.tobytes()
    alphabet = np.frombuffer(b"ab \n", dtype=np.uint8)
    return rng.choice(alphabet, size).tobytes()


def _reference_cuts(data: bytes, min_size: int, avg: int, max_size: int, seed: int) -> list[int]:
    cdc = FastCDC(avg, min_size=min_size, max_size=max_size, normalized_chunking=1, seed=seed)
    return [c.length for c in cdc.cut_buf(data)] if data else []


def _chunk(
    data: bytes,
    sizes: Iterator[int],
    params: tuple[int, int, int],
    seed: int,
    read_size: int | None,
    first: int,
) -> list[memoryview]:
    """All chunks (kept as the memoryviews the chunker yields, not copied)."""
    min_size, avg, max_size = params
    if read_size is None:
        c = Chunker(min_size, avg, max_size, seed)
    else:  # a small buffer (at least 2 * max_size), so the carry-over path runs often
        with unittest.mock.patch.object(chunker_module, "_READ_SIZE", read_size):
            c = Chunker(min_size, avg, max_size, seed)
    return list(c.chunks(ShortReader(data, sizes).readinto, first=first))


def _assert_chunks(
    chunks: list[memoryview], data: bytes, params: tuple[int, int, int], seed: int
) -> None:
    min_size, avg, max_size = params
    assert b"".join(chunks) == data  # also proves earlier views stayed valid
    lengths = [len(c) for c in chunks]
    assert lengths == _reference_cuts(data, min_size, avg, max_size, seed)
    assert all(0 < n <= max_size for n in lengths)
    assert all(n >= min_size for n in lengths[:-1])


def _read_tree(root: Path) -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        dirs.update((rel / d).as_posix() for d in dirnames)
        for name in filenames:
            files[(rel / name).as_posix()] = (Path(dirpath) / name).read_bytes()
    return files, dirs


def _write_files(root: Path, files: dict[str, bytes], dirs: set[str]) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)


def _restored_root(target: Path, src: Path) -> Path:
    """Restore puts the backed-up path under the target at its absolute path."""
    return target / src.relative_to(src.anchor)


# ---- (a) chunker ------------------------------------------------------------------------------

_SMALL_PARAMS = (256, 1024, 4096)  # pyfastcdc's lower bounds are 64 / 256 / 1024
_LARGE_PARAMS = (1024, 4096, 16384)


@settings(max_examples=60, deadline=None)
@given(
    data=st.binary(max_size=40_000),
    reads=st.lists(st.integers(1, 5000), min_size=1, max_size=12),
    read_size=st.sampled_from([None, 0, 9000, 20_000]),
    first=st.integers(0, 60_000),
    seed=st.integers(1, 2**63 - 1),
)
def test_chunker_small_inputs(
    data: bytes, reads: list[int], read_size: int | None, first: int, seed: int
) -> None:
    chunks = _chunk(data, _cycle(reads), _SMALL_PARAMS, seed, read_size, first)
    _assert_chunks(chunks, data, _SMALL_PARAMS, seed)


@settings(max_examples=15, deadline=None)
@given(
    data_seed=st.integers(0, 2**32 - 1),
    size=st.sampled_from([300_000, MiB, 2 * MiB + 12_345, 4 * MiB - 65_536]),
    jitter=st.integers(0, 65_536),
    kind=st.sampled_from(["random", "zero-runs", "alphabet"]),
    read_seed=st.integers(0, 2**32 - 1),
    read_size=st.sampled_from([None, 0, 50_000]),
    first_fraction=st.sampled_from([0.0, 0.001, 0.5, 1.0, 1.5]),
    seed=st.integers(1, 2**63 - 1),
)
def test_chunker_large_inputs(
    data_seed: int,
    size: int,
    jitter: int,
    kind: str,
    read_seed: int,
    read_size: int | None,
    first_fraction: float,
    seed: int,
) -> None:
    size += jitter  # hypothesis draws bounded integers mostly near the bounds
    data = _generated(data_seed, size, kind)
    first = int(size * first_fraction)  # the size hint (stat) may be wrong: file grew/shrank
    chunks = _chunk(data, _random_sizes(read_seed, 300_000), _LARGE_PARAMS, seed, read_size, first)
    _assert_chunks(chunks, data, _LARGE_PARAMS, seed)
    event(f"{len(chunks) // 100 * 100}+ chunks")


def test_chunker_boundaries_do_not_depend_on_reads() -> None:
    """One fixed input, many ways of reading it: every run cuts at the same offsets."""
    data = _generated(1, 3 * MiB, "zero-runs")
    seed = 0x1234_5678_9ABC_DEF1
    results = set()
    for reads, read_size in [
        (_cycle([len(data)]), None),
        (_cycle([1, 7, 4096, 100_000]), 0),
        (_random_sizes(5, 50_000), 40_000),
        (_cycle([32_768]), 32_768),
    ]:
        chunks = _chunk(data, reads, _LARGE_PARAMS, seed, read_size, first=len(data))
        _assert_chunks(chunks, data, _LARGE_PARAMS, seed)
        results.add(tuple(len(c) for c in chunks))
    assert len(results) == 1


# ---- (b) backup and restore round trip --------------------------------------------------------

_PATHS = ["a", "b.bin", "d1/c", "d1/d2/e", "d1/d2/f", "g h/\u00fcml\u00e4ut", "d3/.hidden"]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    small=st.dictionaries(
        st.sampled_from(_PATHS), st.binary(max_size=30_000), max_size=len(_PATHS)
    ),
    big_seed=st.integers(0, 2**32 - 1),
    big_size=st.sampled_from([0, 1, 40_000, 400_000, 2 * MiB]),
    big_jitter=st.integers(0, 20_000),
    big_kind=st.sampled_from(["random", "zero-runs", "alphabet"]),
    big_copy=st.booleans(),
    compression=st.sampled_from([0, 3]),
)
def test_backup_restore_round_trip(
    repo_factory: Callable[..., Repository],
    repo_password: bytes,
    tmp_path: Path,
    small: dict[str, bytes],
    big_seed: int,
    big_size: int,
    big_jitter: int,
    big_kind: str,
    big_copy: bool,
    compression: int,
) -> None:
    files = dict(small)
    big_size = max(0, big_size - big_jitter)
    files["big/blob"] = _generated(big_seed, big_size, big_kind)
    if big_copy:
        files["big/copy"] = files["big/blob"]  # deduplicated, still restored twice
    dirs = {"empty", "d1"}
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        src, target = Path(work) / "src", Path(work) / "target"
        _write_files(src, files, dirs)
        repo = repo_factory(compression_level=compression)
        backup = run_backup(repo, BackupOptions([FileSource([str(src)])]))
        assert backup.errors == []
        summary = backup.snapshot.summary
        packs = summary["packs_new"]
        event(f"packs written: {'10+' if packs >= 10 else packs}")
        assert summary["files_total"] == len(files)
        assert summary["bytes_total"] == sum(len(c) for c in files.values())
        if big_kind == "random" and big_size > 200_000:
            assert summary["packs_new"] >= 4  # several data packs, and a tree pack

        fresh = Repository.open(repo.backend, repo_password)
        checked = run_check(fresh, 1.0)
        assert checked.errors == [] and checked.warnings == []

        reader = Repository.open(repo.backend, repo_password)
        snap = reader.find_snapshot("latest")
        reader.load_index()
        restored = run_restore(reader, snap, str(target))
        assert restored.errors == []
        got_files, got_dirs = _read_tree(_restored_root(target, src))
        assert got_files.keys() == files.keys()
        for rel, content in files.items():
            assert got_files[rel] == content, rel
        assert dirs <= got_dirs


def test_backup_restore_example_tree(
    mem_repo: Repository,
    repo_password: bytes,
    make_tree: Callable[[Path, dict[str, object]], dict[str, bytes]],
    tmp_path: Path,
) -> None:
    """One fixed tree through the shared fixtures: nested, empty, duplicate and odd names."""
    src, target = tmp_path / "src", tmp_path / "target"
    big = _generated(3, 300_000, "random")
    files = make_tree(
        src,
        {
            "empty": b"",
            "big": big,
            "same-as-big": big,
            "a b": {"\u00fcml\u00e4ut": b"x" * 5000, "deeper": {"-rf": b"dash"}},
            ".hidden": {"file": b"hidden"},
        },
    )
    backup = run_backup(mem_repo, BackupOptions([FileSource([str(src)])]))
    assert backup.errors == []
    reader = Repository.open(mem_repo.backend, repo_password)
    reader.load_index()
    result = run_restore(reader, reader.find_snapshot("latest"), str(target))
    assert result.errors == []
    got, _ = _read_tree(_restored_root(target, src))
    assert got == files
    assert run_check(Repository.open(mem_repo.backend, repo_password), 1.0).errors == []


# ---- (c) single-bit damage --------------------------------------------------------------------


@dataclass
class StoredRepo:
    objects: dict[str, bytes]
    files: dict[str, bytes]  # the latest snapshot's files, relative to src
    src: Path
    work: Path
    password: bytes
    # Every snapshot's files: a damaged latest snapshot is skipped (reported), and
    # "latest" is then the newest readable one.
    files_of: dict[str, dict[str, bytes]] = dataclasses.field(default_factory=dict)

    def names(self, prefix: str) -> list[str]:
        """Objects of one kind, in an order that does not depend on random names."""
        found = [n for n in self.objects if n.startswith(prefix)]
        return sorted(found, key=lambda n: (len(self.objects[n]), n))


_KINDS = ["config", "keys/", "snapshots/", "index/", "data/"]


@pytest.fixture(scope="module")
def stored_repo(
    tmp_path_factory: pytest.TempPathFactory,
    repo_password: bytes,
    cheap_kdf: KdfParams,
    small_settings: Settings,
) -> StoredRepo:
    """A small repository with every kind of object, made once: two snapshots, several data
    packs, a tree pack, two index objects."""
    work = tmp_path_factory.mktemp("bitflip")
    src = work / "src"
    rng = np.random.default_rng(2026)
    files = {
        "random.bin": rng.bytes(70_000),
        "text.txt": b"the quick brown fox jumps over the lazy dog\n" * 700,
        "sub/dir/small": b"small file",
        "sub/empty": b"",
    }
    backend = MemoryBackend()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DRENGINE_CACHE_DIR", str(work / "cache"))
        repo = Repository.init(backend, repo_password, small_settings, cheap_kdf)
        _write_files(src, files, set())
        first = run_backup(repo, BackupOptions([FileSource([str(src)])]))
        assert first.errors == []
        files_of = {first.snapshot.id: dict(files)}
        files["sub/dir/small"] = b"changed"
        files["more.bin"] = rng.bytes(30_000)
        _write_files(src, files, set())
        second = run_backup(repo, BackupOptions([FileSource([str(src)])]))
        assert second.errors == []
        files_of[second.snapshot.id] = dict(files)
    stored = StoredRepo(dict(backend.raw_objects()), files, src, work, repo_password, files_of)
    counts = {k: len(stored.names(k)) for k in _KINDS}
    assert counts["config"] == counts["keys/"] == 1
    assert counts["snapshots/"] == 2 and counts["index/"] == 2 and counts["data/"] >= 4
    return stored


def _with_flip(stored: StoredRepo, name: str, bit: int) -> MemoryBackend:
    backend = MemoryBackend()
    for n, data in stored.objects.items():
        backend.put(n, data)
    damaged = bytearray(stored.objects[name])
    damaged[bit // 8] ^= 1 << (bit % 8)
    backend.put(name, damaged)
    return backend


def _open_check_restore(
    stored: StoredRepo, backend: MemoryBackend, target: Path
) -> tuple[str, list[str], dict[str, bytes]]:
    """(where the damage was first reported or "nowhere", every error reported, the files
    of the snapshot restored as "latest").

    Only DrengineErrors count as a report; anything else propagates and fails the test.
    """
    expected = stored.files
    try:
        repo = Repository.open(backend, stored.password)
    except DrengineError as e:
        return "open", [str(e)], expected
    errors: list[str] = []
    where = "nowhere"
    checked = run_check(repo, 1.0)
    if checked.errors:
        where, errors = "check", list(checked.errors)
    try:
        reader = Repository.open(backend, stored.password)
        snap = reader.find_snapshot("latest")
        expected = stored.files_of[snap.id]
        reader.load_index()
        result = run_restore(reader, snap, str(target))
        restore_errors = [f"{e['path']}: {e['error']}" for e in result.errors]
    except DrengineError as e:
        restore_errors = [str(e)]
    if restore_errors and where == "nowhere":
        where = "restore"
    return where, errors + restore_errors, expected


def _assert_never_silently_wrong(
    stored: StoredRepo, target: Path, errors: list[str], expected: dict[str, bytes]
) -> None:
    root = _restored_root(target, stored.src)
    got, _ = _read_tree(root) if root.exists() else ({}, set())
    # Whatever was reported: nothing restored differs from what was backed up.
    unexpected = sorted(got.keys() - expected.keys())
    assert unexpected == [], f"restore created files that were never backed up: {unexpected}"
    wrong = sorted(rel for rel in got if got[rel] != expected[rel])
    assert wrong == [], f"restore wrote different content for {wrong} (errors: {errors})"
    if not errors:  # nothing reported: then the restore must be the latest, complete
        assert got == stored.files


# Derandomized: the same 150 (object, bit) picks every run, so the outcome does not depend on
# luck. The object order within a kind is by size, and config and key file are single objects,
# so a pick means the same field every run. Flips that go unnoticed (in the key file) pass
# here because the restore is still identical; the tests below pin that there are none. Any
# exception that is not a DrengineError fails this test: that is a product bug too.
@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_single_bit_flip_is_reported_or_harmless(
    stored_repo: StoredRepo, data: st.DataObject
) -> None:
    kind = data.draw(st.sampled_from(_KINDS), label="kind")
    names = stored_repo.names(kind)
    name = names[data.draw(st.integers(0, len(names) - 1), label="object")]
    bit = data.draw(st.integers(0, len(stored_repo.objects[name]) * 8 - 1), label="bit")
    backend = _with_flip(stored_repo, name, bit)
    with tempfile.TemporaryDirectory(dir=stored_repo.work) as tmp:
        where, errors, expected = _open_check_restore(stored_repo, backend, Path(tmp))
        event(f"{kind}: reported by {where}")
        _assert_never_silently_wrong(stored_repo, Path(tmp), errors, expected)


def _unnoticed_flips(stored: StoredRepo, name: str) -> list[str]:
    """Every bit of one object whose flip ``Repository.open`` does not refuse with a
    DrengineError, described as "byte N (context) bit B: 'x' -> 'y': outcome"."""
    data = stored.objects[name]
    found = []
    for bit in range(len(data) * 8):
        backend = _with_flip(stored, name, bit)
        try:
            Repository.open(backend, stored.password)
            outcome = "opened"
        except DrengineError:
            continue
        except Exception as e:
            outcome = f"{type(e).__name__}: {e}"
        pos = bit // 8
        new = data[pos] ^ (1 << (bit % 8))
        context = data[max(0, pos - 12) : pos + 3]
        found.append(
            f"byte {pos} ({context!r}) bit {bit % 8}: {chr(data[pos])!r} -> {chr(new)!r}: {outcome}"
        )
    return found


def test_every_config_bit_flip_is_refused(stored_repo: StoredRepo) -> None:
    unnoticed = _unnoticed_flips(stored_repo, "config")
    assert unnoticed == [], "\n".join(unnoticed)


def test_every_key_file_bit_flip_is_refused(stored_repo: StoredRepo) -> None:
    (name,) = stored_repo.names("keys/")
    unnoticed = _unnoticed_flips(stored_repo, name)
    assert unnoticed == [], "\n".join(unnoticed)


# Bugs found by the exhaustive tests above, each pinned to one input.


def _edited(stored: StoredRepo, name: str, old: bytes, new: bytes) -> MemoryBackend:
    backend = MemoryBackend()
    for n, data in stored.objects.items():
        backend.put(n, data)
    data = stored.objects[name]
    assert data.count(old) == 1, (old, data)
    backend.put(name, data.replace(old, new))
    return backend


def test_config_version_zero_is_refused(stored_repo: StoredRepo) -> None:
    backend = _edited(stored_repo, "config", b'"version": 1', b'"version": 0')
    with pytest.raises(DrengineError):
        Repository.open(backend, stored_repo.password)


def _noncanonical_b64(text: str) -> str:
    """The same bytes in another base64 spelling: change only unused bits of the last
    character before the padding."""
    raw = base64.b64decode(text)
    head, last, pad = text.rstrip("=")[:-1], text.rstrip("=")[-1], text[len(text.rstrip("=")) :]
    assert pad, "no padding: every bit of this base64 text is used"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    for c in alphabet:
        other = head + c + pad
        if c != last and base64.b64decode(other, validate=True) == raw:
            return other
    raise AssertionError("no other spelling found")


def test_config_settings_in_noncanonical_base64_are_refused(stored_repo: StoredRepo) -> None:
    settings_b64 = json.loads(stored_repo.objects["config"])["settings"]
    other = _noncanonical_b64(settings_b64)
    backend = _edited(stored_repo, "config", settings_b64.encode(), other.encode())
    with pytest.raises(DrengineError):
        Repository.open(backend, stored_repo.password)


def test_key_file_that_does_not_match_its_name_is_refused(stored_repo: StoredRepo) -> None:
    (name,) = stored_repo.names("keys/")
    created = json.loads(stored_repo.objects[name])["created"].encode()
    backend = _edited(stored_repo, name, created, b"1999" + created[4:])
    with pytest.raises(DrengineError):
        Repository.open(backend, stored_repo.password)


def test_key_file_with_zero_iterations_is_a_drengine_error(stored_repo: StoredRepo) -> None:
    (name,) = stored_repo.names("keys/")
    backend = _edited(stored_repo, name, b'"iterations": 1', b'"iterations": 0')
    with pytest.raises(DrengineError):
        Repository.open(backend, stored_repo.password)
