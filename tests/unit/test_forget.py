"""The retention policy of ``forget`` (restic's semantics) on hand-built snapshot lists."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta

import pytest

from drengine.core.errors import UsageError
from drengine.core.model import Snapshot
from drengine.engine.forget import (
    UNLIMITED,
    Duration,
    GroupDecision,
    GroupKey,
    Policy,
    apply_policy,
    matches_filter,
    parse_count,
    parse_duration,
    parse_group_by,
    parse_taglist,
    remove_snapshots,
)
from drengine.repository.locks import locked
from drengine.repository.repo import Repository


def snap(
    time: str | datetime,
    host: str = "mopped",
    paths: tuple[str, ...] = ("/home/user/work",),
    tags: tuple[str, ...] = (),
    sid: str | None = None,
) -> Snapshot:
    text = time.isoformat() if isinstance(time, datetime) else time
    if sid is None:
        sid = hashlib.sha256(f"{text}|{host}|{paths}|{tags}".encode()).hexdigest()
    return Snapshot(text, host, "user", list(paths), list(tags), b"\0" * 32, "test", id=sid)


def at(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC)


def only(decisions: list[GroupDecision]) -> GroupDecision:
    assert len(decisions) == 1, decisions
    return decisions[0]


def kept_times(d: GroupDecision) -> list[str]:
    return [k.snapshot.time[:19] for k in d.keep]


def reasons(d: GroupDecision) -> dict[str, tuple[str, ...]]:
    return {k.snapshot.time[:19]: k.reasons for k in d.keep}


def daily(start: date, end: date, hour: int = 12) -> list[Snapshot]:
    days = (end - start).days + 1
    return [
        snap(at(start.year, start.month, start.day, hour) + timedelta(days=i)) for i in range(days)
    ]


# ---- restic's documented examples -------------------------------------------------------


def test_twelve_sundays_keep_daily_4_keeps_the_last_four_sundays() -> None:
    sundays = [snap(at(2019, 9, 1, 11) + timedelta(weeks=i)) for i in range(12)]
    d = only(apply_policy(sundays, Policy(daily=4)))
    assert kept_times(d) == [
        "2019-10-27T11:00:00",
        "2019-11-03T11:00:00",
        "2019-11-10T11:00:00",
        "2019-11-17T11:00:00",
    ]
    assert all(k.reasons == ("daily snapshot",) for k in d.keep)
    assert [s.time[:10] for s in d.remove] == [
        "2019-09-01", "2019-09-08", "2019-09-15", "2019-09-22",
        "2019-09-29", "2019-10-06", "2019-10-13", "2019-10-20",
    ]  # fmt: skip


def test_daily_weekly_monthly_yearly_over_three_years_of_daily_backups() -> None:
    # restic's example, scaled down: daily backups, the newest on Sunday 2023-12-31.
    snaps = daily(date(2021, 1, 1), date(2023, 12, 31))
    d = only(apply_policy(snaps, Policy(daily=7, weekly=5, monthly=12, yearly=3)))
    kept = set(kept_times(d))
    dailies = {f"2023-12-{day:02d}T12:00:00" for day in range(25, 32)}
    weeklies = {f"2023-12-{day:02d}T12:00:00" for day in (3, 10, 17, 24, 31)}
    month_ends = {
        f"{(date(2023, m % 12 + 1, 1) if m < 12 else date(2024, 1, 1)) - timedelta(days=1)}"
        "T12:00:00"
        for m in range(1, 13)
    }
    year_ends = {"2021-12-31T12:00:00", "2022-12-31T12:00:00", "2023-12-31T12:00:00"}
    assert kept == dailies | weeklies | month_ends | year_ends
    assert len(kept) == 7 + 4 + 11 + 2  # the newest counts for every rule at once
    assert reasons(d)["2023-12-31T12:00:00"] == (
        "daily snapshot", "weekly snapshot", "monthly snapshot", "yearly snapshot",
    )  # fmt: skip
    assert reasons(d)["2023-11-30T12:00:00"] == ("monthly snapshot",)
    assert len(d.keep) + len(d.remove) == len(snaps)


def test_a_snapshot_only_needs_one_rule() -> None:
    snaps = daily(date(2024, 1, 1), date(2024, 1, 10))
    d = only(apply_policy(snaps, Policy(last=2, monthly=1)))
    assert reasons(d) == {
        "2024-01-09T12:00:00": ("last snapshot",),
        "2024-01-10T12:00:00": ("last snapshot", "monthly snapshot"),
    }


# ---- counting rules ---------------------------------------------------------------------


def test_keep_last() -> None:
    snaps = [snap(at(2024, 5, 1, h)) for h in range(5)]
    d = only(apply_policy(snaps, Policy(last=2)))
    assert kept_times(d) == ["2024-05-01T03:00:00", "2024-05-01T04:00:00"]
    assert [s.time[:19] for s in d.remove] == [f"2024-05-01T0{h}:00:00" for h in range(3)]


@pytest.mark.parametrize("n", [5, 6, 100, UNLIMITED])
def test_n_at_least_the_number_of_snapshots_keeps_all(n: int) -> None:
    snaps = [snap(at(2024, 5, 1, h)) for h in range(5)]
    d = only(apply_policy(snaps, Policy(last=n)))
    assert len(d.keep) == 5 and d.remove == []
    assert all(k.reasons == ("last snapshot",) for k in d.keep)


def test_keep_daily_keeps_the_newest_of_each_day_and_skips_days_without_snapshots() -> None:
    snaps = [
        snap(at(2024, 3, 1, 8)), snap(at(2024, 3, 1, 20)),
        # 2 and 3 March: nothing
        snap(at(2024, 3, 4, 0)), snap(at(2024, 3, 4, 23, 59, 59)),
        snap(at(2024, 3, 9, 6)),
    ]  # fmt: skip
    d = only(apply_policy(snaps, Policy(daily=3)))
    assert kept_times(d) == ["2024-03-01T20:00:00", "2024-03-04T23:59:59", "2024-03-09T06:00:00"]
    assert [s.time[:19] for s in d.remove] == ["2024-03-01T08:00:00", "2024-03-04T00:00:00"]


def test_a_rule_with_count_left_also_keeps_the_oldest_snapshot() -> None:
    # Three days of snapshots for --keep-daily 5: the group's first backup survives too.
    snaps = [snap(at(2024, 3, 1, h)) for h in (8, 12, 20)] + [
        snap(at(2024, 3, 2, 9)),
        snap(at(2024, 3, 3, 9)),
    ]
    d = only(apply_policy(snaps, Policy(daily=5)))
    assert reasons(d) == {
        "2024-03-01T08:00:00": ("oldest daily snapshot",),
        "2024-03-01T20:00:00": ("daily snapshot",),
        "2024-03-02T09:00:00": ("daily snapshot",),
        "2024-03-03T09:00:00": ("daily snapshot",),
    }
    assert [s.time[:19] for s in d.remove] == ["2024-03-01T12:00:00"]


def test_the_oldest_is_not_kept_once_the_count_is_used_up() -> None:
    snaps = [snap(at(2024, 3, 1, 8)), snap(at(2024, 3, 1, 20)), snap(at(2024, 3, 2, 9))]
    d = only(apply_policy(snaps, Policy(daily=2)))
    assert kept_times(d) == ["2024-03-01T20:00:00", "2024-03-02T09:00:00"]


def test_yearly_with_fewer_years_than_asked_keeps_the_first_backup() -> None:
    snaps = daily(date(2021, 1, 1), date(2023, 12, 31))
    d = only(apply_policy(snaps, Policy(yearly=5)))
    assert reasons(d) == {
        "2021-01-01T12:00:00": ("oldest yearly snapshot",),
        "2021-12-31T12:00:00": ("yearly snapshot",),
        "2022-12-31T12:00:00": ("yearly snapshot",),
        "2023-12-31T12:00:00": ("yearly snapshot",),
    }


def test_keep_hourly() -> None:
    snaps = [snap(at(2024, 1, 1, 9, m)) for m in (0, 30, 59)] + [
        snap(at(2024, 1, 1, 10, 0)),
        snap(at(2024, 1, 1, 12, 15)),
    ]
    d = only(apply_policy(snaps, Policy(hourly=2)))
    assert kept_times(d) == ["2024-01-01T10:00:00", "2024-01-01T12:15:00"]


def test_keep_weekly_uses_iso_weeks_monday_to_sunday() -> None:
    snaps = [
        snap(at(2019, 12, 22, 23, 59)),  # Sunday, ISO 2019-W51
        snap(at(2019, 12, 29, 23, 59)),  # Sunday, 2019-W52
        snap(at(2019, 12, 30, 0, 0)),  # Monday, 2020-W01 (still December)
        snap(at(2020, 1, 1, 10)),  # Wednesday, 2020-W01
    ]
    d = only(apply_policy(snaps, Policy(weekly=2)))
    assert kept_times(d) == ["2019-12-29T23:59:00", "2020-01-01T10:00:00"]
    # By month the year boundary splits that week instead.
    d = only(apply_policy(snaps, Policy(monthly=2)))
    assert kept_times(d) == ["2019-12-30T00:00:00", "2020-01-01T10:00:00"]


def test_unlimited_daily_keeps_one_per_day() -> None:
    snaps = [snap(at(2024, 2, day, h)) for day in (1, 2, 5) for h in (1, 2)]
    d = only(apply_policy(snaps, Policy(daily=UNLIMITED)))
    assert kept_times(d) == [
        "2024-02-01T01:00:00", "2024-02-01T02:00:00", "2024-02-02T02:00:00", "2024-02-05T02:00:00",
    ]  # fmt: skip
    assert reasons(d)["2024-02-01T01:00:00"] == ("oldest daily snapshot",)


def test_periods_are_calendar_periods_in_the_recorded_time_zone() -> None:
    snaps = [
        snap("2024-01-01T10:00:00+00:00"),
        snap("2024-01-01T23:00:00+00:00"),  # 1 January
        snap("2024-01-02T00:30:00+02:00"),  # 2 January there (22:30 UTC on the 1st)
    ]
    d = only(apply_policy(snaps, Policy(daily=2)))
    assert reasons(d) == {
        "2024-01-01T23:00:00": ("daily snapshot",),
        "2024-01-02T00:30:00": ("daily snapshot",),
    }


def test_ties_are_broken_by_id_whatever_the_input_order() -> None:
    same = [snap(at(2024, 1, 1, 12), sid=c * 64) for c in "3a1f"]
    for seed in range(5):
        shuffled = same[:]
        random.Random(seed).shuffle(shuffled)
        d = only(apply_policy(shuffled, Policy(last=1)))
        assert [k.snapshot.id for k in d.keep] == ["f" * 64]
        assert [s.id[0] for s in d.remove] == ["1", "3", "a"]


def test_input_order_does_not_matter() -> None:
    snaps = daily(date(2023, 1, 1), date(2023, 3, 31))
    policy = Policy(last=3, weekly=4, monthly=2, within=Duration(days=10))
    expected = apply_policy(snaps, policy)
    shuffled = snaps[:]
    random.Random(7).shuffle(shuffled)
    assert apply_policy(shuffled, policy) == expected


# ---- keep-within ------------------------------------------------------------------------


def test_keep_within_is_relative_to_the_newest_snapshot_and_exclusive() -> None:
    snaps = [
        snap(at(2017, 8, 3, 9, 0, 0)),  # exactly 2y5m7d3h before the newest: removed
        snap(at(2017, 8, 3, 9, 0, 1)),
        snap(at(2019, 1, 1)),
        snap(at(2020, 1, 10, 12)),
    ]
    d = only(apply_policy(snaps, Policy(within=parse_duration("2y5m7d3h"))))
    assert [s.time[:19] for s in d.remove] == ["2017-08-03T09:00:00"]
    assert all(k.reasons == ("within 2y5m7d3h",) for k in d.keep)


def test_keep_within_ignores_the_wall_clock() -> None:
    # A host that stopped backing up years ago keeps its last week of history.
    snaps = [snap(at(2010, 5, d)) for d in range(1, 20)]
    d = only(apply_policy(snaps, Policy(within=Duration(days=7)), now=at(2030, 1, 1)))
    assert kept_times(d) == [f"2010-05-{day:02d}T00:00:00" for day in range(13, 20)]


def test_keep_within_months_step_like_restic() -> None:
    # 31 March minus one month is "31 February", which Go (and restic) normalise to 2 March
    # in a leap year.
    assert Duration(months=1).before(at(2024, 3, 31, 12)) == at(2024, 3, 2, 12)
    assert Duration(years=1).before(at(2024, 2, 29)) == at(2023, 3, 1)
    assert Duration(months=13, days=1, hours=1).before(at(2024, 1, 1)) == at(2022, 11, 29, 23)
    assert Duration(years=5000).before(at(2024, 1, 1)) is None  # before year 1: no bound
    snaps = [snap(at(2024, 3, 2, 12)), snap(at(2024, 3, 2, 12, 0, 1)), snap(at(2024, 3, 31, 12))]
    d = only(apply_policy(snaps, Policy(within=Duration(months=1))))
    assert [s.time[:19] for s in d.remove] == ["2024-03-02T12:00:00"]


def test_future_snapshots_do_not_count_as_the_newest_and_are_kept() -> None:
    now = at(2024, 6, 1)
    snaps = [snap(at(2024, 5, 1)), snap(at(2024, 5, 30)), snap(at(2099, 1, 1))]
    d = only(apply_policy(snaps, Policy(within=Duration(days=7)), now=now))
    assert kept_times(d) == ["2024-05-30T00:00:00", "2099-01-01T00:00:00"]
    # Without a clock the far-future snapshot is the newest and the others go.
    d = only(apply_policy(snaps, Policy(within=Duration(days=7))))
    assert kept_times(d) == ["2099-01-01T00:00:00"]
    # Only future snapshots: nothing is known to be old.
    d = only(apply_policy(snaps[2:], Policy(within=Duration(days=7)), now=now))
    assert len(d.keep) == 1


def test_combined_rules_report_every_reason() -> None:
    snaps = [
        snap(at(2024, 1, 1), tags=("monthly-archive",)),
        snap(at(2024, 1, 20)),
        snap(at(2024, 1, 30)),
        snap(at(2024, 1, 31, 10)),
        snap(at(2024, 1, 31, 11)),
    ]
    policy = Policy(last=1, daily=2, within=Duration(days=1), tags=(("monthly-archive",),))
    d = only(apply_policy(snaps, policy))
    assert reasons(d) == {
        "2024-01-01T00:00:00": ("has tags monthly-archive",),
        "2024-01-30T00:00:00": ("daily snapshot",),
        "2024-01-31T10:00:00": ("within 1d",),
        "2024-01-31T11:00:00": ("within 1d", "last snapshot", "daily snapshot"),
    }
    assert [s.time[:10] for s in d.remove] == ["2024-01-20"]


# ---- keep-tag ---------------------------------------------------------------------------


def test_keep_tag_needs_every_tag_of_a_list_and_any_list() -> None:
    snaps = [
        snap(at(2024, 1, 1), tags=("a",)),
        snap(at(2024, 1, 2), tags=("a", "b")),
        snap(at(2024, 1, 3), tags=("c",)),
        snap(at(2024, 1, 4), tags=("b",)),
        snap(at(2024, 1, 5)),
    ]
    policy = Policy(last=1, tags=(parse_taglist("b,a"), parse_taglist("c")))
    d = only(apply_policy(snaps, policy))
    assert reasons(d) == {
        "2024-01-02T00:00:00": ("has tags a,b",),
        "2024-01-03T00:00:00": ("has tags c",),
        "2024-01-05T00:00:00": ("last snapshot",),
    }


def test_keep_tag_empty_keeps_untagged_snapshots() -> None:
    snaps = [snap(at(2024, 1, 1)), snap(at(2024, 1, 2), tags=("x",)), snap(at(2024, 1, 3))]
    d = only(apply_policy(snaps, Policy(tags=(parse_taglist(""),))))
    assert kept_times(d) == ["2024-01-01T00:00:00", "2024-01-03T00:00:00"]
    assert d.keep[0].reasons == ("has no tags",)


def test_a_policy_that_would_empty_a_group_is_refused() -> None:
    snaps = [snap(at(2024, 1, 1), tags=("keep",)), snap(at(2024, 1, 2), host="other")]
    with pytest.raises(UsageError, match="of the group host other, paths /home/user/work:"):
        apply_policy(snaps, Policy(tags=(("keep",),)))
    with pytest.raises(UsageError, match="every snapshot: none"):
        apply_policy(snaps[1:], Policy(tags=(("keep",),)), group_by=())
    # Grouped together, the tagged snapshot keeps the group alive.
    d = only(apply_policy(snaps, Policy(tags=(("keep",),)), group_by=()))
    assert kept_times(d) == ["2024-01-01T00:00:00"]


# ---- groups and filters -----------------------------------------------------------------


def test_groups_by_host_and_paths_by_default_each_judged_alone() -> None:
    snaps = [
        snap(at(2024, 1, 1), host="a", paths=("/x", "/y")),
        snap(at(2024, 1, 2), host="a", paths=("/y", "/x")),  # same paths, other order
        snap(at(2024, 1, 3), host="a", paths=("/x",)),
        snap(at(2024, 1, 4), host="b", paths=("/x",)),
        snap(at(2024, 1, 5), host="b", paths=("/x",)),
    ]
    decisions = apply_policy(snaps, Policy(last=1))
    assert [d.key for d in decisions] == [
        GroupKey("a", ("/x",)),
        GroupKey("a", ("/x", "/y")),
        GroupKey("b", ("/x",)),
    ]
    assert [kept_times(d) for d in decisions] == [
        ["2024-01-03T00:00:00"],
        ["2024-01-02T00:00:00"],
        ["2024-01-05T00:00:00"],
    ]
    assert [len(d.remove) for d in decisions] == [0, 1, 1]
    assert decisions[1].key.to_json() == {"host": "a", "paths": ["/x", "/y"], "tags": None}
    assert str(decisions[1].key) == "host a, paths /x, /y"


def test_keep_within_is_judged_per_group() -> None:
    snaps = [snap(at(2010, 1, d), host="old") for d in (1, 9, 10)] + [
        snap(at(2024, 1, d), host="new") for d in (1, 9, 10)
    ]
    decisions = apply_policy(snaps, Policy(within=Duration(days=2)))
    assert [[k.snapshot.time[:10] for k in d.keep] for d in decisions] == [
        ["2024-01-09", "2024-01-10"],
        ["2010-01-09", "2010-01-10"],
    ]


@pytest.mark.parametrize(
    ("group_by", "groups"),
    [
        ("host", 2),
        ("paths", 2),
        ("tags", 2),
        ("host,tags", 3),
        ("tags,paths,host", 4),
        ("", 1),
    ],
)
def test_group_by_fields(group_by: str, groups: int) -> None:
    snaps = [
        snap(at(2024, 1, 1), host="a", paths=("/x",), tags=("t",)),
        snap(at(2024, 1, 2), host="a", paths=("/y",), tags=("t",)),
        snap(at(2024, 1, 3), host="a", paths=("/x",)),
        snap(at(2024, 1, 4), host="b", paths=("/x",)),
    ]
    decisions = apply_policy(snaps, Policy(last=1), parse_group_by(group_by))
    assert len(decisions) == groups
    assert sum(len(d.keep) for d in decisions) == groups
    assert sum(len(d.keep) + len(d.remove) for d in decisions) == len(snaps)
    if not group_by:
        assert decisions[0].key == GroupKey()
        assert str(decisions[0].key) == ""


def test_matches_filter() -> None:
    s = snap(at(2024, 1, 1), host="a", tags=("x", "y"))
    assert matches_filter(s, [], [])
    assert matches_filter(s, ["b", "a"], [])
    assert not matches_filter(s, ["b"], [])
    assert matches_filter(s, [], [("x", "y")])
    assert not matches_filter(s, [], [("x", "z")])
    assert matches_filter(s, [], [("x", "z"), ("y",)])  # any of the lists
    assert not matches_filter(s, [], [()])  # '' selects untagged snapshots only
    assert matches_filter(snap(at(2024, 1, 1)), [], [()])


# ---- edge cases and parsing -------------------------------------------------------------


def test_no_snapshots_no_groups() -> None:
    assert apply_policy([], Policy(last=1)) == []


@pytest.mark.parametrize("policy", [Policy(), Policy(within=Duration())])
def test_an_empty_policy_is_refused(policy: Policy) -> None:
    assert policy.is_empty()
    with pytest.raises(UsageError, match="empty policy"):
        apply_policy([snap(at(2024, 1, 1))], policy)


def test_negative_counts_are_refused() -> None:
    with pytest.raises(UsageError):
        Policy(daily=-2)


def test_naive_times_are_read_as_utc() -> None:
    snaps = [snap("2024-01-01T10:00:00"), snap("2024-01-01T11:00:00+00:00")]
    d = only(apply_policy(snaps, Policy(last=1), now=datetime(2024, 6, 1)))
    assert kept_times(d) == ["2024-01-01T11:00:00"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2y5m7d3h", Duration(2, 5, 7, 3)),
        ("7d", Duration(days=7)),
        ("3h1y", Duration(years=1, hours=3)),
        (" 12m ", Duration(months=12)),
        ("0d", Duration()),
    ],
)
def test_parse_duration(text: str, expected: Duration) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7", "d", "1w", "1y1y", "1.5d", "-1d", "1d 2h", "1D"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(UsageError, match="invalid duration"):
        parse_duration(text)


def test_duration_str() -> None:
    assert str(Duration(2, 5, 7, 3)) == "2y5m7d3h"
    assert str(Duration(days=7)) == "7d"
    assert str(Duration()) == "0h"


def test_parse_count_group_by_taglist() -> None:
    assert parse_count("7", "--keep-daily") == 7
    assert parse_count("unlimited", "--keep-daily") == UNLIMITED
    for bad in ("-1", "x", "", "1.5"):
        with pytest.raises(UsageError, match="--keep-daily"):
            parse_count(bad, "--keep-daily")
    assert parse_group_by("paths, host") == ("host", "paths")
    assert parse_group_by("") == ()
    with pytest.raises(UsageError, match="hostname"):
        parse_group_by("hostname")
    assert parse_taglist("b, a,,a") == ("a", "b")
    assert parse_taglist("") == ()


def test_policy_describe() -> None:
    policy = Policy(last=1, daily=7, weekly=UNLIMITED, within=Duration(years=1))
    assert policy.describe() == (
        "keep 1 latest, 7 daily, all weekly snapshots and all snapshots within 1y of the newest"
    )
    assert Policy(tags=(("a", "b"), ())).describe() == (
        "keep all snapshots with tags a,b and all untagged"
    )


# ---- removing ---------------------------------------------------------------------------


def test_remove_snapshots_deletes_only_those(mem_repo: Repository) -> None:
    ids = [mem_repo.save_snapshot(snap(at(2024, 1, d), sid="")) for d in (1, 2, 3)]
    with locked(mem_repo, exclusive=True, operation="forget") as lock:
        assert remove_snapshots(mem_repo, ids[:2], lock) == ids[:2]
    assert mem_repo.snapshot_ids() == ids[2:]
    assert [s.id for s in mem_repo.snapshots()] == ids[2:]


def test_run_forget_decides_under_the_lock_and_removes_what_the_policy_says(
    mem_repo: Repository,
) -> None:
    from drengine.engine.retention import ForgetOptions, run_forget

    ids = [mem_repo.save_snapshot(snap(at(2024, 1, d), sid="")) for d in range(1, 11)]
    opts = ForgetOptions(policy=Policy(last=3), dry_run=True)
    dry = run_forget(mem_repo, opts, now=at(2024, 2, 1))
    assert dry.removed == [] and sorted(dry.doomed) == sorted(ids[:7])
    assert sorted(mem_repo.snapshot_ids()) == sorted(ids)
    opts.dry_run = False
    done = run_forget(mem_repo, opts, now=at(2024, 2, 1))
    assert sorted(done.removed) == sorted(ids[:7])
    assert sorted(mem_repo.snapshot_ids()) == sorted(ids[7:])
    with pytest.raises(UsageError, match="refusing to remove every snapshot"):
        run_forget(mem_repo, ForgetOptions())
    with pytest.raises(UsageError, match="cannot be combined"):
        run_forget(mem_repo, ForgetOptions(policy=Policy(last=1), snapshot_ids=[ids[9]]))
