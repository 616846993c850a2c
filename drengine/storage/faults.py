"""Fault injection for in-process tests: a wrapper around any ``Backend`` that fails, delays,
truncates or corrupts chosen calls, so backup, restore, prune and repair can be tested
against storage that misbehaves the way real storage does.

    backend = FaultyBackend(MemoryBackend()).fail("put", nth=3, prefix="data/")
    backend.corrupt("get", prefix="index/", probability=0.5, seed=1)
    ...
    assert backend.count("put") == 5 and backend.injected("fail")[0].name.startswith("data/")

A rule picks calls of one method (``put``, ``put_if_absent``, ``get``, ``list``, ``delete``,
``stat``) whose object name (for ``list``: the listed prefix) starts with ``prefix``, then
either the ``nth`` of them (1-based, counting only the calls the rule matches), or each with
``probability`` (a ``random.Random(seed)`` of the rule's own, so a run is reproducible), or
every one; ``times`` caps how often it fires. Several rules may fire on one call: delays
first, then failures, then truncation and corruption of the data.

Thread-safe: the rules and the call log are updated under one lock, which is never held
while the wrapped backend works or a delay sleeps.
"""

from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from drengine.core.errors import StorageError
from drengine.storage.base import Backend, BackendWrapper, Buffer, ObjectInfo

METHODS = ("put", "put_if_absent", "get", "list", "delete", "stat")
_DATA_METHODS = ("put", "put_if_absent", "get")  # what corrupt can change
_WRITES = ("put", "put_if_absent", "delete")  # what can fail after it happened
_ORDER = {"delay": 0, "fail": 1, "truncate": 2, "corrupt": 3}  # on a call hit by several

# An exception to raise: an instance (raised as is), a class (made with a message naming the
# call), or a factory called with (method, name).
ErrorSpec = BaseException | type[BaseException] | Callable[[str, str], BaseException]


def no_space(method: str, name: str) -> StorageError:
    """A full disk, as the local backend reports it: a ``StorageError`` caused by ENOSPC."""
    cause = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), name)
    error = StorageError(f"cannot write {name}: {cause.strerror} (injected fault, {method})")
    error.__cause__ = cause
    return error


@dataclass(eq=False)
class Fault:
    """One rule; ``seen`` and ``fired`` count the calls it matched and acted on."""

    action: str  # "fail", "delay", "truncate" or "corrupt"
    method: str
    prefix: str = ""
    nth: int | None = None
    probability: float | None = None
    times: int | None = None
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    error: ErrorSpec = StorageError  # fail
    landed: bool = False  # fail after the wrapped call happened: a write whose answer was lost
    seconds: float = 0.0  # delay
    keep: int | None = None  # truncate: bytes (list: entries) kept; None: half
    position: int | None = None  # corrupt: the byte to flip; None: one picked by rng
    seen: int = 0
    fired: int = 0

    def decide(self, method: str, name: str) -> bool:
        """Whether this call is hit; the caller holds the backend's lock."""
        if method != self.method or not name.startswith(self.prefix):
            return False
        self.seen += 1
        if self.times is not None and self.fired >= self.times:
            return False
        if self.nth is not None:
            hit = self.seen == self.nth
        elif self.probability is not None:
            hit = self.rng.random() < self.probability
        else:
            hit = True
        if hit:
            self.fired += 1
        return hit


@dataclass(frozen=True, slots=True)
class Call:
    """One call the wrapper saw: ``n`` counts the calls of ``method`` (1-based)."""

    method: str
    name: str  # the object name; for list, the prefix
    n: int
    faults: tuple[str, ...]  # actions applied, e.g. ("delay", "fail"); () if none


