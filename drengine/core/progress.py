"""Counters an operation updates and a renderer reads (the CLI draws them with rich)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class Progress:
    files_done: int = 0
    bytes_done: int = 0
    files_total: int = 0  # grows while a scanner counts; final when ``total_known``
    bytes_total: int = 0
    total_known: bool = False
    current: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n

    def files_done_many(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files_done += files
            self.bytes_done += nbytes

    def file_done(self, path: str = "") -> None:
        with self._lock:
            self.files_done += 1
            if path:
                self.current = path
