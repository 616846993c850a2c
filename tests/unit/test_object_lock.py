"""S3 Object Lock: init options, retention on every write but locks, prune around retained objects.

What goes over the wire is checked on moto (``mock_aws``) with an Object Lock bucket. Prune's
decisions are checked on a memory backend that keeps retention dates as S3 does; moving
prune's clock past them shows a later prune removes what an earlier one had to keep.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws
from typer.testing import CliRunner

from drengine.cli.cmd_prune import report_prune
from drengine.cli.main import app, register_commands
from drengine.core.errors import IntegrityError, StorageError, UnsupportedFormat, UsageError
from drengine.crypto.aead import seal
from drengine.crypto.keys import KdfParams
from drengine.engine.backup import BackupOptions, run_backup
from drengine.engine.check import run_check
from drengine.engine.prune import LockedObject, PruneResult, run_prune
from drengine.engine.restore import run_restore
from drengine.repository import layout
from drengine.repository.config import Config, Settings, open_settings, read_header
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.base import Backend, Buffer, Capabilities
from drengine.storage.local import LocalBackend
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend
from drengine.storage.s3 import S3Backend
from drengine.storage.url import open_backend

MiB = 1024 * 1024
LOCKED, PLAIN = "lock-bucket", "plain-bucket"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "repo-v1"
Snapshots = tuple[Repository, Path, str, str]


def _lock_settings(small: Settings, mode: str = "GOVERNANCE", days: int = 7) -> Settings:
    return Settings(**{**small.__dict__, "object_lock_mode": mode, "object_lock_days": days})


def _close_to(when: datetime, expected: datetime) -> bool:
    return abs(when - expected) < timedelta(minutes=5)


# ---- settings ----------------------------------------------------------------------------------


def test_settings_carry_object_lock_only_when_set() -> None:
    assert set(Settings().to_json()) == {
        "chunker_min",
        "chunker_avg",
        "chunker_max",
        "compression_level",
        "pack_size",
    }  # still readable by releases that predate the lock fields
    key = os.urandom(32)
    for settings in (Settings(), Settings(object_lock_mode="COMPLIANCE", object_lock_days=30)):
        raw = Config(1, "ab" * 32, settings).to_bytes(key)
        _, repo_id, sealed = read_header(raw, "here")
        assert open_settings(sealed, repo_id, key) == settings


def _sealed(fields: dict[str, Any], key: bytes, repo_id: str = "cd" * 32) -> bytes:
    return seal(key, json.dumps(fields).encode(), b"drengine config settings" + repo_id.encode())


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"future_setting": 1}, UnsupportedFormat),
        ({"pack_size": None}, IntegrityError),  # a required field missing
        ({"object_lock_mode": "GOVERNANCE"}, IntegrityError),  # a mode but no days
        ({"object_lock_mode": "FOREVER", "object_lock_days": 3}, IntegrityError),
        ({"object_lock_days": "many"}, IntegrityError),
    ],
)
def test_settings_refuse_unknown_missing_and_invalid_fields(
    change: dict[str, Any], error: type[Exception]
) -> None:
    key = os.urandom(32)
    fields = {**Settings().to_json(), **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    with pytest.raises(error):
        open_settings(_sealed(fields, key), "cd" * 32, key)


def test_repository_written_before_object_lock_still_opens(tmp_path: Path) -> None:
    copy = tmp_path / "repo-v1"
    shutil.copytree(FIXTURE, copy)
    expected = json.loads((FIXTURE / "EXPECTED.json").read_text())
    repo = Repository.open(LocalBackend(str(copy)), expected["password"].encode())
    assert (repo.settings.object_lock_mode, repo.settings.object_lock_days) == ("", 0)
    assert len(repo.snapshots()) == len(expected["snapshots"])


# ---- writes on S3 (moto) -----------------------------------------------------------------------


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch, drengine_cache_dir: Path) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith(("DRENGINE_S3_", "AWS_ENDPOINT_URL", "AWS_REQUEST_CHECKSUM")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = S3Backend(PLAIN, region="us-east-1").client
        client.create_bucket(Bucket=LOCKED, ObjectLockEnabledForBucket=True)
        client.create_bucket(Bucket=PLAIN)
        yield


def _s3_of(backend: Backend) -> S3Backend:
    while not isinstance(backend, S3Backend):
        backend = backend.inner  # type: ignore[attr-defined]
    return backend


def _record(backend: Backend, *operations: str) -> list[dict[str, Any]]:
    """The parameters (and "op") of every later call of ``operations`` by ``backend``'s client."""
    calls: list[dict[str, Any]] = []
    events = _s3_of(backend).client.meta.events
    for op in operations:
        events.register(
            f"provide-client-params.s3.{op}",
            lambda params, op=op, **_: calls.append({"op": op, **params}),
        )
    return calls


