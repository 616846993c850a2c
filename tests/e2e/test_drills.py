"""``drengine drill run`` and ``report verify`` as an operator and a reviewer run them: files,
SQLite, images and streams restored into a sandbox and proven; a damaged repository; a
missed target; tampered and foreign reports; a drill stopped with SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from e2e_support import CLI, PASSWORD, PROJECT_ROOT, Repo, make_repo, small_tmpfs, write_random


def _policy(tmp_path: Path, repo: Repo, sources: list[str], extra: str = "") -> Path:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    p = tmp_path / "policy.yaml"
    p.write_text(
        f"name: sys1\nrepository: {repo.path}\npassword_file: {pw}\n"
        f"sources: {json.dumps(sources)}\nschedule: 1h\nretention: {{keep_last: 5}}\n"
        "drill: {schedule: 1d}\n" + extra
    )
    return p


def _env(tmp_path: Path) -> dict[str, str | None]:
    return {
        "DRENGINE_STATE_DIR": str(tmp_path / "state"),
        "DRENGINE_DRILL_DIR": str(tmp_path / "sandboxes"),
    }


def _drill(cli: CLI, tmp_path: Path, policy: Path, *args: str, code: int = 0) -> dict[str, Any]:
    r = cli("drill", "run", str(policy), "--json", *args, check_code=code, env_extra=_env(tmp_path))
    assert "Traceback" not in r.err
    envelope: dict[str, Any] = r.json()
    return envelope


def _tree(src: Path) -> None:
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("hello\n")
    write_random(src / "sub" / "big.bin", 3 << 20)
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    os.link(src / "a.txt", src / "sub" / "hard.txt")
    os.symlink("../a.txt", src / "sub" / "link")


def test_a_files_drill_proves_every_file_and_its_report_verifies(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    p = _policy(tmp_path, repo, [str(src)], "targets: {rpo: 1h, rto: 10m}\n")
    cli("run", str(p), env_extra=_env(tmp_path))
    env = _drill(cli, tmp_path, p)
    doc = env["document"]
    assert doc["verdict"] == "passed", doc["reasons"]
    checks = {c["check"]: c for c in doc["checks"]}
    assert "4 of 4 files" in checks["content hashes"]["detail"]
    assert checks["counts and bytes"]["passed"]
    phases = {x["phase"] for x in doc["measured"]["phases"]}
    assert {"open", "index", "plan", "fetch", "decrypt", "write", "verify"} <= phases
    assert doc["rto"]["met"] is True and doc["rpo"]["verified"]["snapshot"] == doc["snapshot"]["id"]
    assert doc["forecast"]["predicted_ms"] >= 0
    assert not any((tmp_path / "sandboxes").iterdir())
    report = tmp_path / "report.json"
    report.write_text(json.dumps(env))
    ok = repo.run("report", "verify", str(report), "--json").json()
    assert ok["verified"] and ok["snapshots_checked"]
    # Offline, with only the public key a reviewer was given.
    key = repo.run("report", "key", "--json").json()
    keyfile = tmp_path / "key.json"
    keyfile.write_text(json.dumps(key))
    cli("report", "verify", str(report), "--key", str(keyfile))
    cli("report", "verify", str(report), "--key", key["key_id"])
    _run_the_documented_check(report, key["key_id"])
    listed = repo.run("report", "list", "--json").json()
    assert [r["verdict"] for r in listed] == ["passed"]
    stored = repo.run("report", "show", listed[0]["id"]).json()
    assert stored == env
    # The daemon's copy in the state directory is the same signed report.
    (copy,) = (tmp_path / "state" / "reports" / "sys1").iterdir()
    assert json.loads(copy.read_text()) == env
    # The compliance report of the period: signed JSON, text and a standalone page.
    period = tmp_path / "period.json"
    args = ("report", "--policy", str(p), "--since", "2026-01-01")
    cli(*args, "--format", "json", "--out", str(period), env_extra=_env(tmp_path))
    ok = repo.run("report", "verify", str(period), "--json").json()
    assert ok["type"] == "drengine compliance report" and ok["snapshots_checked"]
    section = json.loads(period.read_text())["document"]["policies"][0]
    assert section["status"] == "met" and section["drills"] == {
        "run": 1, "passed": 1, "failed": 0, "target_missed": 0
    }  # fmt: skip
    assert section["evidence"]["reports"][0]["id"] == listed[0]["id"]
    text = cli(*args, env_extra=_env(tmp_path)).out
    assert "The system met its targets" in text and "sys1" in text
    cli(*args, "--format", "html", "--out", str(tmp_path / "r.html"), env_extra=_env(tmp_path))
    assert "The system met its targets" in (tmp_path / "r.html").read_text()


def _run_the_documented_check(report: Path, key_id: str) -> None:
    """docs/drills.md shows how to verify a report without drengine: that code must work."""
    doc = (PROJECT_ROOT / "docs" / "drills.md").read_text()
    code = doc.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace('"drill.json"', repr(str(report))).replace(
        '"8f376e8b...0144"', repr(key_id)
    )
    exec(compile(code, "docs/drills.md", "exec"), {})
    with pytest.raises(InvalidSignature):
        tampered = json.loads(report.read_text())
        tampered["document"]["verdict"] = "failed"
        other = report.with_name("tampered.json")
        other.write_text(json.dumps(tampered))
        exec(compile(code.replace(repr(str(report)), repr(str(other))), "docs", "exec"), {})


def test_a_changed_digit_or_another_repositorys_key_fails_verification(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    p = _policy(tmp_path, repo, [str(src)])
    cli("run", str(p), env_extra=_env(tmp_path))
    env = _drill(cli, tmp_path, p)
    text = json.dumps(env, indent=2)
    rto = str(env["document"]["rto"]["measured_ms"])
    changed = tmp_path / "changed.json"
    changed.write_text(text.replace(f'"measured_ms": {rto}', f'"measured_ms": {rto}1', 1))
    r = repo.run("report", "verify", str(changed), check_code=22)
    assert "changed after signing" in r.err
    other = make_repo(cli, tmp_path / "other")
    good = tmp_path / "good.json"
    good.write_text(text)
    r = other.run("report", "verify", str(good), check_code=22)
    assert "not this repository's report key" in r.err
    other_key = other.run("report", "key", "--json").json()["public_key"]
    r = cli("report", "verify", str(good), "--key", other_key, check_code=22)
    assert "not by the key given" in r.err
    # A stored report damaged in storage: check names it, listings go on without it.
    (stored,) = (repo.path / "reports").iterdir()
    stored.chmod(0o644)
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 1
    stored.write_bytes(bytes(data))
    assert stored.name in repo.run("check", check_code=1).output
    assert repo.run("report", "list", "--json").json() == []
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert (
        "not JSON" in cli("report", "verify", str(garbage), "--key", other_key, check_code=22).err
    )


def test_an_rto_target_of_one_millisecond_is_reported_missed(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    p = _policy(tmp_path, repo, [str(src)], "targets: {rpo: 1h, rto: 1ms}\n")
    cli("run", str(p), env_extra=_env(tmp_path))
    doc = _drill(cli, tmp_path, p, code=21)["document"]
    assert doc["verdict"] == "target missed"
    assert doc["reasons"][0].startswith("RTO target missed")
    assert all(c["passed"] for c in doc["checks"])


@pytest.mark.parametrize("how", ["flip", "delete"])
def test_a_damaged_pack_fails_the_drill_naming_the_pack_and_the_files(
    cli: CLI, repo: Repo, tmp_path: Path, how: str
) -> None:
    src = tmp_path / "src"
    _tree(src)
    # Small files of one pack: restored in batches, not blob by blob. Seven, so that a pack
    # holding every file (one sealer took all blobs) costs at most the 10 entries a reason
    # names one by one.
    for i in range(7):
        (src / f"small{i}.txt").write_text(f"small {i}\n" * 100)
    p = _policy(tmp_path, repo, [str(src)])
    cli("run", str(p), env_extra=_env(tmp_path))
    pack = max(
        (f for f in (repo.path / "data").rglob("*") if f.is_file()), key=lambda f: f.stat().st_size
    )
    os.chmod(pack, 0o644)
    if how == "delete":
        pack.unlink()
    else:
        with open(pack, "r+b") as f:
            f.seek(pack.stat().st_size // 3)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
    doc = _drill(cli, tmp_path, p, code=20)["document"]
    assert doc["verdict"] == "failed"
    text = " ".join(doc["reasons"])
    assert pack.name in text and "big.bin" in text
    if how == "delete":  # one reason for the lost pack, naming every file it cost
        restore = [c for c in doc["checks"] if c["check"] == "restore"]
        by_pack = [c for c in restore if c["target"] == f"pack {pack.name}"]
        assert len(by_pack) == 1 and "big.bin" in by_pack[0]["detail"], restore
        assert not [c for c in restore if c["target"].startswith("blob ")], restore
    assert not any((tmp_path / "sandboxes").iterdir())


def test_sqlite_images_and_streams_are_proven_by_their_own_checks(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);"
        "INSERT INTO t (v) VALUES ('a'), ('b'), ('c');"
    )
    conn.commit()
    conn.close()
    image = tmp_path / "disk.img"
    write_random(image, 2 << 20)
    checks = "  checks: [{sql: 'SELECT count(*) FROM t', expect: '3'}]\n"
    p = _policy(tmp_path, repo, [f"sqlite://{db}", f"block://{image}"])
    p.write_text(
        p.read_text().replace("drill: {schedule: 1d}\n", "drill:\n  schedule: 1d\n" + checks)
    )
    cli("run", str(p), env_extra=_env(tmp_path))
    doc = _drill(cli, tmp_path, p)["document"]
    assert doc["verdict"] == "passed", doc["reasons"]
    by = {(c["kind"], c["check"]): c for c in doc["checks"]}
    assert by[("sqlite", "integrity_check and row counts")]["passed"]
    assert by[("sqlite", "SQL: SELECT count(*) FROM t")]["detail"] == "gave '3'"
    assert by[("block", "SHA-256")]["passed"] and by[("sqlite", "SHA-256")]["passed"]
    # A stream from a command, drilled by ID: the policy's SQL check cannot run on it, and
    # a check that cannot run fails the drill rather than vanish from the report.
    other = repo.backup("--stdin-from-command", "--tag", "policy:other", "--", "seq", "10")
    r = cli("drill", "run", str(p), "--snapshot", other["snapshot_id"], check_code=2,
            env_extra=_env(tmp_path))  # fmt: skip
    assert "not one of policy sys1's" in r.err  # its proof would count for the wrong policy
    made = repo.backup("--stdin-from-command", "--tag", "policy:sys1", "--", "seq", "100000")
    doc = _drill(cli, tmp_path, p, "--snapshot", made["snapshot_id"], code=20)["document"]
    assert doc["snapshot"]["selected"] == "given"
    assert [(c["kind"], c["passed"]) for c in doc["checks"]] == [("command", True), ("sql", False)]
    assert "not run" in doc["reasons"][0]


def test_a_drill_stopped_with_sigterm_leaves_no_sandbox_lock_or_report(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        write_random(src / f"f{i}.bin", 4 << 20)
    p = _policy(tmp_path, repo, [str(src)])
    cli("run", str(p), env_extra=_env(tmp_path))
    env = {**cli.env, **{k: v for k, v in _env(tmp_path).items() if v}}
    proc = subprocess.Popen(
        [sys.executable, "-m", "drengine", "drill", "run", str(p)],
        env=env, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    sandboxes = tmp_path / "sandboxes"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        restored = list(sandboxes.glob("*/restore/*")) if sandboxes.exists() else []
        if restored:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert not any(sandboxes.iterdir())
    assert not list((repo.path / "locks").iterdir())
    assert not (repo.path / "reports").exists() or not any((repo.path / "reports").iterdir())
    assert not (tmp_path / "state" / "reports").exists()


def test_a_sandbox_too_small_fails_the_drill_before_writing_and_says_so(
    cli: CLI, repo: Repo, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    _tree(src)
    p = _policy(tmp_path, repo, [str(src)])
    cli("run", str(p), env_extra=_env(tmp_path))
    with small_tmpfs(tmp_path / "small", "1m") as small:
        env = {**_env(tmp_path), "DRENGINE_DRILL_DIR": str(small)}
        r = cli("drill", "run", str(p), "--json", check_code=20, env_extra=env)
        doc = r.json()["document"]
        assert not any(small.iterdir())
    assert [c["check"] for c in doc["checks"]] == ["sandbox space"]
    assert "MiB free" in doc["reasons"][0] and "DRENGINE_DRILL_DIR" in doc["reasons"][0]
