"""Which snapshots a retention policy keeps, and removing the others.

``apply_policy`` is pure: it decides from the snapshots' own times, so the same list and
policy always give the same answer, whenever and wherever it runs. The rules follow restic's
``forget``:

- Snapshots are grouped (by host and paths unless told otherwise) and each group is judged
  on its own, so one host's backups never push out another's.
- ``--keep-last N`` keeps the N newest. ``--keep-hourly|daily|weekly|monthly|yearly N`` keep
  the newest snapshot of each of the N newest hours (days, ISO weeks, ...) that *have*
  snapshots; periods without snapshots do not count. Periods are calendar periods in the
  time zone recorded in each snapshot's time.
- If such a rule still has count left when it reaches the oldest snapshot of the group, it
  keeps that one too ("oldest daily snapshot"), so a young repository keeps its first backup.
- ``--keep-within 2y5m7d3h`` keeps everything newer than that span before the group's newest
  snapshot (not before now: a host that stopped backing up keeps its last history). Snapshots
  dated in the future do not count as the newest.
- ``--keep-tag a,b`` keeps every snapshot carrying all of those tags (``''``: no tags).
- A snapshot kept by any rule is kept; an empty policy is refused, as is a policy that would
  empty a group (only ``--keep-tag`` can do that).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from drengine.core.errors import IntegrityError, UsageError
from drengine.core.model import Snapshot
from drengine.repository.locks import HeldLock
from drengine.repository.repo import Repository

UNLIMITED = -1
GROUP_FIELDS = ("host", "paths", "tags")
DEFAULT_GROUP_BY = ("host", "paths")

TagList = tuple[str, ...]


# ---- parsing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Duration:
    """A calendar span: years and months are calendar steps, not fixed numbers of days."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def is_zero(self) -> bool:
        return not (self.years or self.months or self.days or self.hours)

    def __str__(self) -> str:
        parts = zip((self.years, self.months, self.days, self.hours), "ymdh", strict=True)
        return "".join(f"{n}{unit}" for n, unit in parts if n) or "0h"

    def before(self, t: datetime) -> datetime | None:
        """``t`` minus this span, as Go's ``AddDate`` then ``Add`` (restic's arithmetic):
        31 March minus 1m is 3 March, not 28 February. None if it falls before year 1."""
        month0 = t.month - 1 - self.months
        year = t.year - self.years + month0 // 12
        try:
            first = t.replace(year=year, month=month0 % 12 + 1, day=1)
            return first + timedelta(days=t.day - 1 - self.days, hours=-self.hours)
        except (ValueError, OverflowError):
            return None


_DURATION = re.compile(r"(\d+)([ymdh])")


def parse_duration(text: str) -> Duration:
    """``2y5m7d3h``: numbers with the units y, m, d, h, each at most once, in any order."""
    s = text.strip()
    pos, seen = 0, dict.fromkeys("ymdh", 0)
    used: set[str] = set()
    while pos < len(s):
        m = _DURATION.match(s, pos)
        if m is None or m.group(2) in used:
            break
        used.add(m.group(2))
        seen[m.group(2)] = int(m.group(1))
        pos = m.end()
    if not s or pos != len(s):
        raise UsageError(
            f"invalid duration {text!r}: use numbers with y, m, d and h, like 2y5m7d3h"
        )
    return Duration(seen["y"], seen["m"], seen["d"], seen["h"])


def parse_count(text: str, option: str) -> int:
    """A ``--keep-*`` count: a number, or ``unlimited`` (every period with snapshots)."""
    s = text.strip().lower()
    if s == "unlimited":
        return UNLIMITED
    if not s.isdigit():
        raise UsageError(f"{option} takes a number or 'unlimited', not {text!r}")
    return int(s)


def parse_taglist(text: str) -> TagList:
    """``a,b`` means both tags; ``''`` means a snapshot without tags."""
    return tuple(sorted({t.strip() for t in text.split(",") if t.strip()}))


def has_tags(tags: Iterable[str], taglist: TagList) -> bool:
    have = set(tags)
    return not have if not taglist else all(t in have for t in taglist)


