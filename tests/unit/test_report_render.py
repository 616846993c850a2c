"""The compliance report as people read it: the HTML page and the plain-text form.

The page is evidence kept for years, so it must stand alone: these tests check that it loads
nothing (statically, then in headless Chromium behind a proxy that records any request) and
that the figures a reviewer relies on are on it, and that it prints to PDF. Chromium calls
its own services at start-up whatever the flags (even for about:blank); those few known
requests are set aside, and a canary page that does fetch shows the proxy sees page loads.
"""

from __future__ import annotations

import http.server
import os
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from drengine.reports.period import compliance_document
from drengine.reports.render import chart, render_html, render_text

CHROMIUM = "/usr/bin/chromium"
SINCE = datetime(2026, 10, 1, tzinfo=UTC)
UNTIL = datetime(2027, 1, 1, tzinfo=UTC)
SNAP_A = "a1b2c3d4e5f6" + "0" * 52
SNAP_B = "b7c8d9e0f1a2" + "1" * 52
H = 3_600_000
PERIOD_WORDS = "1 October 2026 \N{EN DASH} 31 December 2026"


def _repo(lock: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "9f" * 32,
        "location": "s3://backups/prod",
        "encryption": "AES-256-GCM, keys behind Argon2id-wrapped key files",
        "object_lock": lock,
    }


def _rpo(gap_ms: int, target_ms: int | None, age_ms: int | None, snap: str) -> dict[str, Any]:
    verified = (
        None
        if age_ms is None
        else {"snapshot": snap, "time": "2026-12-31T20:00:00+00:00", "age_ms": age_ms}
    )
    return {
        "target_ms": target_ms,
        "verified": verified,
        "unverified": {"snapshot": snap, "time": "2026-12-31T22:00:00+00:00", "age_ms": 2 * H},
        "largest_gap": {
            "ms": gap_ms,
            "from": "2026-11-02T01:00:00+00:00",
            "to": "2026-11-02T05:00:00+00:00",
        },
        "period": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
        "met": None if target_ms is None else age_ms is not None and gap_ms <= target_ms,
    }


def _drill(day: str, verdict: str, rto_ms: int, age_ms: int, snap: str) -> dict[str, Any]:
    return {
        "time": f"{day}T03:00:00+00:00",
        "verdict": verdict,
        "rto_ms": rto_ms,
        "rpo_verified_age_ms": age_ms,
        "snapshot": snap,
    }


