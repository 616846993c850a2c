"""Retry transient storage failures: a wrapper around any ``Backend`` (restic's shape).

A backend says what is worth retrying by raising ``TransientStorageError`` (throttling, 5xx,
timeouts, lost connections). Everything else (``ObjectNotFound``, ``ObjectExists``, access
denied, a short read) fails at once: retrying cannot change the answer.

Each call retries with exponential backoff and full jitter (a random delay between 0 and
``base * 2**attempt``, capped), so many threads or hosts hitting one throttled endpoint spread
out instead of retrying in lockstep. A call gives up when the next attempt would start after
its time budget, and then raises a plain ``StorageError`` naming the last failure.

After a call gave up, the endpoint is taken for dead: calls within ``fail_fast_window`` of the
last failure get one attempt and no retries (a circuit breaker), so a command on a dead
endpoint fails once within the budget instead of once per call (removing its lock would
spend a second budget). Any answer from the backend (a success, a missing object, access
denied) closes the breaker again.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError
from drengine.storage.base import Backend, BackendWrapper, Buffer, ObjectInfo, TemporaryFile
from drengine.storage.options import BackendSpec

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientStorageError(StorageError):
    """A failure that may succeed if tried again: throttling, 5xx, timeouts, resets."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one backend call may keep trying.

    The defaults ride out an outage of a minute or so (a server restart, a load balancer
    failing over) and report a dead endpoint within about two minutes plus one attempt's
    timeout, rather than hanging a backup or a 3 a.m. restore forever.
    """

    budget: float = 120.0  # seconds from the first attempt; no attempt starts after this
    base_delay: float = 0.5  # the first backoff is random in [0, base_delay]
    max_delay: float = 15.0  # cap of one backoff
    max_attempts: int = 50  # a bound even if attempts fail instantly and delays come out tiny
    # After a call gave up: calls within this many seconds of the last failure get a single
    # attempt. None: the budget (an endpoint dead for a whole budget is unlikely back sooner).
    fail_fast_window: float | None = None


class RetryingBackend(BackendWrapper):
    """Wraps ``inner``; retries ``TransientStorageError`` within ``policy``.

    ``sleep``, ``clock`` and ``rng`` are injectable so tests run without waiting.
    """

    def __init__(
        self,
        inner: Backend,
        policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy or RetryPolicy()
        # Set by ``open_backend``: how a worker process opens this storage again.
        self.spec: BackendSpec | None = None
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()
        self._breaker_lock = threading.Lock()
        self._last_failure: float | None = None  # set when a call gives up; None: closed

    # ---- circuit breaker ----------------------------------------------------------------

    def _seconds_since_dead(self) -> float | None:
        """Seconds since a call last gave up, if the breaker is open; else None."""
        with self._breaker_lock:
            last = self._last_failure
        if last is None:
            return None
        ago = self._clock() - last
        window = self.policy.fail_fast_window
        return ago if ago <= (self.policy.budget if window is None else window) else None

    def _set_breaker(self, failed: bool) -> None:
        with self._breaker_lock:
            self._last_failure = self._clock() if failed else None

    # ---- retries ------------------------------------------------------------------------

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        p = self.policy
        start = self._clock()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = fn()
            except TransientStorageError as e:
                elapsed = self._clock() - start
                dead_for = self._seconds_since_dead()
                if dead_for is not None:  # another call gave up: do not spend a budget again
                    self._set_breaker(failed=True)
                    done = "not retried" if attempt == 1 else f"gave up after {attempt} attempts"
                    raise StorageError(
                        f"{e} ({done}: a call to {self.location} had given up {dead_for:.0f} s "
                        "before)"
                    ) from e
                delay = self._rng.uniform(0.0, min(p.max_delay, p.base_delay * 2 ** (attempt - 1)))
                if attempt >= p.max_attempts or elapsed + delay > p.budget:
                    self._set_breaker(failed=True)
                    raise StorageError(
                        f"{e} (gave up after {attempt} attempts in {elapsed:.0f} s)"
                    ) from e
                log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, e, delay, attempt)
                self._sleep(delay)
            except StorageError:
                self._set_breaker(failed=False)  # an answer (not found, denied): it is alive
                raise
            else:
                self._set_breaker(failed=False)
                return result

    def put(self, name: str, data: Buffer) -> None:
        self._call(f"put {name}", lambda: self.inner.put(name, data))

    def put_if_absent(self, name: str, data: Buffer) -> None:
        # A write may land on the server while its answer is lost (a timeout, a reset); the
        # retry then finds the name taken by our own bytes. Objects written this way carry
        # random content (locks, the config), so equal bytes mean it was our write.
        failed_before = False

        def attempt() -> None:
            nonlocal failed_before
            try:
                self.inner.put_if_absent(name, data)
            except TransientStorageError:
                failed_before = True
                raise

        try:
            self._call(f"put {name}", attempt)
        except ObjectExists:
            if not failed_before:
                raise
            try:
                stored = self.get(name)
            except ObjectNotFound:
                stored = None
            if stored is None or stored != bytes(data):
                raise
            log.info("put %s: an earlier attempt had succeeded", name)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(f"get {name}", lambda: self.inner.get(name, offset, length))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Read the whole listing before yielding: a listing retried from its start must not
        # hand the caller names twice. About 200 bytes per object; callers that list packs
        # build a map of all of them anyway.
        infos = self._call(f"list {prefix}", lambda: [*self.inner.list(prefix)])
        yield from infos

    def delete(self, name: str) -> None:
        self._call(f"delete {name}", lambda: self.inner.delete(name))

    def stat(self, name: str) -> ObjectInfo:
        return self._call(f"stat {name}", lambda: self.inner.stat(name))

    # Optional operations (base.py): retried like the others; set_retention does no I/O.

    def object_lock_enabled(self) -> bool:
        return self._call("object lock configuration", self.inner.object_lock_enabled)

    def retained_until(self, name: str) -> datetime | None:
        return self._call(f"retention of {name}", lambda: self.inner.retained_until(name))

    def list_temporary(self) -> Sequence[TemporaryFile]:
        return self._call("list temporary files", lambda: [*self.inner.list_temporary()])

    def remove_temporary(self, name: str) -> None:
        self._call(f"remove {name}", lambda: self.inner.remove_temporary(name))