def matches_filter(snap: Snapshot, hosts: Sequence[str], taglists: Sequence[TagList]) -> bool:
    """The ``--host``/``--tag`` filter: any of the hosts, and any of the tag lists."""
    return (not hosts or snap.host in hosts) and (
        not taglists or any(has_tags(snap.tags, tl) for tl in taglists)
    )


def parse_group_by(text: str) -> tuple[str, ...]:
    """``host,paths`` (the default), any subset of host, paths and tags, or '' for one group."""
    fields = [f.strip() for f in text.split(",") if f.strip()]
    for f in fields:
        if f not in GROUP_FIELDS:
            raise UsageError(f"--group-by: unknown field {f!r} (use host, paths and/or tags)")
    return tuple(f for f in GROUP_FIELDS if f in fields)


# ---- the policy ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """Counts are 0 (rule off), a positive number, or ``UNLIMITED``."""

    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration = field(default_factory=Duration)
    tags: tuple[TagList, ...] = ()

    def __post_init__(self) -> None:
        for name, n in self._counts():
            if n < UNLIMITED:
                raise UsageError(f"--keep-{name} cannot be negative")

    def _counts(self) -> list[tuple[str, int]]:
        names = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
        return [(n, getattr(self, n)) for n in names]

    def is_empty(self) -> bool:
        return all(n == 0 for _, n in self._counts()) and self.within.is_zero() and not self.tags

    def describe(self) -> str:
        """One line for people, such as ``keep 7 daily, 4 weekly snapshots``."""
        counts = [
            f"{'all' if n == UNLIMITED else n} {'latest' if name == 'last' else name}"
            for name, n in self._counts()
            if n
        ]
        parts = [f"{', '.join(counts)} snapshots"] if counts else []
        for tl in self.tags:
            parts.append(f"all snapshots with tags {','.join(tl)}" if tl else "all untagged")
        if not self.within.is_zero():
            parts.append(f"all snapshots within {self.within} of the newest")
        return "keep " + (" and ".join(parts) or "everything")


# ---- decisions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GroupKey:
    """What a group's snapshots share; a field not grouped by is None."""

    host: str | None = None
    paths: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, object]:
        return {
            "host": self.host,
            "paths": None if self.paths is None else list(self.paths),
            "tags": None if self.tags is None else list(self.tags),
        }

    def __str__(self) -> str:
        parts = []
        if self.host is not None:
            parts.append(f"host {self.host}")
        if self.paths is not None:
            parts.append(f"paths {', '.join(self.paths) or '(none)'}")
        if self.tags is not None:
            parts.append(f"tags {', '.join(self.tags) or '(none)'}")
        return ", ".join(parts)  # empty when not grouped


@dataclass(frozen=True)
class Kept:
    snapshot: Snapshot
    reasons: tuple[str, ...]


@dataclass
class GroupDecision:
    """One group's outcome; both lists are oldest first, like ``snapshots``."""

    key: GroupKey
    keep: list[Kept]
    remove: list[Snapshot]


def snapshot_time(snap: Snapshot) -> datetime:
    try:
        t = datetime.fromisoformat(snap.time)
    except ValueError:
        raise IntegrityError(f"snapshot {snap.id} has a malformed time {snap.time!r}") from None
    # Times without a zone are read as UTC so they compare with the others.
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def group_key(snap: Snapshot, group_by: Sequence[str]) -> GroupKey:
    return GroupKey(
        host=snap.host if "host" in group_by else None,
        paths=tuple(sorted(snap.paths)) if "paths" in group_by else None,
        tags=tuple(sorted(set(snap.tags))) if "tags" in group_by else None,
    )


Bucket = Callable[[datetime, int], object]

_BUCKETS: tuple[tuple[str, Bucket, str], ...] = (
    ("last", lambda t, nr: nr, "last snapshot"),  # every snapshot is its own bucket
    ("hourly", lambda t, nr: (t.year, t.month, t.day, t.hour), "hourly snapshot"),
    ("daily", lambda t, nr: (t.year, t.month, t.day), "daily snapshot"),
    ("weekly", lambda t, nr: tuple(t.isocalendar())[:2], "weekly snapshot"),  # ISO weeks
    ("monthly", lambda t, nr: (t.year, t.month), "monthly snapshot"),
    ("yearly", lambda t, nr: t.year, "yearly snapshot"),
)


