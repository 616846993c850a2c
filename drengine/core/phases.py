"""Wall time per phase of a restore, a check or a drill: what measured RTO is made of.

A restore's phases overlap: while one thread fetches a pack another decrypts a blob and a
third writes a file. Each phase therefore keeps two figures: ``wall``, the time during which
at least one thread was in it (the union of its intervals, what a stopwatch on that phase
would show), and ``busy``, the time summed over threads. Sequential phases (opening the
repository, loading the index) have equal figures. The sum of the phases' wall times can
exceed the operation's total because they overlap; ``docs/drills.md`` explains each phase.

Spans are cheap (two clock reads and a lock, per blob or per file, never per byte), so every
restore measures itself: ``restore --json`` prints the same phases a drill records.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

# The order phases are shown in; an operation uses those that apply to it.
ORDER = ("open", "index", "plan", "fetch", "decrypt", "write", "load", "verify")

# Called when a phase's interval closes (no thread is in it any more): (phase, seconds).
PhaseCallback = Callable[[str, float], None]


class _Span:
    __slots__ = ("_name", "_phases", "_start")

    def __init__(self, phases: Phases, name: str) -> None:
        self._phases = phases
        self._name = name
        self._start = 0.0

    def __enter__(self) -> None:
        self._start = self._phases._enter(self._name)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._phases._exit(self._name, self._start)


class Phases:
    """Timings of one operation's phases; safe to use from many threads."""

    def __init__(self, on_phase: PhaseCallback | None = None) -> None:
        self._on_phase = on_phase
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._since: dict[str, float] = {}
        self._wall: dict[str, float] = {}
        self._busy: dict[str, float] = {}
        self.started = time.perf_counter()

    def span(self, name: str) -> _Span:
        """``with phases.span("fetch"): ...`` times the block as part of that phase."""
        return _Span(self, name)

    def _enter(self, name: str) -> float:
        now = time.perf_counter()
        with self._lock:
            n = self._active.get(name, 0)
            if n == 0:
                self._since[name] = now
            self._active[name] = n + 1
        return now

    def _exit(self, name: str, start: float) -> None:
        now = time.perf_counter()
        closed = None
        with self._lock:
            self._busy[name] = self._busy.get(name, 0.0) + (now - start)
            n = self._active[name] - 1
            self._active[name] = n
            if n == 0:
                closed = now - self._since[name]
                self._wall[name] = self._wall.get(name, 0.0) + closed
        if closed is not None and self._on_phase is not None:
            self._on_phase(name, closed)

    def merge(self, name: str, wall: float, busy: float) -> None:
        """Add a phase measured in another process (a restore's writer processes): busy
        times add up; the wall time becomes the longer of the two, a lower bound of their
        union (the intervals themselves are not sent)."""
        with self._lock:
            self._busy[name] = self._busy.get(name, 0.0) + busy
            self._wall[name] = max(self._wall.get(name, 0.0), wall)

    def wall(self, name: str) -> float:
        with self._lock:
            return self._wall.get(name, 0.0)

    def busy(self, name: str) -> float:
        with self._lock:
            return self._busy.get(name, 0.0)

    def names(self) -> list[str]:
        with self._lock:
            seen = set(self._wall) | set(self._busy)
        known = [n for n in ORDER if n in seen]
        return known + sorted(seen - set(ORDER))

    def elapsed(self) -> float:
        """Seconds since this object was made (the operation's total wall time)."""
        return time.perf_counter() - self.started

    def to_json(self) -> list[dict[str, object]]:
        """``[{"phase", "wall_ms", "busy_ms"}]`` in the order of ``ORDER``."""
        return [
            {"phase": n, "wall_ms": _ms(self.wall(n)), "busy_ms": _ms(self.busy(n))}
            for n in self.names()
        ]


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


class _NoSpan:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class NoPhases(Phases):
    """Times nothing: for callers that do not measure (the cost of a span is then nil)."""

    _NONE = _NoSpan()

    def span(self, name: str) -> _Span:
        return self._NONE  # type: ignore[return-value]


NO_PHASES = NoPhases()
