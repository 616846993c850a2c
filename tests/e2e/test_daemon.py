"""``drengine daemon``: two policies on short schedules make snapshots, /metrics shows them,
SIGTERM in the middle of a backup stops cleanly, a failing policy notifies and the daemon
keeps going, SIGHUP keeps the old version of a broken file, a second daemon is refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from e2e_support import CLI, PASSWORD, Repo, make_repo
from pg_server import free_port
from test_run_policy import _Hook


def _policy(d: Path, name: str, repo: Repo, src: str, extra: str = "") -> Path:
    pw = d / "pw"
    pw.write_text(PASSWORD + "\n")
    p = d / "policies" / f"{name}.yaml"
    p.parent.mkdir(exist_ok=True)
    p.write_text(
        f"name: {name}\nrepository: {repo.path}\npassword_file: {pw}\nsources: [{src}]\n"
        "schedule: 2s\nretention: {keep_last: 50}\ntargets: {rpo: 1h, rto: 1h}\n" + extra
    )
    return p


class _Daemon:
    def __init__(self, cli: CLI, d: Path, port: int) -> None:
        self.log = d / "daemon.log"
        env = {k: v for k, v in cli.env.items() if k != "DRENGINE_PASSWORD"}
        self._err = open(self.log, "wb")  # noqa: SIM115 - the daemon writes it for its life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "drengine", "daemon", "--policies", str(d / "policies"),
             "--state", str(d / "state.sqlite"), "--metrics-address", f"127.0.0.1:{port}"],
            env=env, stdout=subprocess.DEVNULL, stderr=self._err, cwd=d,
        )  # fmt: skip
        self.port = port

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, what: str, timeout: float = 40.0) -> None:
        deadline = time.monotonic() + timeout
        while what not in self.text():
            assert self.proc.poll() is None, self.text()
            assert time.monotonic() < deadline, f"no {what!r} in:\n{self.text()}"
            time.sleep(0.1)

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def stop(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def _snapshots(repo: Repo) -> list[dict[str, Any]]:
    return repo.snapshots()


def test_two_policies_metrics_and_a_clean_stop_in_the_middle_of_a_backup(
    cli: CLI, tmp_path: Path
) -> None:
    a, b = make_repo(cli, tmp_path / "ra"), make_repo(cli, tmp_path / "rb")
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "f").write_text("a")
    # A disk image: no files cache, so every backup of it reads all of it (a second or so).
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(8 << 20))
    _policy(tmp_path, "small", a, str(tmp_path / "sa"))
    _policy(tmp_path, "big", b, f"block://{image}")
    d = _Daemon(cli, tmp_path, free_port())
    try:
        d.wait_for("small: backup done")
        d.wait_for("big: backup done")
        deadline = time.monotonic() + 30
        while len(_snapshots(a)) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        m = d.metrics()
        assert 'drengine_last_backup_success{policy="small"} 1.0' in m
        assert 'drengine_rpo_target_seconds{policy="big"} 3600.0' in m
        count = next(
            float(line.split()[-1]) for line in m.splitlines()
            if line.startswith('drengine_snapshots{policy="small"}')
        )  # fmt: skip
        assert 1 <= count <= len(_snapshots(a))
        # Stop the daemon in the middle of a backup of the image.
        mark = d.text().count("big: backup starts")
        deadline = time.monotonic() + 30
        while d.text().count("big: backup starts") <= mark:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(0.3)
        t0 = time.monotonic()
        assert d.stop() == 0
        assert time.monotonic() - t0 < 30
    finally:
        if d.proc.poll() is None:
            d.proc.kill()
    assert "daemon stopped" in d.text()
    # The backup that was reading the big file stopped at a safe point and wrote nothing.
    assert "the backup was cancelled; no snapshot written" in d.text()
    for r in (a, b):
        assert not list((r.path / "locks").iterdir())
        r.run("check")


def test_a_failing_policy_notifies_and_the_daemon_goes_on(cli: CLI, tmp_path: Path) -> None:
    a, b = make_repo(cli, tmp_path / "ra"), make_repo(cli, tmp_path / "rb")
    (tmp_path / "sa").mkdir()
    (tmp_path / "sa" / "f").write_text("a")
    hook = _Hook()
    cli.env["DRENGINE_DRILL_DIR"] = str(tmp_path / "sandboxes")
    try:
        _policy(tmp_path, "good", a, str(tmp_path / "sa"), "drill: {schedule: 3s}\n")
        _policy(tmp_path, "bad", b, "block:///dev/drengine-none",
                f"notify: {{webhooks: ['{hook.url}']}}\n")  # fmt: skip
        d = _Daemon(cli, tmp_path, free_port())
        try:
            deadline = time.monotonic() + 40
            while sum(e["event"] == "failure" for e in hook.received) < 2:
                assert d.proc.poll() is None and time.monotonic() < deadline, d.text()
                time.sleep(0.1)
            assert hook.received[0]["policy"] == "bad"
            assert "drengine-none" in hook.received[0]["error"]
            assert len(_snapshots(a)) >= 1  # the other policy is not held up
            # The good policy's drill runs on its schedule and its figures reach /metrics.
            d.wait_for("good: drill passed")
            m = d.metrics()
            assert 'drengine_last_drill_passed{policy="good"} 1.0' in m
            assert 'drengine_last_drill_rto_seconds{policy="good"}' in m
            # A second daemon on the same state is refused.
            second = cli(
                "daemon", "--policies", str(tmp_path / "policies"), "--state",
                str(tmp_path / "state.sqlite"), "--metrics-address", "", check_code=11,
            )  # fmt: skip
            assert "another drengine daemon" in second.err
            # SIGHUP with a broken file: its previous version keeps running.
            good = tmp_path / "policies" / "good.yaml"
            good.write_text(good.read_text().replace("schedule:", "schedul:"))
            d.proc.send_signal(signal.SIGHUP)
            d.wait_for("keeps running its previous version")
            n = len(_snapshots(a))
            deadline = time.monotonic() + 20
            while len(_snapshots(a)) <= n:
                assert time.monotonic() < deadline, d.text()
                time.sleep(0.2)
            assert d.stop() == 0
        finally:
            if d.proc.poll() is None:
                d.proc.kill()
    finally:
        hook.close()
