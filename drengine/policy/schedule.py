"""Schedules: a 5-field cron expression (as crontab(5)) or an interval (``15m``, ``10s``),
in the policy's time zone, through APScheduler 3's triggers (the daemon runs the same).

Across a daylight-saving change a cron time that does not exist that day (02:30 when the
clocks go from 02:00 to 03:00) fires once, at the same instant an hour later on the wall
clock, and a time that exists twice fires once: what cron users expect.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger

from drengine.policy.model import span_seconds


class CronOnce(CronTrigger):  # type: ignore[misc]
    """A cron trigger that runs a job at a fixed hour once on the day the clocks go back,
    as cron does, not in both of the repeated hours; jobs of every hour run in both."""

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        t: datetime | None = super().get_next_fire_time(previous, now)
        if t is None or previous is None or self._every_hour:
            return t
        if t.replace(tzinfo=None) == previous.replace(tzinfo=None):  # the same wall time again
            # Ask anew from just after it: given the previous run, APScheduler starts from
            # it plus a microsecond in wall-clock time, which lands on the repeat again.
            later = t.astimezone(UTC) + timedelta(microseconds=1)
            t = super().get_next_fire_time(None, later)
        return t

    @property
    def _every_hour(self) -> bool:
        hour = next(f for f in self.fields if f.name == "hour")
        return str(hour) == "*"


class Every(BaseTrigger):  # type: ignore[misc]
    """Every ``seconds``, counted in real time from ``start`` (the clocks changing for DST
    neither shortens nor stretches an interval)."""

    def __init__(self, seconds: int, start: datetime, timezone: ZoneInfo) -> None:
        self.seconds, self.start, self.timezone = seconds, start.astimezone(UTC), timezone

    def get_next_fire_time(self, previous: datetime | None, now: datetime) -> datetime | None:
        step = timedelta(seconds=self.seconds)
        since = now.astimezone(UTC) - self.start
        n = max(0, -(-since // step))  # the first run at or after now
        return (self.start + n * step).astimezone(self.timezone)

    def __str__(self) -> str:
        return f"every {self.seconds} s"


def parse_schedule(text: str, timezone: str, start: datetime | None = None) -> BaseTrigger:
    """A trigger; ``ValueError`` naming what is wrong. An interval counts from ``start``
    (default: now)."""
    s = text.strip()
    tz = ZoneInfo(timezone)
    if len(s.split()) > 1:
        try:
            values = CronTrigger.from_crontab(s, timezone=tz)
        except ValueError as e:
            raise ValueError(f"{s!r} is not a cron schedule: {_cron_reason(e)}") from None
        m, h, dom, mon, dow = s.split()
        del values
        return CronOnce(minute=m, hour=h, day=dom, month=mon, day_of_week=dow, timezone=tz)
    try:
        seconds = span_seconds(s)
    except ValueError:
        raise ValueError(
            f"{s!r} is not a schedule: use 5 cron fields (30 2 * * *) or an interval (15m)"
        ) from None
    return Every(seconds, start or datetime.now(UTC), tz)


def _cron_reason(e: ValueError) -> str:
    msg = str(e)
    return msg.replace("Error validating expression", "field").replace(
        "Wrong number", "wrong number"
    )


def next_runs(trigger: BaseTrigger, now: datetime, count: int = 5) -> list[datetime]:
    """The next ``count`` fire times after ``now`` (as the daemon would run them)."""
    out: list[datetime] = []
    prev = None
    cur = now
    for _ in range(count):
        t = trigger.get_next_fire_time(prev, cur)
        if t is None:
            break
        out.append(t.astimezone(UTC).astimezone(t.tzinfo))  # a wall time that exists
        # Step on in UTC: arithmetic on a zoned time is wall-clock arithmetic, which goes
        # round in circles in the hour that a DST change repeats.
        prev, cur = t, t.astimezone(UTC) + timedelta(microseconds=1)
    return out
