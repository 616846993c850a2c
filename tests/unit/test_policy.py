# ruff: noqa: E501  (a table of inputs and messages reads best one case a line)
"""Policy files: a table of bad inputs with the message each must give, the shipped
examples, and schedules across a daylight-saving change."""

from __future__ import annotations

import itertools
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drengine.policy.load import PolicyInvalid, load_policy
from drengine.policy.schedule import next_runs, parse_schedule

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
name: web1
repository: /srv/backup/repo
password_command: cat /etc/pw
sources: [/etc]
schedule: "30 2 * * *"
retention:
  keep_daily: 7
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


def _problems(tmp_path: Path, text: str) -> list[str]:
    p = _write(tmp_path, text)
    with pytest.raises(PolicyInvalid) as e:
        load_policy(p)
    return [x.removeprefix(f"{p}:") for x in e.value.problems]


def test_a_good_policy_loads(tmp_path: Path) -> None:
    loaded = load_policy(_write(tmp_path, GOOD))
    assert loaded.policy.name == "web1" and loaded.policy.retention.keep_daily == 7
    assert loaded.policy.retention.to_policy().daily == 7


# (what is changed, the problem it must report: "LINE: KEY: message")
BAD = [
    (GOOD.replace("keep_daily", "keep_dayly"), "7: retention.keep_dayly: unknown key (did you mean keep_daily?)"),
    (GOOD.replace("keep_daily: 7", "keep_last: 3\n  keep_lst: 3"), "8: retention.keep_lst: unknown key (did you mean keep_last?)"),
    (GOOD.replace("keep_daily: 7", "keep_daily: -1"), "7: retention.keep_daily: must be at least 0, not -1"),
    (GOOD.replace("keep_daily: 7", "keep_daily: many"), "7: retention.keep_daily: must be a whole number, not 'many'"),
    (GOOD.replace('"30 2 * * *"', '"61 2 * * *"'), "5: schedule: '61 2 * * *' is not a cron schedule: field '61': the last value (61) is higher than the maximum value (59)"),
    (GOOD.replace('"30 2 * * *"', '"30 2 * *"'), "5: schedule: '30 2 * *' is not a cron schedule: wrong number of fields; got 4, expected 5"),
    (GOOD.replace('"30 2 * * *"', "soon"), "5: schedule: 'soon' is not a schedule: use 5 cron fields (30 2 * * *) or an interval (15m)"),
    (GOOD.replace('"30 2 * * *"', "0s"), "5: schedule: '0s' is not a schedule"),
    (GOOD + "timezone: Mars/Olympus\n", "8: timezone: unknown time zone 'Mars/Olympus'"),
    (GOOD.replace("password_command: cat /etc/pw", "password_file: /nonexistent/pw"), "3: password_file: cannot read /nonexistent/pw: No such file or directory"),
    (GOOD.replace("password_command: cat /etc/pw\n", ""), "1: give exactly one of password_file and password_command"),
    (GOOD.replace("sources: [/etc]", "sources: [etc]"), "4: sources: 'etc': a path must be absolute (or a source URL)"),
    (GOOD.replace("sources: [/etc]", "sources: ['ftp://x/y']"), "4: sources: 'ftp://x/y': unknown source kind 'ftp'"),
    (GOOD.replace("sources: [/etc]", "sources: ['postgresql://u:pw@db/app']"), "visible to every user in ps"),
    (GOOD.replace("sources: [/etc]", "sources: ['mysql://db1/']"), "4: sources: mysql://db1/: name the database to back up"),
    (GOOD.replace("sources: [/etc]", "sources: ['sqlite://relative.db']"), "4: sources: sqlite://relative.db: write sqlite:///ABSOLUTE/PATH"),
    (GOOD.replace("sources: [/etc]", "sources: []"), "4: sources: must be a list of at least one"),
    (GOOD.replace("name: web1", "name: web one"), "1: name: 'web one' is not allowed here (expected letters, digits"),
    (GOOD.replace("repository: /srv/backup/repo\n", ""), "1: repository: missing (required)"),
    (GOOD.replace("keep_daily: 7", "keep_within: 2x"), "7: retention.keep_within: not a duration '2x'"),
    (GOOD.replace("  keep_daily: 7", "  keep_tags: []"), "6: retention: keeps nothing"),
    (GOOD + "targets: {rpo: 1d}\n", "8: targets.rto: missing (required)"),
    (GOOD + "targets: {rpo: 1d, rto: fast}\n", "8: targets.rto: 'fast' is not a duration"),
    (GOOD + "check: {schedule: '@daily', read_data_subset: 10%}\n", "8: check.schedule: '@daily' is not a schedule"),
    (GOOD + "check: {schedule: 1d, read_data_subset: 150%}\n", "8: check.read_data_subset: '150%' is not allowed here (expected a percentage like 10%)"),
    (GOOD + "drill: {schedule: 1d, snapshot: oldest}\n", "8: drill.snapshot: must be one of 'latest' or 'random', not 'oldest'"),
    (GOOD + "notify: {webhooks: [ftp://h]}\n", "8: notify.webhooks.0: 'ftp://h' is not allowed here (expected an http:// or https:// URL)"),
    (GOOD + "s3: {region: eu-west-1}\n", "1: s3 options are for an s3:// repository"),
    (GOOD + "hooks: {before: [x], befor: [y]}\n", "8: hooks.befor: unknown key (did you mean before?)"),
    (GOOD + "name: again\n", "8: name: given twice"),
    (GOOD + "schedul: 1h\n", "8: schedul: unknown key (did you mean schedule?)"),
    ("name: [unclosed\n", "2: not valid YAML"),
    ("", "the policy file is empty"),
    ("- a\n- b\n", "1: a policy is a mapping of keys"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "problem"), BAD, ids=[b[1][:40] for b in BAD])
