"""Running the drengine CLI as a subprocess against an S3 repository (shared by the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from seaweed_server import SeaweedS3

PROJECT_ROOT = Path(__file__).resolve().parents[2]
KDF_ARGS = ("--kdf-memory-mib", "8", "--kdf-iterations", "1")


def describe(args: Sequence[str], got: int | None, wanted: int, out: str, err: str) -> str:
    return (
        f"drengine {' '.join(args)}: exit {got}, wanted {wanted}\n"
        f"stdout: {out[-2000:]}\nstderr: {err[-3000:]}"
    )


class Drengine:
    """The CLI on one repository with a controlled environment and a cache of its own."""

    def __init__(
        self,
        server: SeaweedS3 | None,
        url: str,
        cache: Path,
        cwd: Path,
        password: str,
        **env: str,
    ) -> None:
        self.url = url
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DRENGINE_", "AWS_"))}
        base.update(server.env() if server else {})
        base.update(
            DRENGINE_PASSWORD=password,
            DRENGINE_CACHE_DIR=str(cache),
            PYTHONPATH=str(PROJECT_ROOT),
            NO_COLOR="1",
        )
        base.update(env)
        self.env = base
        self.cwd = cwd

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "drengine", "--repo", self.url, *args]

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            self.cmd(*args),
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __call__(
        self, *args: str, code: int = 0, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            self.cmd(*args),
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
        assert proc.returncode == code, describe(
            args, proc.returncode, code, proc.stdout, proc.stderr
        )
        return proc

    def init(self, *extra: str) -> None:
        self("init", *KDF_ARGS, *extra)
