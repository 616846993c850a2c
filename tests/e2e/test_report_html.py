"""The compliance report's HTML page, as a reviewer's browser shows it: headless Chromium
renders it, shows the drills' figures, prints it to PDF, and requests nothing from the
network (every request would reach a recording proxy)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest

from drengine.reports.period import compliance_document
from drengine.reports.render import render_html, render_text

CHROMIUM = "/usr/bin/chromium"
SINCE, UNTIL = datetime(2026, 10, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC)


def _section(name: str, status: str, rto: list[int], problems: list[str]) -> dict[str, Any]:
    series = [
        {"time": f"2026-{10 + i}-15T04:00:00+00:00", "verdict": "passed", "rto_ms": ms,
         "rpo_verified_age_ms": 3_600_000 * (i + 1), "snapshot": f"{i}a{name}" + "0" * 50}
        for i, ms in enumerate(rto)
    ]  # fmt: skip
    return {
        "policy": name,
        "status": status,
        "problems": problems,
        "repository": {"id": "ab" * 32, "location": f"s3://backups/{name}",
                       "encryption": "AES-256-GCM",
                       "object_lock": {"mode": "COMPLIANCE", "days": 30}},
        "targets": {"rpo_ms": 5 * 3_600_000, "rto_ms": 3_600_000},
        "backups": {"run": 540, "failed": 2, "from": "job history", "snapshots": 538},
        "rpo": {"target_ms": 5 * 3_600_000, "verified": None, "unverified": None,
                "largest_gap": {"ms": 4 * 3_600_000, "from": "2026-10-02T00:00:00+00:00",
                                "to": "2026-10-02T04:00:00+00:00"},
                "period": {"since": SINCE.isoformat(), "until": UNTIL.isoformat()},
                "met": status == "met"},
        "drills": {"run": len(rto), "passed": len(rto), "failed": 0, "target_missed": 0},
        "rto": {"target_ms": 3_600_000, "max_ms": max(rto, default=None),
                "last_ms": rto[-1] if rto else None, "met": bool(rto)},
        "series": series,
        "forecast": {"bytes": 12_000_000_000, "drills": 2, "target_ms": 3_600_000,
                     "throughput_bytes_per_s": 50_000_000, "predicted_ms": 240_000,
                     "exceeds_target": False, "snapshot": "cd" * 32} if rto else None,
        "evidence": {"snapshots": [s["snapshot"] for s in series],
                     "reports": [{"id": "ef" * 32, "digest": "12" * 32,
                                  "finished": s["time"], "verdict": "passed"} for s in series]},
    }  # fmt: skip


@pytest.fixture(scope="module")
def doc() -> dict[str, Any]:
    return compliance_document(
        [
            _section("app-postgres", "met", [1234, 4_321_000], []),
            _section("shop-mariadb", "missed", [90_000], ["the drill of 2026-11-15 failed: x"]),
            _section("vm-image", "not proven", [], ["no restore drill ran in the period"]),
        ],
        SINCE,
        UNTIL,
    )


def test_the_page_loads_nothing_and_prints_on_paper(doc: dict[str, Any]) -> None:
    page = render_html(doc)
    assert not re.search(
        r"""(src|href)\s*=|url\(|<script|<link|@import|https?://(?!backups)""", page
    )
    assert "@page" in page and "break-inside" in page
    text = render_text(doc)
    assert doc["summary"]["text"] in text
    assert "1 h 12 min" in text and "1 min 30 s" in text and "not drilled" in text.lower()


class _Recorder(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def _any(self) -> None:
        self.seen.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.end_headers()

    do_GET = do_POST = do_CONNECT = do_HEAD = _any

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def proxy() -> Iterator[tuple[int, list[str]]]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    _Recorder.seen = []
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server.server_address[1], _Recorder.seen
    finally:
        server.shutdown()


# What Chromium asks for by itself, whatever page it shows (network time, sign-in, component
# updates), despite --disable-background-networking. Hosts a page could load from (fonts,
# gstatic, CDNs) are not in this list: a request for one of them fails the test.
_BROWSER_OWN = ("http://clients2.google.com/time/", "accounts.google.com:443",
                "update.googleapis.com")  # fmt: skip


def _browser_own(request: str) -> bool:
    return any(host in request for host in _BROWSER_OWN)


def _chromium(tmp_path: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("DRENGINE_REQUIRE_SERVERS") == "1":
            pytest.fail("chromium is not installed (tests/run-tests installs it)")
        pytest.skip("chromium is not installed")
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>", *args],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip


def test_chromium_shows_the_drills_figures_and_requests_nothing(
    doc: dict[str, Any], tmp_path: Path, proxy: tuple[int, list[str]]
) -> None:
    port, seen = proxy
    page = tmp_path / "report.html"
    page.write_text(render_html(doc))
    dom = _chromium(tmp_path, port, "--dump-dom", page.as_uri()).stdout
    assert doc["summary"]["text"].split(":")[0] in dom
    for shown in ("app-postgres", "shop-mariadb", "vm-image", "1.2 s", "1 h 12 min", "<svg"):
        assert shown in dom, shown
    assert "0a" + "app-postgres"[:8] in dom  # a snapshot ID of the evidence, shortened
    pdf = tmp_path / "report.pdf"
    _chromium(tmp_path, port, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", page.as_uri())
    assert pdf.read_bytes().startswith(b"%PDF")
    assert [r for r in seen if not _browser_own(r)] == []
    shutil.rmtree(tmp_path / "profile", ignore_errors=True)