def test_a_bad_policy_names_line_key_and_problem(tmp_path: Path, text: str, problem: str) -> None:
    found = _problems(tmp_path, text)
    assert any(problem in f for f in found), found


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace("keep_daily: 7", "keep_daily: -1\n  keep_lst: 2") + "timezone: X/Y\n"
    assert len(_problems(tmp_path, text)) == 3


def test_the_shipped_examples_pass_policy_check() -> None:
    examples = sorted((ROOT / "policies").glob("*.yaml"))
    kinds = {load_policy(p).policy.sources[0].split("://")[0] for p in examples}
    assert {"postgresql", "mysql", "block"} <= kinds and any(k.startswith("/") for k in kinds)
    for p in examples:
        pol = load_policy(p).policy
        assert pol.targets is not None and pol.drill is not None and not pol.retention.is_empty()
    out = subprocess.run(
        [sys.executable, "-m", "drengine", "policy", "check", *map(str, examples)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(": ok") == len(examples)


def test_policy_check_exits_2_and_names_each_problem(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD.replace("keep_daily", "keep_dayly"))
    out = subprocess.run(
        [sys.executable, "-m", "drengine", "policy", "check", str(p)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert f"{p}:7: retention.keep_dayly: unknown key (did you mean keep_daily?)" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_daily_cron_time_across_the_spring_dst_change() -> None:
    tz = ZoneInfo("Europe/Berlin")
    # 02:30 does not exist on 29 March 2026 (02:00 -> 03:00): it runs once, an hour later
    # on the wall clock; the other days at 02:30 local time.
    runs = next_runs(
        parse_schedule("30 2 * * *", "Europe/Berlin"), datetime(2026, 3, 27, 12, tzinfo=tz), 4
    )
    local = [r.astimezone(UTC).astimezone(tz) for r in runs]
    assert [t.day for t in local] == [28, 29, 30, 31]
    assert [(t.hour, t.minute) for t in local] == [(2, 30), (3, 30), (2, 30), (2, 30)]
    assert runs[2].astimezone(UTC) - runs[1].astimezone(UTC) == timedelta(hours=23)
    assert local[0].utcoffset() == timedelta(hours=1) and local[2].utcoffset() == timedelta(hours=2)


def test_a_daily_cron_time_across_the_autumn_dst_change() -> None:
    tz = ZoneInfo("Europe/Berlin")
    # 02:30 happens twice on 25 October 2026 (03:00 -> 02:00): it runs once.
    runs = next_runs(
        parse_schedule("30 2 * * *", "Europe/Berlin"), datetime(2026, 10, 24, 12, tzinfo=tz), 3
    )
    local = [r.astimezone(UTC).astimezone(tz) for r in runs]
    assert [t.day for t in local] == [25, 26, 27]
    assert all((t.hour, t.minute) == (2, 30) for t in local)


def test_an_interval_keeps_its_pace_across_dst() -> None:
    start = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
    runs = next_runs(parse_schedule("45m", "Europe/Berlin", start), start, 6)
    utc = [r.astimezone(UTC) for r in runs]
    assert all(b - a == timedelta(minutes=45) for a, b in itertools.pairwise(utc))


def test_a_timezone_moves_a_cron_schedule() -> None:
    now = datetime(2026, 6, 1, tzinfo=UTC)
    utc = next_runs(parse_schedule("0 3 * * *", "UTC"), now, 1)[0]
    ny = next_runs(parse_schedule("0 3 * * *", "America/New_York"), now, 1)[0]
    assert ny.astimezone(UTC) - utc.astimezone(UTC) == timedelta(hours=4)


def test_an_hourly_cron_job_runs_in_both_repeated_hours() -> None:
    tz = ZoneInfo("Europe/Berlin")
    runs = next_runs(
        parse_schedule("30 * * * *", "Europe/Berlin"), datetime(2026, 10, 25, 0, 0, tzinfo=tz), 5
    )
    utc = [r.astimezone(UTC) for r in runs]
    assert all(b - a == timedelta(hours=1) for a, b in itertools.pairwise(utc)), runs


def test_run_applies_retention_with_forgets_own_code() -> None:
    from drengine.engine import retention
    from drengine.scheduler import run

    assert run.run_forget is retention.run_forget  # the same function, not a copy


def test_the_daemon_watchdog_notifies_an_rpo_breach_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time as _time

    from drengine.scheduler import daemon as dm
    from drengine.scheduler.state import StateDB

    pol = tmp_path / "pol"
    pol.mkdir()
    (pol / "p.yaml").write_text(GOOD + "targets: {rpo: 1h, rto: 1h}\n")
    sent: list[dict[str, object]] = []
    monkeypatch.setattr(dm.notify, "send", lambda p, ev: sent.append(ev) or [])
    d = dm.Daemon(dm.DaemonOptions(pol, tmp_path / "state.sqlite", metrics_address=""))
    try:
        assert d.load() == []
        state = StateDB(tmp_path / "state.sqlite")
        job = state.start("web1", "backup", now=_time.time() - 3 * 3600)
        state.finish(job, "success", now=_time.time() - 2 * 3600)  # two hours ago: over 1h
        d.watch_rpo()
        d.watch_rpo()
        assert [e["event"] for e in sent] == ["rpo_breach"]  # once per breach
        ok = state.start("web1", "backup")
        state.finish(ok, "success")
        d.watch_rpo()
        assert len(sent) == 1 and "web1" not in d.breached
    finally:
        d.stop()