def _judge(snaps: list[Snapshot], policy: Policy, now: datetime | None) -> list[tuple[str, ...]]:
    """Reasons to keep each snapshot of ``snaps`` (newest first); empty means remove."""
    times = [snapshot_time(s) for s in snaps]
    present = [t for t in times if now is None or t <= now]
    # No snapshot up to now: the group's newest is unknown, so keep-within keeps everything.
    newest = max(present) if present else None
    threshold = None
    if not policy.within.is_zero() and newest is not None:
        threshold = policy.within.before(newest)
    remaining = {name: getattr(policy, name) for name, _, _ in _BUCKETS}
    last_seen: dict[str, object] = {}
    out: list[tuple[str, ...]] = []
    for nr, (snap, t) in enumerate(zip(snaps, times, strict=True)):
        reasons = [
            f"has tags {','.join(tl)}" if tl else "has no tags"
            for tl in policy.tags
            if has_tags(snap.tags, tl)
        ]
        if not policy.within.is_zero() and (threshold is None or t > threshold):
            reasons.append(f"within {policy.within}")
        for name, bucket, reason in _BUCKETS:
            if remaining[name] == 0:
                continue
            value = bucket(t, nr)
            new_period = name not in last_seen or last_seen[name] != value
            if new_period or nr == len(snaps) - 1:
                reasons.append(reason if new_period else f"oldest {reason}")
                last_seen[name] = value
                if remaining[name] > 0:
                    remaining[name] -= 1
        out.append(tuple(reasons))
    return out


def apply_policy(
    snapshots: Iterable[Snapshot],
    policy: Policy,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    *,
    now: datetime | None = None,
) -> list[GroupDecision]:
    """Group ``snapshots`` and decide, per group, which to keep (and why) and which to remove.

    ``now`` only marks snapshots dated after it as "in the future" for ``keep-within``; the
    CLI passes the clock, tests pass nothing or a fixed time. Groups come sorted by key.
    """
    if policy.is_empty():
        raise UsageError("refusing to apply an empty policy: it would remove every snapshot")
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    groups: dict[GroupKey, list[Snapshot]] = {}
    for snap in snapshots:
        groups.setdefault(group_key(snap, group_by), []).append(snap)
    decisions = []
    for key in sorted(groups, key=_sort_key):
        # Newest first; equal times are ordered by ID so the outcome never depends on input order.
        snaps = sorted(groups[key], key=lambda s: (snapshot_time(s), s.id), reverse=True)
        keep: list[Kept] = []
        remove: list[Snapshot] = []
        for snap, reasons in zip(snaps, _judge(snaps, policy, now), strict=True):
            if reasons:
                keep.append(Kept(snap, reasons))
            else:
                remove.append(snap)
        if not keep:
            where = f" of the group {key}" if str(key) else ""
            raise UsageError(
                f"refusing to remove every snapshot{where}: "
                "none of them matches the --keep-tag options"
            )
        decisions.append(GroupDecision(key, keep[::-1], remove[::-1]))
    return decisions


def _sort_key(key: GroupKey) -> tuple[str, tuple[str, ...], tuple[str, ...]]:
    return (key.host or "", key.paths or (), key.tags or ())


# ---- removing -----------------------------------------------------------------------------


def remove_snapshots(repo: Repository, ids: Iterable[str], lock: HeldLock) -> list[str]:
    """Delete snapshot objects; the caller holds the exclusive ``lock`` from before it chose
    them. Their data stays until prune. Returns the IDs deleted."""
    done = []
    ids = list(ids)
    if ids:
        lock.prove()  # the lock object itself is still ours: one request, before any delete
    for oid in ids:
        lock.check_valid()
        repo.delete_snapshot(oid)
        done.append(oid)
    return done
