"""``drengine NAME`` imports only NAME's module (start-up time); every command must still
work when it is the only one imported, and ``--help`` or a wrong name still sees them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from drengine.cli import main

# Forks one child per command from a process that imported only ``drengine.cli.main``; each
# child runs ``drengine NAME --help`` and reports the cmd_ modules it imported.
_EACH_ALONE = """
import contextlib, io, os, sys
from drengine.cli import main as m
for name in m.COMMANDS:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        sys.argv = ["drengine", name, "--help"]
        out = io.StringIO()
        code = None
        try:
            with contextlib.redirect_stdout(out):
                m.main()
        except SystemExit as e:
            code = e.code
        loaded = sorted(k[len("drengine.cli.cmd_"):] for k in sys.modules
                        if k.startswith("drengine.cli.cmd_"))
        usage = f"Usage: drengine {name}" in out.getvalue()
        os.write(w, f"{name} {code} {usage} {','.join(loaded)}".encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        print(f.read())
    os.waitpid(pid, 0)
"""


def test_the_command_list_is_every_command_module() -> None:
    modules = {p.stem[len("cmd_") :] for p in Path(main.__file__).parent.glob("cmd_*.py")}
    assert set(main.COMMANDS) == modules


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["backup", "/x"], "backup"),
        (["-r", "/repo", "snapshots"], "snapshots"),
        (["--repo", "backup", "restore", "latest"], "restore"),  # a repository named backup
        (["--repo=/r", "--debug", "check"], "check"),
        (["--retry-lock", "5m", "--s3-sse", "AES256", "prune"], "prune"),
        (["--help"], None),
        (["bakup"], None),
        ([], None),
    ],
)
def test_the_command_is_found_after_the_global_options(args: list[str], name: str | None) -> None:
    assert main.command_named(args) == name


def test_each_command_runs_when_it_is_the_only_one_imported() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _EACH_ALONE], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    rows = [line.split(" ") for line in out.stdout.splitlines() if line.strip()]
    assert [r[0] for r in rows] == list(main.COMMANDS)
    for name, code, usage, loaded in rows:
        assert (code, usage) == ("0", "True"), name
        assert name in loaded.split(",")
        assert len(loaded.split(",")) < len(main.COMMANDS) // 2, (name, loaded)


@pytest.mark.parametrize(
    ("args", "code", "expect"),
    [
        (["--help"], 0, "snapshots"),  # the list holds every command
        (["bakup"], 2, "No such command 'bakup'"),
        (["--version"], 0, "drengine "),
    ],
)
def test_help_a_wrong_name_and_the_version(args: list[str], code: int, expect: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "drengine", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == code
    assert expect in out.stdout + out.stderr
    if args == ["--help"]:
        for name in main.COMMANDS:
            assert f"  {name} " in out.stdout, name


def test_version_answers_before_typer_is_imported_and_says_what_typer_says() -> None:
    probe = (
        "import sys; sys.argv = ['drengine', '--version']; "
        "from drengine.cli.launch import main; main(); "
        "print(sorted(m for m in ('typer', 'drengine.cli.main') if m in sys.modules))"
    )
    fast = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert fast.stdout.splitlines() == [f"drengine {main.__version__}", "[]"]
    full = subprocess.run(
        [sys.executable, "-m", "drengine", "--debug", "--version"], capture_output=True, text=True
    )
    assert full.returncode == 0 and full.stdout == fast.stdout.splitlines()[0] + "\n"
