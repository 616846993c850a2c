"""A producer process whose standard output is backed up (dump tools, any command).

The output is read straight into the pipeline through a pipe: no temporary file, memory
bounded by the pipeline's queues. Standard error is kept (its last lines) for the message
when the process fails; the exit status is checked after the last byte, so a dump that
fails halfway fails the backup instead of being stored as a truncated success. The process
runs in its own process group, killed with its children if the backup stops first.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import IO

from drengine.sources.base import Readable, SourceFailed

_STDERR_LINES = 20


class Producer:
    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        what: str = "",
        pass_fds: Sequence[int] = (),
    ) -> None:
        self.argv = list(argv)
        self.what = what or shlex.join(self.argv)
        self._env = dict(env) if env is not None else None
        self._pass_fds = tuple(pass_fds)
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: deque[str] = deque(maxlen=_STDERR_LINES)
        self._stderr_thread: threading.Thread | None = None

    def start(self) -> IO[bytes]:
        try:
            self._proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._env,
                start_new_session=True,
                pass_fds=self._pass_fds,
                bufsize=0,
            )
        except OSError as e:
            raise SourceFailed(f"cannot run {self.argv[0]}: {e.strerror or e}") from e
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._stderr_thread = threading.Thread(
            target=self._drain_stderr, args=(self._proc.stderr,), daemon=True
        )
        self._stderr_thread.start()
        return self._proc.stdout

    def _drain_stderr(self, stream: IO[bytes]) -> None:
        for line in stream:
            text = line.decode("utf-8", "replace").rstrip()
            if text:
                self._stderr.append(text)

    @contextmanager
    def stream(self) -> Iterator[Readable]:
        """The process's output; when the block ends, the process is waited for."""
        out = self.start()
        try:
            yield out  # type: ignore[misc]
        except BaseException:
            self.kill()
            raise
        finally:
            out.close()

    def wait(self) -> int:
        assert self._proc is not None
        code = self._proc.wait()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=5)
        return code

    def check(self) -> None:
        """After the last byte: ``SourceFailed`` unless the process exited with status 0."""
        code = self.wait()
        if code == 0:
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        raise SourceFailed(f"{self.what} {how}{self.stderr_summary()}; no snapshot written")

    def stderr_summary(self) -> str:
        lines = [ln for ln in self._stderr if ln]
        return ": " + " / ".join(lines[-3:]) if lines else ""

    @property
    def stderr_lines(self) -> list[str]:
        return list(self._stderr)

    def kill(self) -> None:
        """Stop the process and its children (a pipeline in a shell, say)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def feed(
    argv: Sequence[str], chunks: Iterable[bytes] | None, env: Mapping[str, str] | None = None
) -> tuple[int, list[str]]:
    """Run a loader (pg_restore, the mariadb client) with ``chunks`` on its standard input;
    its exit status and the last lines of its standard error. If reading ``chunks`` fails
    (verification), the loader is killed before it sees the end of its input."""
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if chunks is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as e:
        raise SourceFailed(f"cannot run {argv[0]}: {e.strerror or e}") from e
    err: deque[str] = deque(maxlen=_STDERR_LINES)

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            text = line.decode("utf-8", "replace").strip()
            if text:
                err.append(text)

    t = threading.Thread(target=drain, daemon=True)
    t.start()
    try:
        if chunks is not None:
            assert proc.stdin is not None
            with suppress(BrokenPipeError):  # the loader stopped: its message says why
                for c in chunks:
                    proc.stdin.write(c)
            with suppress(BrokenPipeError):
                proc.stdin.close()
    except BaseException:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    code = proc.wait()
    t.join(timeout=5)
    return code, list(err)
