"""Worker processes of one operation, each with an interpreter lock of its own.

Work that is Python per blob or per file (a restore's writes, a check's blob verification)
does not get faster in threads of one process: every thread needs the interpreter lock
between its system calls and C calls. Such operations start ``python -m MODULE FD`` workers
with one end of a private socket pair as ``FD`` and talk to them in messages.

Each message is a 4-byte big-endian length and a pickle. Pickle is safe here: both ends are
this program, the socket pair is created by the parent and inherited by the child only,
and nothing read from the repository or a target is unpickled (a repository's bytes reach a
worker only as ``bytes`` inside a message the parent built).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drengine.core.phases import Phases

_LENGTH = struct.Struct(">I")
_MAX_MESSAGE = 1 << 30
STOP_WAIT = 30.0  # seconds a stopped worker gets to finish what it is doing


@dataclass
class Finished:
    """A worker's last message: its phase timings."""

    phases: list[tuple[str, float, float]]  # (phase, wall seconds, busy seconds)

    @classmethod
    def of(cls, phases: Phases) -> Finished:
        return cls([(n, phases.wall(n), phases.busy(n)) for n in phases.names()])


@dataclass
class Worker:
    proc: subprocess.Popen[bytes]
    sock: socket.socket
    pending: deque[Any] = field(default_factory=deque)  # items sent, not yet answered
    closing: bool = False  # told there is no more work
    finished: bool = False


def cpus() -> int:
    return len(os.sched_getaffinity(0))


def send(sock: socket.socket, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv(sock: socket.socket) -> object:
    """The next message; ``EOFError`` if the other end closed or died."""
    (length,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    if length > _MAX_MESSAGE:
        raise EOFError(f"a message of {length} bytes")
    return pickle.loads(_exactly(sock, length))


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        buf += chunk
    return bytes(buf)


def module_command(module: str) -> list[str]:
    """The command line of a worker running ``module`` of this very drengine.

    ``-P``: ``python -m`` would otherwise put the working directory first on the module
    path, and a ``drengine`` directory there (a restore or backup started in a directory
    others can write to) would run as the worker, with the repository's keys. The
    worker finds drengine where this process did instead (``worker_env``)."""
    return [sys.executable, "-P", "-m", module]


def worker_env() -> dict[str, str]:
    """This environment, with the directory this drengine was imported from first on the
    module path (the same code as this process, wherever that is installed or checked out)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def start(n: int, command: list[str]) -> list[Worker]:
    """Start ``n`` workers running ``command`` + the socket's descriptor (fewer if an
    interpreter cannot start: the caller does what is left itself)."""
    workers = []
    env = worker_env()
    for _ in range(n):
        ours, theirs = socket.socketpair()
        try:
            proc = subprocess.Popen(
                [*command, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            ours.close()
            break
        finally:
            theirs.close()
        workers.append(Worker(proc, ours))
    return workers


def stop(workers: list[Worker], wait: float = STOP_WAIT) -> None:
    """Let each worker finish what it is doing and exit: one waiting for work sees the
    socket close, one working stops after its item on SIGTERM; killed after ``wait``."""
    for w in workers:
        if not w.finished:
            with contextlib.suppress(OSError):
                w.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                w.proc.terminate()
    for w in workers:
        try:
            w.proc.wait(wait)
        except subprocess.TimeoutExpired:
            w.proc.kill()
            w.proc.wait()
        w.sock.close()


def worker_main(argv: list[str], serve: Callable[[socket.socket], None], what: str) -> int:
    """A worker's ``main``: ``serve`` the socket whose descriptor is ``argv[1]``. SIGINT is
    ignored (the parent decides what a Ctrl-C stops). Exit 1 when the parent went away or
    gave up on it, 2 when it failed (the parent does its work itself), 0 when done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=int(argv[1]))
    try:
        serve(sock)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return 1
    except Exception as e:
        print(f"drengine: {what} stopped: {e}", file=sys.stderr)
        return 2
    finally:
        sock.close()
    return 0
