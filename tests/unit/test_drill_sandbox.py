"""The drill sandbox: made private, removed however the drill ends, and a killed drill's
sandbox removed by the next one (never a live drill's, never one of another host)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from drengine.drills.sandbox import PREFIX, Sandbox, remove_stale


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _fake(base: Path, name: str, host: str, pid: int) -> Path:
    d = base / f"{PREFIX}{name}"
    (d / "restore" / "ro").mkdir(parents=True)
    (d / "restore" / "ro" / "f").write_text("x")
    os.chmod(d / "restore" / "ro", 0o500)  # a restored read-only directory
    (d / "owner.json").write_text(json.dumps({"host": host, "pid": pid}))
    return d


def test_a_sandbox_is_removed_when_the_drill_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), Sandbox(tmp_path, "p1") as box:
        d = box.dir("restore")
        (d / "sub").mkdir()
        os.chmod(d / "sub", 0o500)
        assert (box.path.stat().st_mode & 0o777) == 0o711
        assert (d.stat().st_mode & 0o777) == 0o700
        raise RuntimeError("the drill failed")
    assert list(tmp_path.iterdir()) == []


def test_only_sandboxes_of_dead_drills_on_this_host_are_removed(tmp_path: Path) -> None:
    here = socket.gethostname()
    dead = _fake(tmp_path, "dead", here, _dead_pid())
    live = _fake(tmp_path, "live", here, os.getppid())
    other = _fake(tmp_path, "other", "another-host", _dead_pid())
    (tmp_path / f"{PREFIX}making").mkdir()  # no owner file yet: being made right now
    planted = _fake(tmp_path, "planted", here, _dead_pid())
    planted.chmod(0o777)  # anyone may make a directory of that name in /var/tmp
    assert remove_stale(tmp_path) == [dead]
    assert planted.exists()
    assert not dead.exists() and live.exists() and other.exists()
    assert (tmp_path / f"{PREFIX}making").exists()
