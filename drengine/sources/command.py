"""Any stream as a source: standard input, or a command's output (restic's ``--stdin``,
``--stdin-from-command``). One entry, ``/NAME``; the record holds its size and SHA-256."""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from drengine.core.errors import UsageError
from drengine.core.model import Node
from drengine.sources.base import (
    BackupContext,
    Entry,
    Readable,
    StoredStream,
    StreamSource,
    stored_entries,
)
from drengine.sources.process import Producer


def entry_path(name: str) -> bytes:
    """``--stdin-filename`` as a path in the snapshot: relative names go under ``/``."""
    if not name or name.endswith("/") or "\0" in name:
        raise UsageError(f"--stdin-filename {name!r} is not a file name")
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise UsageError(f"--stdin-filename {name!r} must not contain . or .. components")
    return os.fsencode("/" + "/".join(parts))


def stream_node(path: bytes, mode: int = 0o600) -> Node:
    now = time.time_ns()
    return Node(
        name=os.path.basename(path),
        type="file",
        mode=mode,
        uid=os.getuid(),
        gid=os.getgid(),
        mtime_ns=now,
        ctime_ns=now,
    )


class StdinSource(StreamSource):
    """``--stdin``: what is piped into drengine."""

    def __init__(self, filename: str = "stdin") -> None:
        super().__init__(kind="stdin")
        self.path = entry_path(filename)

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        yield Entry(self.path, stream_node(self.path), open=self._open)

    @contextmanager
    def _open(self) -> Iterator[Readable]:
        if sys.stdin.isatty():
            raise UsageError("--stdin reads a pipe or a file, not a terminal")
        with open(sys.stdin.fileno(), "rb", buffering=0, closefd=False) as f:
            yield f

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        return {"kind": self.kind, "entries": stored_entries(stored)}


class CommandSource(StreamSource):
    """``--stdin-from-command -- CMD ARGS…``: the command's output, its exit status checked."""

    def __init__(self, argv: list[str], filename: str = "stdin") -> None:
        super().__init__(kind="command")
        if not argv:
            raise UsageError("--stdin-from-command needs a command after --")
        self.argv = argv
        self.path = entry_path(filename)
        self._producer = Producer(argv, what=f"the command {shlex.join(argv)!r}")

    def entries(self, ctx: BackupContext) -> Iterator[Entry]:
        yield Entry(self.path, stream_node(self.path), open=self._producer.stream)

    def finish(self, stored: list[StoredStream]) -> dict[str, Any]:
        self._producer.check()
        return {
            "kind": self.kind,
            # The program only: its arguments may hold a secret (a password in a URL).
            "program": os.path.basename(self.argv[0]),
            "entries": stored_entries(stored),
        }

    def close(self, ok: bool) -> None:
        if not ok:
            self._producer.kill()
