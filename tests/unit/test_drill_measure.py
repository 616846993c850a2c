"""RPO figures, the RTO forecast and verdicts of drills, from made-up histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from drengine.core.model import Snapshot
from drengine.drills.measure import forecast, rpo
from drengine.reports.drill_report import seconds, verdict

T0 = datetime(2026, 10, 1, tzinfo=UTC)


def _snap(hours: float, sid: str) -> Snapshot:
    t = T0 + timedelta(hours=hours)
    return Snapshot(
        time=t.isoformat(), host="h", username="u", paths=["/x"], tags=[], tree=b"\0" * 32,
        program_version="t", id=sid,
    )  # fmt: skip


def test_rpo_shows_proven_and_unproven_ages_apart_and_the_largest_gap() -> None:
    snaps = [_snap(h, f"s{h}") for h in (0, 4, 8, 20, 24)]
    now = T0 + timedelta(hours=25)
    fig = rpo(now, snaps, [("s8", snaps[2].sort_time())], [], T0, 6 * 3600 * 1000)
    assert fig["verified"]["snapshot"] == "s8"
    assert fig["verified"]["age_ms"] == 17 * 3600 * 1000
    assert fig["unverified"]["snapshot"] == "s24"
    assert fig["unverified"]["age_ms"] == 3600 * 1000
    assert fig["largest_gap"]["ms"] == 12 * 3600 * 1000  # 8 h to 20 h
    assert fig["met"] is False


def test_the_job_history_fills_gaps_that_retention_thinned() -> None:
    snaps = [_snap(0, "a"), _snap(24, "b")]
    history = [T0 + timedelta(hours=h) for h in range(0, 25, 4)]
    now = T0 + timedelta(hours=26)
    fig = rpo(now, snaps, [("b", snaps[1].sort_time())], history, T0, 5 * 3600 * 1000)
    assert fig["largest_gap"]["ms"] == 4 * 3600 * 1000
    assert fig["met"] is True


def test_no_proven_snapshot_never_meets_the_rpo_target() -> None:
    snaps = [_snap(0, "a")]
    fig = rpo(T0 + timedelta(minutes=5), snaps, [], [], None, 3600 * 1000)
    assert fig["verified"] is None and fig["met"] is False


def test_forecast_uses_medians_of_recent_drills() -> None:
    this = {"bytes": 100_000_000, "fixed_ms": 500, "data_ms": 1000}  # 100 MB/s
    earlier = [{"bytes": 50_000_000, "fixed_ms": 700, "data_ms": 1000}] * 2  # 50 MB/s
    fc = forecast(1_000_000_000, this, earlier, 10)
    assert fc["throughput_bytes_per_s"] == 50_000_000
    assert fc["predicted_ms"] == 700 + 20_000
    assert fc["exceeds_target"] is True
    assert forecast(10, {"bytes": 0, "fixed_ms": 0, "data_ms": 0}, [], 10)["predicted_ms"] is None


def _doc(passed: bool, rto_ms: int, target_ms: int | None, rpo_met: bool | None) -> dict:  # type: ignore[type-arg]
    return {
        "checks": [{"kind": "files", "check": "x", "target": "t", "passed": passed, "detail": "d"}],
        "rto": {"measured_ms": rto_ms, "target_ms": target_ms,
                "met": None if target_ms is None else rto_ms <= target_ms},
        "rpo": {"met": rpo_met, "verified": {"age_ms": 1}, "target_ms": 10,
                "largest_gap": {"ms": 20, "from": "a", "to": "b"}},
        "forecast": None,
    }  # fmt: skip


def test_verdicts_list_every_reason() -> None:
    assert verdict(_doc(True, 5, 10, True)) == ("passed", [])
    assert verdict(_doc(True, 5, None, None)) == ("passed", [])
    v, why = verdict(_doc(True, 50, 10, False))
    assert v == "target missed" and len(why) == 2 and why[0].startswith("RTO target missed")
    v, why = verdict(_doc(False, 50, 10, False))
    assert v == "failed" and why == ["files x (t): d"]
    assert seconds(850) == "850 ms" and seconds(12_300) == "12.3 s"
    assert seconds(250_000) == "4 min 10 s" and seconds(7_500_000) == "2 h 5 min"


def test_a_drill_counts_hard_links_either_way_a_summary_did() -> None:
    """Summaries count every name of a hard-linked file (older ones counted a walked one
    once): both match the restored tree; anything else fails the drill."""
    from drengine.drills.local import _counts

    def passed(files_total: int) -> bool:
        snap = _snap(0, "s")
        snap.summary = {"files_total": files_total, "bytes_total": 30}
        return bool(_counts(snap, (5, 4), 30, 2, 0)["passed"])

    assert passed(5) and passed(4)
    assert not passed(3) and not passed(6)
