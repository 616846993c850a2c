"""The benchmarked tools: how each is launched, configured, identified, and its command lines.

Each tool builds its own command line for every operation (``init``, ``backup``, ``restore``,
``restore_file``, ``check``): restic and drengine share restic's style (``TOOL REPO-FLAG REPO
SUBCOMMAND ...``), borg has its own (``REPO::ARCHIVE``, extract into the working directory).
"""

from __future__ import annotations

import itertools
import os
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from measure import CommandFailed, ensure_program, ensure_restic, run_quiet

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
PASSWORD = "benchmark-password"
# Launches the working tree's drengine exactly as the `drengine` console script would.
DRENGINE_LAUNCHER = "import sys; from drengine.cli.main import main; sys.exit(main())"
TOOL_NAMES = ("restic", "borg", "drengine")


@dataclass(frozen=True)
class Command:
    argv: list[str]
    cwd: Path | None = None  # None: the runner's working directory


class Tool:
    """One tool's configuration. Subclasses say how each operation is spelled."""

    def __init__(self, name: str, env: dict[str, str], workdir: Path, cache_dirs: list[Path]):
        self.name = name
        self.env = env
        self.workdir = workdir
        self.cache_dirs = cache_dirs  # wiped with the repository before every fresh backup
        self.version = "unknown"

    @property
    def repo(self) -> Path:
        return self.workdir / f"repo-{self.name}"

    def init(self) -> Command:
        raise NotImplementedError

    def backup(self, path: Path) -> Command:
        raise NotImplementedError

    def restore(self, target: Path) -> Command:
        """Restore the latest snapshot into the existing, empty directory ``target``."""
        raise NotImplementedError

    def restore_file(self, target: Path, path: Path) -> Command:
        """Restore only ``path`` (absolute, as backed up) of the latest snapshot."""
        raise NotImplementedError

    def check(self) -> Command:
        """Verify the repository, reading and decrypting all data."""
        raise NotImplementedError

    def restored(self, target: Path, path: Path) -> Path:
        """Where a restore into ``target`` puts the backed-up ``path``: all three tools strip
        the leading ``/`` and recreate the rest below the target."""
        return target / path.relative_to(path.anchor)


class ResticStyle(Tool):
    """restic's command line, which drengine follows: ``BASE REPO-FLAG REPO ARGS``."""

    def __init__(
        self,
        name: str,
        base: list[str],
        repo_flag: str,
        env: dict[str, str],
        workdir: Path,
        cache_dirs: list[Path],
    ):
        super().__init__(name, env, workdir, cache_dirs)
        self.base = base  # the command, up to (excluding) the repository option
        self.repo_flag = repo_flag

    def cmd(self, *args: str) -> Command:
        return Command([*self.base, self.repo_flag, str(self.repo), *args])

    def init(self) -> Command:
        return self.cmd("init")

    def backup(self, path: Path) -> Command:
        return self.cmd("backup", str(path))

    def restore(self, target: Path) -> Command:
        return self.cmd("restore", "latest", "--target", str(target))

    def restore_file(self, target: Path, path: Path) -> Command:
        return self.cmd("restore", "latest", "--target", str(target), "--include", str(path))

    def check(self) -> Command:
        return self.cmd("check", "--read-data")


class Borg(Tool):
    """borg 1.2: archives need names (a counter), and extract writes into its cwd."""

    def __init__(self, exe: str, env: dict[str, str], workdir: Path, base_dir: Path):
        super().__init__("borg", env, workdir, [base_dir])
        self.exe = exe
        self.archives = itertools.count(1)

    def init(self) -> Command:
        return Command([self.exe, "init", "--encryption=repokey-blake2", str(self.repo)])

    def backup(self, path: Path) -> Command:
        archive = f"{self.repo}::bench-{next(self.archives)}"
        return Command([self.exe, "create", "--compression", "zstd,3", archive, str(path)])

    def latest_archive(self) -> str:
        """The newest archive's name (borg has no "latest"); found before the timed command."""
        argv = [self.exe, "list", "--last", "1", "--short", str(self.repo)]
        res = subprocess.run(argv, env=self.env, capture_output=True, text=True, check=False)
        name = res.stdout.strip()
        if res.returncode != 0 or not name:
            raise CommandFailed(
                f"finding the latest archive failed (exit code {res.returncode})\n"
                f"  command: {' '.join(argv)}\n  output: {res.stderr.strip() or name!r}"
            )
        return name

    def restore(self, target: Path) -> Command:
        archive = f"{self.repo}::{self.latest_archive()}"
        return Command([self.exe, "extract", archive], cwd=target)

    def restore_file(self, target: Path, path: Path) -> Command:
        archive = f"{self.repo}::{self.latest_archive()}"
        return Command([self.exe, "extract", archive, str(path.relative_to(path.anchor))], target)

    def check(self) -> Command:
        return Command([self.exe, "check", "--verify-data", str(self.repo)])


def clean_env() -> dict[str, str]:
    """The parent's environment without anything that could configure any of the tools."""
    drop = ("RESTIC_", "DRENGINE_", "BORG_", "GOMAXPROCS", "GOGC")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def make_restic(workdir: Path) -> Tool:
    cache = workdir / "cache" / "restic"
    env = {**clean_env(), "RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(cache)}
    tool = ResticStyle("restic", [ensure_restic()], "-r", env, workdir, [cache])
    tool.version = run_quiet([*tool.base, "version"], env) or "unknown"
    return tool


def make_borg(workdir: Path) -> Tool:
    # Cache, config (keys) and security dirs (nonces, the repository's last known location)
    # all below one base directory, wiped with the repository: a new repository at the same
    # path must not meet the state of the previous one.
    base = workdir / "cache" / "borg"
    env = {
        **clean_env(),
        "BORG_PASSPHRASE": PASSWORD,
        "BORG_BASE_DIR": str(base),
        "BORG_CACHE_DIR": str(base / "cache"),
        "BORG_CONFIG_DIR": str(base / "config"),
        "BORG_SECURITY_DIR": str(base / "security"),
        "BORG_KEYS_DIR": str(base / "keys"),
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
    }
    tool = Borg(ensure_program("borg", "borgbackup"), env, workdir, base)
    tool.version = run_quiet([tool.exe, "--version"], env) or "unknown"
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
    tool = ResticStyle("drengine", base, "--repo", env, workdir, [cache, xdg])
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


def make_tool(name: str, workdir: Path, drengine_cmd: str | None) -> Tool:
    if name == "restic":
        return make_restic(workdir)
    if name == "borg":
        return make_borg(workdir)
    return make_drengine(workdir, drengine_cmd)
