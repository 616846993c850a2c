"""``drengine run POLICY``, as cron runs it: backup, retention, prune and check when due, job
history, node-exporter metrics, and failures with their hooks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from e2e_support import CLI, PASSWORD, Repo


def _policy(tmp_path: Path, repo: Repo, src: Path, extra: str = "") -> Path:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    p = tmp_path / "policy.yaml"
    p.write_text(
        f"name: files1\nrepository: {repo.path}\npassword_file: {pw}\n"
        f"sources: [{src}]\nexclude: ['*.tmp']\nschedule: 1h\n"
        "retention: {keep_last: 2}\nprune: {schedule: 1d}\n"
        "check: {schedule: 1d, read_data_subset: 100%}\ntargets: {rpo: 2h, rto: 10m}\n" + extra
    )
    return p


def _run(cli: CLI, tmp_path: Path, *args: str, code: int = 0) -> Any:
    env = {"DRENGINE_STATE_DIR": str(tmp_path / "state"), "DRENGINE_PASSWORD": None}
    return cli("run", *args, check_code=code, env_extra=env)


def test_run_backs_up_applies_retention_and_prunes_and_checks_when_due(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "skip.tmp").write_text("excluded")
    p = _policy(tmp_path, repo, src)
    outcomes = []
    for i in range(3):
        (src / "f").write_text(f"version {i}")
        outcomes.append(_run(cli, tmp_path, str(p), "--json").json())
    assert [o["pruned"] for o in outcomes] == [True, False, False]  # due once a day
    assert [o["checked"] for o in outcomes] == [True, False, False]
    assert [len(o["forgotten"]) for o in outcomes] == [0, 0, 1]
    snaps = repo.snapshots()
    assert [s["id"] for s in snaps] == [o["snapshot_id"] for o in outcomes[1:]]
    assert all(s["tags"] == ["policy:files1"] for s in snaps)
    assert not any(e["path"].endswith("skip.tmp") for e in repo.ls("latest"))
    # Retention is forget's: forget with the same policy finds nothing more to remove.
    again = repo.run("forget", "--keep-last", "2", "--tag", "policy:files1", "--dry-run", "--json")
    assert all(not d["remove"] for d in again.json())
    forced = _run(cli, tmp_path, str(p), "--prune", "--no-check", "--json").json()
    assert forced["pruned"] and not forced["checked"]


def test_a_failing_run_exits_with_the_sources_code_and_runs_on_failure_hooks(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    marker = tmp_path / "failed"
    hook = 'echo "$DRENGINE_POLICY: $DRENGINE_ERROR" > ' + str(marker)
    p = _policy(tmp_path, repo, tmp_path / "src", f"hooks: {{on_failure: ['{hook}']}}\n")
    p.write_text(p.read_text().replace(f"[{tmp_path / 'src'}]", "['block:///dev/drengine-none']"))
    prom = tmp_path / "prom"
    prom.mkdir()
    r = _run(cli, tmp_path, str(p), "--textfile-dir", str(prom), code=13)
    assert "drengine-none" in r.err and "Traceback" not in r.err
    assert marker.read_text().startswith("files1: /dev/drengine-none")
    metrics = (prom / "drengine-files1.prom").read_text()
    assert 'drengine_backup_failures{policy="files1"} 1.0' in metrics
    assert 'drengine_last_backup_success{policy="files1"} 0.0' in metrics
    assert repo.snapshots() == []


def test_run_writes_metrics_for_node_exporter(cli: CLI, repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    prom = tmp_path / "prom"
    prom.mkdir()
    _run(cli, tmp_path, str(_policy(tmp_path, repo, src)), "--textfile-dir", str(prom))
    metrics = (prom / "drengine-files1.prom").read_text()
    for line in (
        'drengine_snapshots{policy="files1"} 1.0',
        'drengine_rpo_target_seconds{policy="files1"} 7200.0',
        'drengine_last_backup_success{policy="files1"} 1.0',
        'drengine_backup_failures{policy="files1"} 0.0',
    ):
        assert line in metrics, metrics
    assert "drengine_rpo_age_seconds" in metrics


def test_run_refuses_an_invalid_policy(cli: CLI, tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nschedul: 1h\n")
    r = _run(cli, tmp_path, str(p), code=2)
    assert "schedul: unknown key (did you mean schedule?)" in r.err


class _Hook:
    """A local HTTP server that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        received: list[dict[str, Any]] = []

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                n = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.received = received
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def test_notifications_on_failure_breach_and_recovery(cli: CLI, repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    hook = _Hook()
    events = tmp_path / "events"
    try:
        extra = f"notify: {{webhooks: ['{hook.url}'], command: 'cat >> {events}', timeout: 5s}}\n"
        p = _policy(tmp_path, repo, src, extra)
        good = p.read_text()
        p.write_text(good.replace(f"[{src}]", "['block:///dev/drengine-none']"))
        _run(cli, tmp_path, str(p), code=13)
        kinds = [e["event"] for e in hook.received]
        assert kinds == ["failure", "rpo_breach"]  # never succeeded: the RPO is breached
        assert (
            hook.received[0]["policy"] == "files1" and "drengine-none" in hook.received[0]["error"]
        )
        p.write_text(good)
        _run(cli, tmp_path, str(p))
        assert [e["event"] for e in hook.received][-1] == "recovery"
        assert events.read_text().count('"event"') == 3  # the command got each one on stdin
        st = cli(
            "status", str(p), "--json", env_extra={"DRENGINE_STATE_DIR": str(tmp_path / "state")}
        ).json()[0]
        assert st["last_outcome"] == "success" and st["rpo_ok"] is True
        assert st["failures_since_success"] == 0
    finally:
        hook.close()


def test_an_unreachable_webhook_does_not_fail_the_run(cli: CLI, repo: Repo, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    p = _policy(tmp_path, repo, src, "notify: {webhooks: ['http://127.0.0.1:9/x'], timeout: 1s}\n")
    p.write_text(p.read_text().replace(f"[{src}]", "['block:///dev/drengine-none']"))
    r = _run(cli, tmp_path, str(p), code=13)
    assert "notification not delivered" in r.err


def test_operations_in_one_process_match_fresh_processes(cli: CLI, tmp_path: Path) -> None:
    """The same backups, forgets, prunes and checks, once in one process on one repository
    object and once as command lines (a fresh process each): the same snapshots result."""
    import os as _os

    from drengine.crypto.keys import KdfParams
    from drengine.engine.backup import BackupOptions, run_backup
    from drengine.engine.check import run_check
    from drengine.engine.forget import Policy
    from drengine.engine.prune import run_prune
    from drengine.engine.retention import ForgetOptions, run_forget
    from drengine.repository.repo import Repository
    from drengine.sources.files import FileSource
    from drengine.storage.local import LocalBackend

    src = tmp_path / "src"
    src.mkdir()
    contents = [_os.urandom(3000 + i) for i in range(8)]
    one = Repository.init(
        LocalBackend(str(tmp_path / "one")), PASSWORD.encode(), kdf=KdfParams(8 * 1024, 1)
    )
    fresh = tmp_path / "fresh"
    cli("--repo", str(fresh), "init", "--kdf-memory-mib", "8", "--kdf-iterations", "1")
    for i, data in enumerate(contents):
        (src / f"file{i % 3}").write_bytes(data)
        run_backup(one, BackupOptions([FileSource([str(src)])], host="h"))
        run_forget(one, ForgetOptions(policy=Policy(last=3)))
        cli("--repo", str(fresh), "backup", "--host", "h", str(src))
        cli("--repo", str(fresh), "forget", "--keep-last", "3")
        if i % 3 == 2:
            run_prune(one, max_unused=0.0)
            assert run_check(one, 1.0).errors == []
            cli("--repo", str(fresh), "prune", "--max-unused", "0")
            cli("--repo", str(fresh), "check", "--read-data")

    def shape(snaps: list[Any]) -> list[tuple[Any, ...]]:
        return [(tuple(s["paths"]), s["summary"]["files_total"], s["summary"]["bytes_total"])
                for s in snaps]  # fmt: skip

    in_process = cli("--repo", str(tmp_path / "one"), "snapshots", "--json").json()
    separate = cli("--repo", str(fresh), "snapshots", "--json").json()
    assert len(in_process) == 3 and shape(in_process) == shape(separate)
    for r in (tmp_path / "one", fresh):
        cli("--repo", str(r), "check", "--read-data")
