"""Writing every byte to a stream that may take fewer.

A raw stream may take part of a write, and a non-blocking one (stdout inherited with
O_NONBLOCK from a parent) may take none and raise ``BlockingIOError`` or return None until
it drains. Ignoring either silently loses output: a dump piped into another program came
out shorter than the file.
"""

from __future__ import annotations

import select
from typing import BinaryIO


def _wait_writable(out: BinaryIO) -> None:
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        return  # no descriptor to wait on: the retry is all we can do
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    poller.poll()


def write_all(out: BinaryIO, data: bytes) -> None:
    """Write every byte of ``data``; ``OSError`` if the stream takes none without saying
    it would block."""
    view = memoryview(data)
    while view:
        try:
            n: int | None = out.write(view)
        except BlockingIOError as e:
            n = e.characters_written  # taken into a full buffer before it would block
            _wait_writable(out)
        else:
            if n is None:  # a raw non-blocking stream that would block
                _wait_writable(out)
                continue
            if n <= 0:
                raise OSError(f"the output took no bytes ({n})")
        view = view[n:]


def flush_all(out: BinaryIO) -> None:
    while True:
        try:
            out.flush()
            return
        except BlockingIOError:
            _wait_writable(out)
