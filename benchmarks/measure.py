"""Helpers of the benchmark runner: timed child processes with peak RSS, tools, the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measurement:
    argv: list[str]
    returncode: int
    seconds: float
    cpu_seconds: float  # user + system
    peak_rss_mib: float
    log: Path
    cwd: Path | None = None  # the child's working directory, if not the runner's


class CommandFailed(RuntimeError):
    pass


GNU_TIME = "/usr/bin/time"


def gnu_time_available() -> bool:
    out = run_quiet([GNU_TIME, "--version"]) if os.access(GNU_TIME, os.X_OK) else None
    return out is not None and "GNU" in out


def run_measured(
    argv: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    use_gnu_time: bool = True,
    cwd: Path | None = None,
) -> Measurement:
    """Run ``argv``, time it (wall clock) and measure the child's peak RSS.

    stdout and stderr go to ``log`` (never a pipe, so a chatty child cannot block). ``cwd``:
    the child's working directory (``borg extract`` writes into it).

    Peak RSS: ``ru_maxrss`` from ``os.wait4`` on a child that this Python process spawned is
    wrong: subprocess starts children with vfork/posix_spawn, and at exec Linux carries the
    *parent's* high-water RSS over into the child's ``ru_maxrss`` (a 500 MiB runner makes
    ``restic version`` look like 500 MiB). So the command runs below GNU time, a process of
    ~2 MiB whose own child starts clean, and ``%M`` is that child's peak. Without GNU time,
    ``wait4`` is used and the value is only an upper bound (floored at the runner's peak).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_suffix(".time")
    rss_file.unlink(missing_ok=True)
    gnu = [GNU_TIME, "-f", "%U %S %M", "-o", str(rss_file)] if use_gnu_time else []
    with log.open("wb") as out:
        where = f"cd {cwd} && " if cwd else ""
        out.write(("$ " + where + " ".join(argv) + "\n").encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            [*gnu, *argv],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
        )
        _pid, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code  # already reaped: keep Popen from waiting again
    cpu, peak_kib = usage.ru_utime + usage.ru_stime, float(usage.ru_maxrss)
    if use_gnu_time:
        # The last line is "%U %S %M"; on failure GNU time writes a status line before it.
        lines = rss_file.read_text().splitlines() if rss_file.exists() else []
        try:
            user, system, peak = (float(x) for x in lines[-1].split())
            cpu, peak_kib = user + system, peak
        except (IndexError, ValueError):
            peak_kib = 0.0
    return Measurement(list(argv), code, seconds, cpu, peak_kib / 1024, log, cwd)


def check_ok(m: Measurement, what: str) -> Measurement:
    if m.returncode != 0:
        tail = m.log.read_text(errors="replace").splitlines()[-25:]
        raise CommandFailed(
            f"{what} failed with exit code {m.returncode}\n  command: {' '.join(m.argv)}\n"
            f"  log: {m.log}\n  last lines:\n    " + "\n    ".join(tail)
        )
    return m


def run_quiet(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str | None:
    """Output (stdout, stripped) of a short command, None if it fails or does not exist."""
    try:
        res = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=120,
            env=None if env is None else dict(env),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def tree_bytes(root: Path) -> int:
    total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def machine_info() -> dict[str, str | int | float]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    except OSError:
        pass
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory": mem,
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
    }


def apt_install(package: str) -> bool:
    """``apt-get install -y PACKAGE`` (after ``apt-get update`` if the first try fails)."""
    if shutil.which("apt-get") is None:
        return False
    print(f"installing {package} with apt-get ...", flush=True)
    install = ["apt-get", "install", "-y", "-q", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False).returncode == 0:
        return True
    subprocess.run(["apt-get", "update", "-q"], env=env, check=False)
    return subprocess.run(install, env=env, check=False).returncode == 0


def ensure_program(program: str, package: str) -> str:
    """Path of ``program``, installed from Debian's ``package`` if it is missing."""
    found = shutil.which(program)
    if not found:
        apt_install(package)
        found = shutil.which(program)
    if not found:
        sys.exit(
            f"benchmarks: error: {program} is not on PATH and `apt-get install {package}` failed"
        )
    return found


def ensure_restic() -> str:
    return ensure_program("restic", "restic")


def ensure_gnu_time() -> bool:
    """True if GNU time can measure peak RSS (see measure.run_measured)."""
    if gnu_time_available() or (apt_install("time") and gnu_time_available()):
        return True
    print(
        "WARNING: GNU time (/usr/bin/time) is missing: peak RSS falls back to wait4(), which is"
        " only an upper bound (it includes this runner's own peak)",
        file=sys.stderr,
    )
    return False