class FaultyBackend(BackendWrapper):
    """Wraps ``inner`` and injects the faults its rules describe (module docstring).

    With no rules it passes every call through unchanged and only counts and logs calls.
    ``sleep`` is injectable so delays cost no real time in tests that do not want them.
    """

    def __init__(self, inner: Backend, *, sleep: Callable[[float], None] = time.sleep) -> None:
        super().__init__(inner)
        self._sleep = sleep
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._calls: list[Call] = []
        self._counts: dict[str, int] = dict.fromkeys(METHODS, 0)

    # ---- rules --------------------------------------------------------------------------

    def fail(
        self,
        method: str,
        *,
        error: ErrorSpec = StorageError,
        landed: bool = False,
        nth: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        prefix: str = "",
        times: int | None = None,
    ) -> FaultyBackend:
        """Raise ``error`` (``StorageError``, ``TransientStorageError``, ``ObjectNotFound``,
        ``no_space``, ...) instead of the call, or after it if ``landed`` (writes only)."""
        if landed and method not in _WRITES:
            raise ValueError(f"landed needs a write ({', '.join(_WRITES)}), not {method}")
        fault = Fault("fail", method, error=error, landed=landed)
        return self._add(fault, nth, probability, seed, prefix, times)

    def delay(
        self,
        method: str,
        seconds: float,
        *,
        nth: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        prefix: str = "",
        times: int | None = None,
    ) -> FaultyBackend:
        """Sleep ``seconds`` before the call (a slow or stalled endpoint)."""
        if seconds < 0:
            raise ValueError("a delay cannot be negative")
        fault = Fault("delay", method, seconds=seconds)
        return self._add(fault, nth, probability, seed, prefix, times)

    def truncate(
        self,
        method: str,
        *,
        keep: int | None = None,
        nth: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        prefix: str = "",
        times: int | None = None,
    ) -> FaultyBackend:
        """``get`` returns, ``put``/``put_if_absent`` store, only the first ``keep`` bytes
        (default half, always fewer than all); ``list`` drops entries the same way."""
        if method not in (*_DATA_METHODS, "list"):
            raise ValueError(f"truncate works on put, put_if_absent, get and list, not {method}")
        if keep is not None and keep < 0:
            raise ValueError("keep cannot be negative")
        fault = Fault("truncate", method, keep=keep)
        return self._add(fault, nth, probability, seed, prefix, times)

    def corrupt(
        self,
        method: str,
        *,
        position: int | None = None,
        nth: int | None = None,
        probability: float | None = None,
        seed: int = 0,
        prefix: str = "",
        times: int | None = None,
    ) -> FaultyBackend:
        """Flip one byte (all its bits) of what ``get`` returns or ``put``/``put_if_absent``
        store: at ``position`` (from the end if negative), else one the rule's rng picks.
        Empty data stays as it is."""
        if method not in _DATA_METHODS:
            raise ValueError(f"corrupt works on put, put_if_absent and get, not {method}")
        fault = Fault("corrupt", method, position=position)
        return self._add(fault, nth, probability, seed, prefix, times)

    def _add(
        self,
        fault: Fault,
        nth: int | None,
        probability: float | None,
        seed: int,
        prefix: str,
        times: int | None,
    ) -> FaultyBackend:
        if fault.method not in METHODS:
            raise ValueError(f"unknown method {fault.method!r}; one of {', '.join(METHODS)}")
        if nth is not None and probability is not None:
            raise ValueError("give nth or probability, not both")
        if nth is not None and nth < 1:
            raise ValueError("nth counts from 1")
        if probability is not None and not 0.0 <= probability <= 1.0:
            raise ValueError("probability must be between 0 and 1")
        if times is not None and times < 0:
            raise ValueError("times cannot be negative")
        fault.nth, fault.probability, fault.prefix, fault.times = nth, probability, prefix, times
        fault.rng = random.Random(seed)
        with self._lock:
            self._faults.append(fault)
        return self

    def clear(self) -> None:
        """Remove every rule (the storage "recovers"); the call log stays."""
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return list(self._faults)

    # ---- what happened ------------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call so far, in the order they began."""
        with self._lock:
            return list(self._calls)

    def count(self, method: str | None = None) -> int:
        """Calls of ``method`` so far (of every method if None)."""
        with self._lock:
            return sum(self._counts.values()) if method is None else self._counts[method]

    def injected(self, action: str | None = None) -> list[Call]:
        """The calls a fault acted on (only those hit by ``action`` if given)."""
        return [c for c in self.calls if c.faults and (action is None or action in c.faults)]

    # ---- applying rules -----------------------------------------------------------------

    def _enter(self, method: str, name: str) -> list[Fault]:
        with self._lock:
            self._counts[method] += 1
            hits = [f for f in self._faults if f.decide(method, name)]
            hits.sort(key=lambda f: _ORDER[f.action])
            actions = tuple(f.action for f in hits)
            self._calls.append(Call(method, name, self._counts[method], actions))
        return hits

    def _error(self, fault: Fault, method: str, name: str) -> BaseException:
        spec = fault.error
        if isinstance(spec, BaseException):
            return spec
        if isinstance(spec, type):
            error: BaseException = spec(f"injected fault: {method} {name} in {self.location}")
            return error
        return spec(method, name)

    def _before(self, hits: list[Fault], method: str, name: str) -> Fault | None:
        """Sleep the delays, raise a failure that comes before the call; return one that
        comes after it."""
        after = None
        for fault in hits:
            if fault.action == "delay":
                self._sleep(fault.seconds)
            elif fault.action == "fail":
                if not fault.landed:
                    raise self._error(fault, method, name)
                after = after or fault
        return after

    def _damage(self, hits: list[Fault], data: Buffer) -> Buffer:
        for fault in hits:
            if fault.action == "truncate":
                keep = len(data) // 2 if fault.keep is None else fault.keep
                data = bytes(memoryview(data)[: min(keep, max(len(data) - 1, 0))])
            elif fault.action == "corrupt" and len(data):
                if fault.position is None:
                    with self._lock:  # the rule's rng is shared by threads
                        pos = fault.rng.randrange(len(data))
                else:
                    pos = fault.position % len(data)
                damaged = bytearray(data)
                damaged[pos] ^= 0xFF
                data = bytes(damaged)
        return data

    def _write(self, method: str, name: str, data: Buffer, op: Callable[[Buffer], None]) -> None:
        hits = self._enter(method, name)
        after = self._before(hits, method, name)
        op(self._damage(hits, data))
        if after is not None:
            raise self._error(after, method, name)

    # ---- the contract's operations ------------------------------------------------------

    def put(self, name: str, data: Buffer) -> None:
        self._write("put", name, data, lambda d: self.inner.put(name, d))

    def put_if_absent(self, name: str, data: Buffer) -> None:
        self._write("put_if_absent", name, data, lambda d: self.inner.put_if_absent(name, d))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        hits = self._enter("get", name)
        self._before(hits, "get", name)
        return bytes(self._damage(hits, self.inner.get(name, offset, length)))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        hits = self._enter("list", prefix)  # counted when called, like the other methods

        def listing() -> Iterator[ObjectInfo]:
            # Faults surface when the listing is read, as a real backend's errors do.
            self._before(hits, "list", prefix)
            infos = [*self.inner.list(prefix)]
            for fault in hits:
                if fault.action == "truncate":
                    keep = len(infos) // 2 if fault.keep is None else fault.keep
                    infos = infos[: min(keep, max(len(infos) - 1, 0))]
            yield from infos

        return listing()

    def delete(self, name: str) -> None:
        hits = self._enter("delete", name)
        after = self._before(hits, "delete", name)
        self.inner.delete(name)
        if after is not None:
            raise self._error(after, "delete", name)

    def stat(self, name: str) -> ObjectInfo:
        hits = self._enter("stat", name)
        self._before(hits, "stat", name)
        return self.inner.stat(name)
