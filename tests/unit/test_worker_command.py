"""Worker processes run this drengine's code, never a ``drengine`` package that happens to
lie in the working directory (``python -m`` would look there first)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from drengine.core import workers as workers_mod


@pytest.mark.parametrize(
    "module", ["drengine.engine.check_worker", "drengine.engine.restore_worker"]
)
def test_a_worker_never_runs_code_from_the_working_directory(tmp_path: Path, module: str) -> None:
    planted = tmp_path / "drengine"
    planted.mkdir()
    marker = tmp_path / "ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    done = subprocess.run(
        [*workers_mod.module_command(module), "not-a-descriptor"],
        cwd=tmp_path,
        env=workers_mod.worker_env(),
        capture_output=True,
        timeout=60,
    )
    assert not marker.exists()
    # It found the real drengine, and failed only on the argument given.
    assert b"ModuleNotFoundError" not in done.stderr
    assert b"ValueError" in done.stderr and b"not-a-descriptor" in done.stderr
