"""``RetryingBackend``: which failures are retried, for how long, and what the caller sees.

A fake clock advances only when the wrapper sleeps or a fake attempt "takes time", so outages
of minutes run in microseconds.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.storage.base import Backend, Buffer, ObjectInfo
from drengine.storage.memory import MemoryBackend
from drengine.storage.retry import RetryingBackend, RetryPolicy, TransientStorageError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky(MemoryBackend):
    """A memory backend behind an endpoint that is down until ``up_at`` on ``clock``.

    Each failing call costs ``attempt_cost`` seconds (0: connection refused; 10: a connect
    timeout). ``fail`` may replace the outage with any exception to raise.
    """

    def __init__(self, clock: Clock, up_at: float = 0.0, attempt_cost: float = 0.0) -> None:
        super().__init__()
        self.clock = clock
        self.up_at = up_at
        self.attempt_cost = attempt_cost
        self.calls = 0
        self.fail: Callable[[], BaseException | None] | None = None

    def _gate(self) -> None:
        self.calls += 1
        if self.fail is not None and (exc := self.fail()) is not None:
            raise exc
        if self.clock.now < self.up_at:
            self.clock.now += self.attempt_cost
            raise TransientStorageError("cannot reach s3 endpoint http://s3.test: refused")

    def put(self, name: str, data: Buffer) -> None:
        self._gate()
        super().put(name, data)

    def put_if_absent(self, name: str, data: Buffer) -> None:
        self._gate()
        super().put_if_absent(name, data)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        self._gate()
        return super().get(name, offset, length)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._gate()
        yield from super().list(prefix)

    def delete(self, name: str) -> None:
        self._gate()
        super().delete(name)

    def stat(self, name: str) -> ObjectInfo:
        self._gate()
        return super().stat(name)


def _wrap(inner: Flaky, clock: Clock, seed: int = 0, **policy: float) -> RetryingBackend:
    return RetryingBackend(
        inner, RetryPolicy(**policy), sleep=clock.sleep, clock=clock, rng=random.Random(seed)
    )


def test_is_a_backend() -> None:
    b = RetryingBackend(MemoryBackend())
    assert isinstance(b, Backend)
    assert b.location == "memory:"


@pytest.mark.parametrize("attempt_cost", [0.0, 10.0])
@pytest.mark.parametrize("seed", range(25))
def test_thirty_second_outage_is_ridden_out_with_defaults(seed: int, attempt_cost: float) -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=clock.now + 30, attempt_cost=attempt_cost)
    b = _wrap(inner, clock, seed)
    b.put("data/ab/abcd", b"payload")
    assert clock.now >= inner.up_at
    assert inner.get("data/ab/abcd") == b"payload"
    assert inner.calls >= 2


@pytest.mark.parametrize("attempt_cost", [0.0, 10.0])
@pytest.mark.parametrize("seed", range(10))
def test_dead_endpoint_fails_within_the_budget(seed: int, attempt_cost: float) -> None:
    clock = Clock()
    start = clock.now
    inner = Flaky(clock, up_at=float("inf"), attempt_cost=attempt_cost)
    b = _wrap(inner, clock, seed)
    with pytest.raises(StorageError) as exc:
        b.get("config")
    assert not isinstance(exc.value, TransientStorageError)  # an outer layer must not retry
    assert str(exc.value).startswith("cannot reach s3 endpoint http://s3.test")
    assert "gave up after" in str(exc.value)
    # No attempt starts after the budget; the last may take one attempt's time beyond it.
    assert clock.now - start <= RetryPolicy().budget + attempt_cost
    assert clock.now - start <= 180  # "within a few minutes", never a hang


def test_backoff_is_exponential_with_full_jitter() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock, budget=1e9, max_attempts=12, base_delay=0.5, max_delay=15.0)
    with pytest.raises(StorageError):
        b.stat("config")
    assert inner.calls == 12
    assert len(clock.sleeps) == 11
    for k, delay in enumerate(clock.sleeps):
        assert 0 <= delay <= min(15.0, 0.5 * 2**k)
    assert max(clock.sleeps[6:]) > 4  # the cap, not the first delays, dominates later


def test_small_budget_gives_up_quickly() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"), attempt_cost=1.0)
    b = _wrap(inner, clock, budget=3.0)
    with pytest.raises(StorageError, match="gave up"):
        b.delete("locks/l")
    assert clock.now - 1000.0 <= 4.0


@pytest.mark.parametrize(
    "error",
    [
        ObjectNotFound("object config not found"),
        ObjectExists("object locks/l exists"),
        StorageError("access denied to s3://b/p/config"),
        ValueError("invalid object name"),
    ],
)
def test_permanent_failures_are_not_retried(error: Exception) -> None:
    clock = Clock()
    inner = Flaky(clock)
    inner.fail = lambda: error
    b = _wrap(inner, clock)
    for op in (lambda: b.get("config"), lambda: b.put("config", b"x"), lambda: b.stat("x")):
        with pytest.raises(type(error)) as exc:
            op()
        assert exc.value is error
    assert inner.calls == 3
    assert clock.sleeps == []


def test_missing_object_after_an_outage_is_still_not_found() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=clock.now + 5)
    b = _wrap(inner, clock)
    with pytest.raises(ObjectNotFound):
        b.get("snapshots/none")
    with pytest.raises(ObjectNotFound):
        b.stat("snapshots/none")


def test_every_operation_is_retried() -> None:
    clock = Clock()
    inner = Flaky(clock)
    b = _wrap(inner, clock)
    ops: list[Callable[[], object]] = [
        lambda: b.put("index/i1", b"12345"),
        lambda: b.put_if_absent("locks/l1", b"lock"),
        lambda: b.get("index/i1", 1, 2),
        lambda: list(b.list("index/")),
        lambda: b.stat("index/i1"),
        lambda: b.delete("locks/l1"),
    ]
    results = []
    for op in ops:
        inner.up_at = clock.now + 3
        results.append(op())
    assert results[2] == b"23"
    assert results[3] == [ObjectInfo("index/i1", 5)]
    assert results[4] == ObjectInfo("index/i1", 5)
    assert inner.calls > len(ops)


def test_list_retried_midway_yields_each_name_once() -> None:
    clock = Clock()
    inner = Flaky(clock)
    for i in range(5):
        inner.put(f"index/i{i}", b"x")
    broken = {"left": 1}
    real_list = MemoryBackend.list

    def list_failing_midway(self: Flaky, prefix: str) -> Iterator[ObjectInfo]:
        for n, info in enumerate(real_list(self, prefix)):
            if n == 3 and broken["left"]:
                broken["left"] -= 1
                raise TransientStorageError("connection reset while listing")
            yield info

    inner.list = list_failing_midway.__get__(inner)  # type: ignore[method-assign]
    names = [i.name for i in _wrap(inner, clock).list("index/")]
    assert sorted(names) == [f"index/i{i}" for i in range(5)]


def test_put_if_absent_whose_answer_was_lost_succeeds() -> None:
    """The first attempt lands but its answer is lost; the retry finds our own bytes."""
    clock = Clock()
    inner = Flaky(clock)
    attempts = {"n": 0}

    def land_then_lose_answer() -> BaseException | None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            MemoryBackend.put_if_absent(inner, "locks/mine", b"my lock")
            return TransientStorageError("read timeout")
        return None

    inner.fail = land_then_lose_answer
    _wrap(inner, clock).put_if_absent("locks/mine", b"my lock")
    assert inner.get("locks/mine") == b"my lock"


def test_put_if_absent_lost_to_another_writer_after_a_retry() -> None:
    clock = Clock()
    inner = Flaky(clock)
    attempts = {"n": 0}

    def other_writer_wins() -> BaseException | None:
        attempts["n"] += 1
        if attempts["n"] == 1:
            MemoryBackend.put_if_absent(inner, "locks/l", b"their lock")
            return TransientStorageError("read timeout")
        return None

    inner.fail = other_writer_wins
    with pytest.raises(ObjectExists):
        _wrap(inner, clock).put_if_absent("locks/l", b"my lock")
    assert inner.get("locks/l") == b"their lock"


def test_put_if_absent_taken_without_any_retry_is_object_exists() -> None:
    clock = Clock()
    inner = Flaky(clock)
    inner.put("locks/l", b"same bytes")
    with pytest.raises(ObjectExists):
        _wrap(inner, clock).put_if_absent("locks/l", b"same bytes")


# ---- circuit breaker: a dead endpoint costs one budget, not one per call ----------------------


def test_after_a_call_gave_up_further_calls_get_one_attempt() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"), attempt_cost=1.0)
    b = _wrap(inner, clock)
    with pytest.raises(StorageError, match="gave up after"):
        b.put("snapshots/s1", b"snapshot")
    gave_up_at, calls, sleeps = clock.now, inner.calls, len(clock.sleeps)
    # What a command does next: remove its lock. One attempt, no second budget.
    with pytest.raises(StorageError, match="not retried") as exc:
        b.delete("locks/mine")
    assert not isinstance(exc.value, TransientStorageError)
    assert "cannot reach s3 endpoint" in str(exc.value)
    assert inner.calls == calls + 1 and len(clock.sleeps) == sleeps
    assert clock.now - gave_up_at <= 1.0
    with pytest.raises(StorageError, match="not retried"):
        b.stat("config")
    assert inner.calls == calls + 2


def test_the_whole_command_fails_within_one_budget() -> None:
    clock = Clock()
    start = clock.now
    inner = Flaky(clock, up_at=float("inf"), attempt_cost=10.0)
    b = _wrap(inner, clock)
    for op in (lambda: b.get("config"), lambda: b.put("data/x", b"x"), lambda: b.delete("l")):
        with pytest.raises(StorageError):
            op()
    assert clock.now - start <= RetryPolicy().budget + 3 * 10.0


def test_a_success_closes_the_breaker() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock)
    with pytest.raises(StorageError):
        b.get("config")
    inner.up_at = clock.now  # the endpoint is back
    b.put("config", b"c")
    inner.up_at = clock.now + 20  # a short outage again: ridden out with retries
    assert b.get("config") == b"c"
    assert inner.calls > 3


def test_an_answer_other_than_success_also_closes_it() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock)
    with pytest.raises(StorageError):
        b.get("config")
    inner.up_at = clock.now
    with pytest.raises(ObjectNotFound):  # the endpoint answered: it is alive
        b.get("config")
    inner.up_at = clock.now + 20
    b.put("config", b"c")  # retried again


def test_after_the_window_calls_are_retried_again() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock, budget=60.0)
    with pytest.raises(StorageError):
        b.get("config")
    clock.now += 61  # longer than the window (the budget by default) since the last failure
    inner.up_at = clock.now + 20
    b.put("config", b"c")
    assert inner.get("config") == b"c"


def test_window_is_configurable_and_extended_by_fast_failures() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock, budget=60.0, fail_fast_window=10.0)
    with pytest.raises(StorageError):
        b.get("config")
    for _ in range(3):  # each fast failure is new evidence: the window starts again
        clock.now += 8
        with pytest.raises(StorageError, match="not retried"):
            b.stat("config")
    clock.now += 11
    inner.up_at = clock.now + 5
    MemoryBackend.put(inner, "config", b"c")
    assert b.stat("config") == ObjectInfo("config", 1)  # retried through the outage


def test_calls_in_flight_stop_retrying_when_another_gives_up() -> None:
    clock = Clock()
    inner = Flaky(clock, up_at=float("inf"))
    b = _wrap(inner, clock)
    calls = {"n": 0}

    def other_call_gives_up(seconds: float) -> None:
        calls["n"] += 1
        clock.sleep(seconds)
        if calls["n"] == 2:  # meanwhile, another thread's call gave up
            b._set_breaker(failed=True)

    b._sleep = other_call_gives_up
    with pytest.raises(StorageError, match="gave up after 3 attempts: a call to memory:"):
        b.get("config")


# ---- capabilities and optional operations are the inner backend's --------------------------


def test_capabilities_and_optional_operations_are_forwarded() -> None:
    from drengine.storage.base import Capabilities

    class Locked(MemoryBackend):
        capabilities = Capabilities(remote=True, object_lock=True)

        def object_lock_enabled(self) -> bool:
            return True

    clock = Clock()
    b = RetryingBackend(Locked(), sleep=clock.sleep, clock=clock)
    assert b.capabilities == Capabilities(remote=True, object_lock=True)
    assert b.remote is True
    assert b.object_lock_enabled() is True
    assert RetryingBackend(MemoryBackend()).capabilities == Capabilities()
    assert RetryingBackend(MemoryBackend()).remote is False
