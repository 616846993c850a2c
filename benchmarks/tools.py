"""The two benchmarked tools: how each is launched, configured and identified."""

from __future__ import annotations

import os
import shlex
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from measure import Measurement, ensure_restic, run_quiet

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
PASSWORD = "benchmark-password"
# Launches the working tree's drengine exactly as the `drengine` console script would.
DRENGINE_LAUNCHER = "import sys; from drengine.cli.main import main; sys.exit(main())"


@dataclass
class Tool:
    name: str
    base: list[str]  # the command, up to (excluding) the repository option
    repo_flag: str
    env: dict[str, str]
    workdir: Path
    cache_dirs: list[Path]
    version: str = "unknown"
    # operation -> one measurement per repetition, in order ("init" included, not reported)
    samples: dict[str, list[Measurement]] = field(default_factory=dict)
    repo_bytes: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def repo(self) -> Path:
        return self.workdir / f"repo-{self.name}"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs" / self.name

    def restore_target(self, rep: int) -> Path:
        return self.workdir / f"restore-{self.name}-{rep + 1}"

    def cmd(self, *args: str) -> list[str]:
        return [*self.base, self.repo_flag, str(self.repo), *args]


def clean_env() -> dict[str, str]:
    """The parent's environment without anything that could configure either tool."""
    drop = ("RESTIC_", "DRENGINE_", "GOMAXPROCS", "GOGC")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def make_restic(workdir: Path) -> Tool:
    cache = workdir / "cache" / "restic"
    env = {**clean_env(), "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(cache)}
    tool = Tool("restic", [ensure_restic()], "-r", env, workdir, [cache])
    tool.version = run_quiet([*tool.base, "version"], env) or "unknown"
    return tool


def make_drengine(workdir: Path, command: str | None) -> Tool:
    cache = workdir / "cache" / "drengine"
    xdg = workdir / "cache" / "drengine-xdg"
    env = {
        **clean_env(),
        "DRENGINE_PASSWORD": PASSWORD,
        "DRENGINE_CACHE_DIR": str(cache),
        "XDG_CACHE_HOME": str(xdg),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    }
    base = shlex.split(command) if command else [sys.executable, "-c", DRENGINE_LAUNCHER]
    tool = Tool("drengine", base, "--repo", env, workdir, [cache, xdg])
    cli = run_quiet([*base, "--version"], env) or run_quiet([*base, "version"], env)
    if cli is None:
        try:
            meta = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
            cli = "drengine " + str(meta["project"]["version"])
        except (OSError, KeyError, ValueError):
            cli = "drengine (unknown version)"
    git = run_quiet(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"])
    tool.version = f"{cli} (git {git or 'no commit yet, working tree'})"
    return tool
