"""The systemd units shown in docs/operations.md are valid: systemd-analyze verify where it
runs, and in any case sections, keys and the commands they name."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _units() -> dict[str, str]:
    text = DOC.read_text()
    out = {}
    for block in re.findall(r"```ini\n(.*?)```", text, re.S):
        name = re.match(r"# /etc/systemd/system/(\S+)", block)
        assert name, block[:80]
        out[name.group(1)] = block
    return out


def test_the_docs_show_a_run_service_timer_and_a_daemon_service() -> None:
    assert set(_units()) == {
        "drengine-run@.service",
        "drengine-run@.timer",
        "drengine-daemon.service",
    }


@pytest.mark.parametrize("name", sorted(_units()))
def test_each_unit_parses_with_the_sections_it_needs(name: str) -> None:
    cp = configparser.ConfigParser(strict=True, interpolation=None)
    cp.optionxform = str  # type: ignore[assignment,method-assign]
    cp.read_string(_units()[name])
    assert "Unit" in cp
    if name.endswith(".service"):
        cmd = cp["Service"]["ExecStart"].split()
        assert cmd[0] == "/usr/local/bin/drengine" and cmd[1] in ("run", "daemon")
    else:
        assert "OnCalendar" in cp["Timer"] and cp["Install"]["WantedBy"] == "timers.target"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    drengine = shutil.which("drengine")
    if drengine is None:
        pytest.skip("drengine is not on PATH (verify checks that ExecStart's program exists)")
    units = []
    for name, text in _units().items():
        text = text.replace("/usr/local/bin/drengine", drengine)
        unit = tmp_path / name.replace("@", "@web1") if "@" in name else tmp_path / name
        unit.write_text(text)
        units.append(str(unit))
    out = subprocess.run([analyze, "verify", *units], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