def _backup(repo: Repository, src: Path) -> str:
    snap = run_backup(repo, BackupOptions([FileSource([str(src)])], use_files_cache=False)).snapshot
    return snap.id


def test_every_object_but_locks_is_written_retained(
    s3: None, tmp_path: Path, repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> None:
    url = f"s3://{LOCKED}/repo"
    backend = open_backend(url)
    puts = _record(backend, "PutObject")
    Repository.init(backend, repo_password, _lock_settings(small_settings), cheap_kdf)
    repo = Repository.open(open_backend(url), repo_password)  # a later run configures it too
    later_puts = _record(repo.backend, "PutObject")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f.bin").write_bytes(os.urandom(100_000))
    _backup(repo, tmp_path / "src")
    puts += later_puts

    kinds = {p["Key"].split("/")[1] for p in puts}
    assert kinds >= {"config", "keys", "data", "index", "snapshots", "locks"}
    now = datetime.now(UTC)
    for p in puts:
        if p["Key"].startswith("repo/locks/"):
            assert "ObjectLockMode" not in p  # a lock must stay deletable
        else:
            assert p["ObjectLockMode"] == "GOVERNANCE", p["Key"]
            assert _close_to(p["ObjectLockRetainUntilDate"], now + timedelta(days=7))
    pack = next(iter(repo.backend.list(layout.DATA))).name
    until = repo.backend.retained_until(pack)  # type: ignore[attr-defined]
    assert until is not None and _close_to(until, now + timedelta(days=7))


def test_large_objects_and_checksums_when_required(
    s3: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Object Lock PUTs need Content-MD5 or a checksum; without boto3's default CRC32 we add MD5.
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    b = S3Backend(LOCKED, "mp", region="us-east-1", multipart_threshold=5 * MiB, part_size=5 * MiB)
    b.set_retention("COMPLIANCE", 1, ("locks/",))
    calls = _record(b, "PutObject", "CreateMultipartUpload", "UploadPart")
    b.put("data/big", os.urandom(6 * MiB))
    b.put("index/small", b"x")
    b.put_if_absent("locks/mine", b"y")
    create, part1, part2, small, lock = calls
    assert create["ObjectLockMode"] == "COMPLIANCE" and "ObjectLockRetainUntilDate" in create
    assert "ContentMD5" in part1 and "ContentMD5" in part2
    assert small["ObjectLockMode"] == "COMPLIANCE" and "ContentMD5" in small
    assert "ObjectLockMode" not in lock and "ContentMD5" not in lock
    assert b.get("data/big", 0, 3) and b.retained_until("index/small") is not None


def test_init_refuses_a_bucket_without_object_lock(
    s3: None, repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> None:
    backend = open_backend(f"s3://{PLAIN}/repo")
    with pytest.raises(StorageError, match="does not have S3 Object Lock enabled"):
        Repository.init(backend, repo_password, _lock_settings(small_settings), cheap_kdf)
    assert list(backend.list("")) == []  # nothing written


def test_copies_on_storage_without_object_lock(
    s3: None,
    repo_password: bytes,
    cheap_kdf: KdfParams,
    small_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"s3://{LOCKED}/repo"
    Repository.init(open_backend(url), repo_password, _lock_settings(small_settings), cheap_kdf)
    source = open_backend(url)
    # A bucket without Object Lock refuses retained writes: the error says why.
    plain = open_backend(f"s3://{PLAIN}/repo")
    for info in source.list(""):
        _s3_of(plain).client.put_object(
            Bucket=PLAIN, Key=f"repo/{info.name}", Body=source.get(info.name)
        )
    repo = Repository.open(plain, repo_password)
    with pytest.raises(StorageError, match=f"is Object Lock enabled on bucket {PLAIN}"):
        repo.add_key(b"another", cheap_kdf)
    # Storage that cannot lock at all (a local copy) still opens, with a warning.
    memory = MemoryBackend()
    for info in source.list(""):
        memory.put(info.name, source.get(info.name))
    assert Repository.open(memory, repo_password).settings.object_lock_days == 7
    assert "objects written now are not protected" in caplog.text


def test_object_lock_needs_s3(
    repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> None:
    with pytest.raises(UsageError, match="needs an s3:// repository"):
        Repository.init(MemoryBackend(), repo_password, _lock_settings(small_settings), cheap_kdf)
    with pytest.raises(UsageError, match="does not support S3 Object Lock"):
        RetryingBackend(MemoryBackend()).set_retention("GOVERNANCE", 1)
    assert RetryingBackend(MemoryBackend()).retained_until("data/x") is None


def test_repository_without_object_lock_is_unaffected(
    s3: None, tmp_path: Path, repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> None:
    url = f"s3://{PLAIN}/repo"
    Repository.init(open_backend(url), repo_password, small_settings, cheap_kdf)
    repo = Repository.open(open_backend(url), repo_password)
    calls = _record(repo.backend, "PutObject", "HeadObject")
    src = tmp_path / "src"
    src.mkdir()
    (src / "f.bin").write_bytes(os.urandom(100_000))
    first = _backup(repo, src)
    repo.backend.delete(layout.SNAPSHOTS + first)
    pruner = Repository.open(open_backend(url), repo_password)
    prune_calls = _record(pruner.backend, "PutObject", "HeadObject", "GetObjectLockConfiguration")
    res = run_prune(pruner)
    calls += prune_calls
    assert res.kept_locked == [] and res.packs_deleted > 0
    assert [c for c in calls if c["op"] == "PutObject"]
    assert not any("ObjectLockMode" in c for c in calls)
    # One question to the bucket instead of a HEAD per object prune deletes.
    assert [c["op"] for c in calls if c["op"] != "PutObject"] == ["GetObjectLockConfiguration"]


def _two_snapshots(repo: Repository, tmp_path: Path) -> tuple[Path, str, str]:
    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "a.bin").write_bytes(os.urandom(200_000))
    (src / "gone.bin").write_bytes(os.urandom(300_000))
    first = _backup(repo, src)
    (src / "gone.bin").unlink()
    (src / "keep" / "b.bin").write_bytes(os.urandom(100_000))
    return src, first, _backup(repo, src)


def _restores(repo: Repository, snap_id: str, src: Path, out: Path) -> bool:
    repo.load_index()
    assert run_restore(repo, repo.find_snapshot(snap_id), str(out)).errors == []
    restored = out / src.relative_to("/")
    return all(
        (restored / p.relative_to(src)).read_bytes() == p.read_bytes()
        for p in src.rglob("*")
        if p.is_file()
    )


def test_prune_on_s3_keeps_retained_packs_until_a_later_prune(
    s3: None, tmp_path: Path, repo_password: bytes, cheap_kdf: KdfParams, small_settings: Settings
) -> None:
    url = f"s3://{LOCKED}/repo"
    Repository.init(open_backend(url), repo_password, _lock_settings(small_settings), cheap_kdf)

    def reopen() -> Repository:
        return Repository.open(open_backend(url), repo_password)

    src, first, second = _two_snapshots(reopen(), tmp_path)
    before = {o.name for o in reopen().backend.list("")}
    reopen().backend.delete(layout.SNAPSHOTS + first)  # forget: a delete marker on S3

    res = run_prune(reopen(), max_unused=0.0)
    kinds = {o.kind for o in res.kept_locked}
    assert kinds == {"pack", "index"} and res.packs_deleted == res.packs_repacked == 0
    assert all(datetime.fromisoformat(o.until) > datetime.now(UTC) for o in res.kept_locked)
    left = {o.name for o in reopen().backend.list("")}
    assert {o.name for o in res.kept_locked} <= left and before - left == {layout.SNAPSHOTS + first}
    check = run_check(reopen(), 1.0)
    assert check.errors == []
    assert _restores(reopen(), second, src, tmp_path / "out1")

    later = datetime.now(UTC) + timedelta(days=8)  # every retention has ended
    res = run_prune(reopen(), max_unused=0.0, now=lambda: later)
    assert res.kept_locked == [] and res.packs_unindexed + res.packs_repacked > 0
    assert res.bytes_freed > 250_000  # gone.bin's data
    check = run_check(reopen(), 1.0)
    assert check.errors == [] and check.warnings == []
    assert _restores(reopen(), second, src, tmp_path / "out2")


# ---- prune decisions (memory backend with retention) -------------------------------------------


class RetainingMemory(MemoryBackend):
    """Keeps a retention date per object as S3 Object Lock does; an early delete fails."""

    capabilities = Capabilities(object_lock=True)

    def __init__(self) -> None:
        super().__init__()
        self.retention: tuple[int, tuple[str, ...]] | None = None
        self.until: dict[str, datetime] = {}
        self.clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        self.retention = (days, exempt)

    def object_lock_enabled(self) -> bool:
        return True

    def _retain(self, name: str) -> None:
        if self.retention and not name.startswith(self.retention[1]):
            self.until[name] = self.clock() + timedelta(days=self.retention[0])

    def put(self, name: str, data: Buffer) -> None:
        super().put(name, data)
        self._retain(name)

    def put_if_absent(self, name: str, data: Buffer) -> None:
        super().put_if_absent(name, data)
        self._retain(name)

    def retained_until(self, name: str) -> datetime | None:
        return self.until.get(name)

    def delete(self, name: str) -> None:
        if name in self.until and self.until[name] > self.clock():
            raise AssertionError(f"deleted {name} under retention")
        super().delete(name)


@pytest.fixture
def retaining(
    tmp_path: Path,
    repo_password: bytes,
    cheap_kdf: KdfParams,
    small_settings: Settings,
    drengine_cache_dir: Path,
) -> Snapshots:
    backend = RetainingMemory()
    Repository.init(backend, repo_password, _lock_settings(small_settings, days=3), cheap_kdf)
    src, first, second = _two_snapshots(Repository.open(backend, repo_password), tmp_path)
    # forget: on S3 a delete marker hides the retained snapshot; here it just goes
    MemoryBackend.delete(backend, layout.SNAPSHOTS + first)
    return Repository.open(backend, repo_password), src, first, second


def test_prune_keeps_packs_worth_repacking_whole_while_retained(
    retaining: Snapshots, repo_password: bytes, tmp_path: Path
) -> None:
    repo, src, _first, second = retaining
    backend = repo.backend
    assert isinstance(backend, RetainingMemory)
    stored = {o.name for o in backend.list(layout.DATA)}

    dry = run_prune(repo, max_unused=0.0, dry_run=True)
    res = run_prune(Repository.open(backend, repo_password), max_unused=0.0)
    assert dry.kept_locked == res.kept_locked and dry.dry_run
    assert (res.packs_repacked, res.packs_deleted, res.packs_written, res.bytes_freed) == (0,) * 4
    assert {o.name for o in backend.list(layout.DATA)} == stored  # nothing rewritten either
    assert _restores(Repository.open(backend, repo_password), second, src, tmp_path / "out")

    backend.clock = lambda: datetime.now(UTC) + timedelta(days=4)
    later = run_prune(Repository.open(backend, repo_password), max_unused=0.0, now=backend.clock)
    assert later.kept_locked == [] and later.bytes_freed > 250_000
    assert later.index_objects_replaced > 0
    assert _restores(Repository.open(backend, repo_password), second, src, tmp_path / "out2")


def test_unused_retained_packs_leave_the_index(retaining: Snapshots, repo_password: bytes) -> None:
    repo, *_ = retaining
    backend = repo.backend
    res = run_prune(repo, max_unused=1.0)  # no repacking: only wholly unused packs matter
    locked_packs = {o.name for o in res.kept_locked if o.kind == "pack"}
    assert locked_packs and res.packs_deleted == 0
    fresh = Repository.open(backend, repo_password)
    fresh.load_index()
    indexed = {layout.pack_name(e.pack_id.hex()) for _, e in fresh.index.entries()}
    assert not locked_packs & indexed  # still stored, no longer indexed
    assert locked_packs <= {o.name for o in backend.list(layout.DATA)}
    assert run_check(fresh, 1.0).errors == []


def test_report_names_what_object_lock_kept(capsys: pytest.CaptureFixture[str]) -> None:
    res = PruneResult(dry_run=False, packs_total=3, packs_kept=3)
    res.kept_locked = [
        LockedObject("pack", "data/ab/ab12", 2 * MiB, "2026-12-01T00:00:00+00:00"),
        LockedObject("index", "index/cd34", 100, "2026-12-03T00:00:00+00:00"),
    ]
    report_prune(res)
    out = capsys.readouterr().out
    assert "kept 1 packs (2.0 MiB) and 1 index objects" in out
    assert "S3 Object Lock retains until 2026-12-03T00:00:00+00:00 at the latest" in out
    report_prune(res, json_out=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["kept_locked"][0] == {
        "kind": "pack",
        "name": "data/ab/ab12",
        "size": 2 * MiB,
        "until": "2026-12-01T00:00:00+00:00",
    }


# ---- command line ------------------------------------------------------------------------------


def _init(url: str, *args: str) -> Any:
    register_commands()  # every command, as for a caller that runs ``app`` itself
    return CliRunner().invoke(
        app, ["--repo", url, "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1", *args]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--object-lock-mode", "GOVERNANCE"], "go together"),
        (["--object-lock-days", "3"], "go together"),
        (["--object-lock-mode", "forever", "--object-lock-days", "3"], "GOVERNANCE or COMPLIANCE"),
        (["--object-lock-mode", "COMPLIANCE", "--object-lock-days", "0"], "go together"),
        (["--object-lock-mode", "COMPLIANCE", "--object-lock-days", "99999"], "between 1 and"),
        (["--object-lock-mode", "governance", "--object-lock-days", "3"], "needs an s3://"),
    ],
)
def test_init_usage_errors(
    args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRENGINE_PASSWORD", "pw")
    result = _init(str(tmp_path / "repo"), *args)
    assert isinstance(result.exception, UsageError) and message in str(result.exception)
    assert not (tmp_path / "repo").exists()


def test_init_with_object_lock_on_s3(s3: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRENGINE_PASSWORD", "pw")
    result = _init(
        f"s3://{LOCKED}/cli", "--object-lock-mode", "compliance", "--object-lock-days", "30"
    )
    assert result.exit_code == 0, result.output
    assert "S3 Object Lock (COMPLIANCE) for 30 days" in result.output
    repo = Repository.open(open_backend(f"s3://{LOCKED}/cli"), b"pw")
    assert (repo.settings.object_lock_mode, repo.settings.object_lock_days) == ("COMPLIANCE", 30)

    result = _init(
        f"s3://{PLAIN}/cli", "--object-lock-mode", "GOVERNANCE", "--object-lock-days", "1"
    )
    assert isinstance(result.exception, StorageError)
    assert "does not have S3 Object Lock enabled" in str(result.exception)