def _section(name: str, status: str, series: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    targets = kw.get("targets", {"rpo_ms": 5 * H, "rto_ms": H})
    rto_t = targets["rto_ms"] if targets else None
    counts = {v: sum(s["verdict"] == v for s in series) for v in ("passed", "failed")}
    return {
        "policy": name,
        "status": status,
        "problems": kw.get("problems", []),
        "repository": _repo(kw.get("lock")),
        "targets": targets,
        "backups": kw.get(
            "backups", {"run": 92, "failed": 0, "from": "job history", "snapshots": 92}
        ),
        "rpo": kw["rpo"],
        "drills": {
            "run": len(series),
            **counts,
            "target_missed": sum(s["verdict"] == "target missed" for s in series),
        },
        "rto": {
            "target_ms": rto_t,
            "max_ms": max((s["rto_ms"] for s in series), default=None),
            "last_ms": series[-1]["rto_ms"] if series else None,
            "met": None
            if rto_t is None or not series
            else all(s["rto_ms"] <= rto_t for s in series),
        },
        "series": series,
        "forecast": kw.get("forecast"),
        "evidence": {
            "snapshots": sorted({s["snapshot"] for s in series}),
            "reports": [
                {
                    "id": f"{i:02d}" + "e" * 62,
                    "digest": f"{i:02d}" + "d" * 62,
                    "finished": s["time"],
                    "verdict": s["verdict"],
                }
                for i, s in enumerate(series)
            ],
        },
    }


def _doc() -> dict[str, Any]:
    files = _section(
        "files",
        "met",
        [
            _drill("2026-10-05", "passed", 900, 3 * H, SNAP_A),
            _drill("2026-11-20", "passed", 1234, 4 * H, SNAP_A),
        ],
        rpo=_rpo(4 * H, 5 * H, 4 * H, SNAP_A),
        lock={"mode": "COMPLIANCE", "days": 30},
        forecast={
            "bytes": 2_500_000_000,
            "drills": 2,
            "target_ms": H,
            "throughput_bytes_per_s": 10_000_000,
            "predicted_ms": 250_000,
            "exceeds_target": False,
            "snapshot": SNAP_A,
        },
    )
    db = _section(
        "orders-db",
        "missed",
        [
            _drill("2026-10-10", "passed", 40 * 60_000, 2 * H, SNAP_B),
            _drill("2026-12-12", "target missed", 75 * 60_000, 6 * H, SNAP_B),
        ],
        rpo=_rpo(7 * H, 5 * H, 6 * H, SNAP_B),
        problems=["the drill of 2026-12-12 target missed: the restore took 1 h 15 min"],
        backups={"run": 90, "failed": 3, "from": "job history", "snapshots": 87},
    )
    wiki = _section(
        "wiki",
        "not proven",
        [],
        targets=None,
        rpo=_rpo(30 * H, None, None, SNAP_B),
        problems=["no restore drill ran in the period"],
        backups={"run": 12, "failed": None, "from": "snapshots", "snapshots": 12},
    )
    return compliance_document([files, db, wiki], SINCE, UNTIL)


def test_page_loads_nothing_and_text_has_the_figures() -> None:
    doc = _doc()
    page = render_html(doc)
    assert "@page" in page and "break-inside: avoid" in page
    assert not re.search(r"<script|<link|<img|<iframe|@import", page, re.I)
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(", page, re.I)
    assert "https://" not in page and "http://" not in page
    assert "Backup and restore report" in page and PERIOD_WORDS in page
    assert doc["summary"]["text"] in page
    assert "1.2 s" in page and "1 h 15 min" in page and "4 min 10 s" in page
    assert "a full restore must finish within 1 h" in page
    assert "at most 5 h of data may be lost" in page
    assert "object lock, compliance mode, 30 days" in page and "not enabled" in page
    assert f'title="{SNAP_A}">{SNAP_A[:12]}<' in page
    assert "Not drilled" in page and "Missed a target" in page and "Met its targets" in page
    assert page.count("<svg") == 2  # the wiki had no drill: no chart

    text = render_text(doc)
    assert text.startswith(f"Backup and restore report, {PERIOD_WORDS}")
    assert doc["summary"]["text"] in text
    assert "1 of 3 systems met their targets" in text
    for figure in (
        "last 1.2 s, longest 1.2 s",
        "90 run, 3 failed",
        "12 saved",
        "4 min 10 s",
        "1 h 15 min",
        "no target set",
        SNAP_A[:12],
        "sha256 00" + "d" * 62,
    ):
        assert figure in text, figure
    assert "<" not in text  # not escaped as HTML nor containing markup


def test_chart_points_stay_inside_the_plot() -> None:
    doc = _doc()
    c = chart(doc["policies"][1], doc["period"])
    assert c is not None
    rto, rpo = c.panels
    assert [p.ok for p in rto.points] == [True, False]
    assert all(c.left <= p.x <= c.right and rto.top <= p.y <= rto.bottom for p in rto.points)
    assert rto.target_y is not None and rto.top <= rto.target_y <= rto.bottom
    assert rpo.points[1].y < rpo.points[0].y  # 6 h is above 2 h
    assert [t.label for t in c.xticks] == ["1 Oct", "1 Nov", "1 Dec", "1 Jan"]
    assert chart(doc["policies"][2], doc["period"]) is None


# Chromium's own service calls, made at start-up even for about:blank and whatever the flags
# (update check, account list, network time): browser traffic, not the page's, so ignored.
_BROWSER_OWN = re.compile(
    r"CONNECT (update\.googleapis|accounts\.google|clients2\.google)\.com:443$"
    r"|(GET|POST) http://(update\.googleapis\.com/service/update2/|clients2\.google\.com/time/)"
)
# A page that does fetch, to show that the proxy sees what a page loads.
_CANARY = """<!DOCTYPE html><html><head><style>@import url(https://css.canary.invalid/x.css);
</style></head><body><img src="http://img.canary.invalid/p.png" alt=""></body></html>"""


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def _deny(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_error(404)

    do_GET = do_POST = do_HEAD = do_PUT = do_OPTIONS = do_CONNECT = _deny

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _chromium(profile: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-extensions", "--disable-features=NetworkTimeServiceQuerying",
         f"--user-data-dir={profile}", f"--proxy-server=http://127.0.0.1:{port}",
         "--proxy-bypass-list=<-loopback>", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_page_in_headless_chromium_fetches_nothing_and_prints(tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("DRENGINE_REQUIRE_SERVERS") == "1":
            pytest.fail("chromium is not installed (tests/run-tests installs it)")
        pytest.skip("chromium is not installed")
    doc = _doc()
    page, canary, pdf = tmp_path / "report.html", tmp_path / "canary.html", tmp_path / "r.pdf"
    page.write_text(render_html(doc), encoding="utf-8")
    canary.write_text(_CANARY, encoding="utf-8")
    seen: list[str] = []
    handler = type("Handler", (_Recorder,), {"seen": seen})

    def run(*args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
        before = len(seen)
        done = _chromium(tmp_path / "profile", port, *args)
        assert done.returncode == 0, done.stderr[-2000:]
        return done, [r for r in seen[before:] if not _BROWSER_OWN.match(r)]

    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as proxy:
        threading.Thread(target=proxy.serve_forever, daemon=True).start()
        port = proxy.server_address[1]
        started = time.monotonic()
        _, fetched = run("--dump-dom", canary.as_uri())
        assert sorted(fetched) == ["CONNECT css.canary.invalid:443",
                                   "GET http://img.canary.invalid/p.png"]  # fmt: skip
        dom, fetched = run("--dump-dom", page.as_uri())
        assert fetched == []
        _, fetched = run("--no-pdf-header-footer", f"--print-to-pdf={pdf}", page.as_uri())
        assert fetched == []
        elapsed = time.monotonic() - started
        proxy.shutdown()
    for shown in (
        doc["summary"]["text"],
        "1.2 s",
        "1 h 15 min",
        "files",
        "orders-db",
        "wiki",
        SNAP_A[:12],
        "Backup and restore report",
        "Not drilled",
    ):
        assert shown in dom.stdout, shown
    assert pdf.read_bytes().startswith(b"%PDF")
    print(f"chromium: {elapsed:.1f} s for three runs (canary, DOM, PDF)")
