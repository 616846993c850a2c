"""Run the drengine CLI and SIGKILL it at a chosen storage write (for the kill-loop tests).

    python kill_harness.py MODE N -- DRENGINE ARGS...

Every write the local backend makes (put, put_file, put_if_absent, delete) is counted in
order.
MODE ``before``: the process kills itself just before write N; ``during``: in the middle of
write N (half the temporary file written, nothing renamed; for a delete, right after it);
``count``: no kill, the number of
writes is printed on stderr at exit as ``writes=K``. The kill points are exact and the same
on every run of the same command on the same data, unlike a timer.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Any

from drengine.storage import local

_lock = threading.Lock()
_count = 0


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counted(mode: str, n: int, fn: Any, name_arg: bool = True) -> Any:
    def inner(self: local.LocalBackend, name: str, *args: Any) -> Any:
        global _count
        with _lock:
            _count += 1
            mine = _count
        if mine == n and mode == "before":
            _die()
        if mine == n and mode == "during" and not args:  # a delete: die right after it
            result = fn(self, name)
            _die()
            return result
        if mine == n and mode == "during":
            real_fsync = os.fsync

            def half_then_die(fd: int) -> None:  # the temp file is being synced: cut it
                os.ftruncate(fd, os.fstat(fd).st_size // 2)
                _die()

            os.fsync = half_then_die  # type: ignore[assignment]
            try:
                return fn(self, name, *args)
            finally:
                os.fsync = real_fsync
        return fn(self, name, *args)

    return inner


def main() -> None:
    mode, n = sys.argv[1], int(sys.argv[2])
    assert sys.argv[3] == "--"
    for method in ("put", "put_file", "put_if_absent", "delete"):
        setattr(local.LocalBackend, method, _counted(mode, n, getattr(local.LocalBackend, method)))
    if mode == "count":
        atexit.register(lambda: print(f"writes={_count}", file=sys.stderr))
    from drengine.cli.main import main as drengine_main

    sys.argv = ["drengine", *sys.argv[4:]]
    drengine_main()


if __name__ == "__main__":
    main()
