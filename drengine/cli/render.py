"""Output helpers: JSON for machines, rich for people, progress only on a terminal."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from drengine.core.errors import OutputClosed
from drengine.core.progress import Progress
from drengine.core.streams import flush_all, write_all

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich console made on first use: rich costs start-up time that ``--version``,
    ``--help`` and JSON output never need."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def _get(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._options)
        return self._console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self._get().print(*objects, **kwargs)

    @property
    def is_terminal(self) -> bool:
        return self._get().is_terminal

    def status(self, text: str) -> Any:
        return self._get().status(text)


# soft_wrap: a message stays one line when stderr is a log file or a pipe (scripts grep it).
err_console = _LazyConsole(stderr=True, highlight=False, soft_wrap=True)
out_console = _LazyConsole(highlight=False)


def print_json(obj: Any) -> None:
    write_stdout((json.dumps(obj, indent=2) + "\n").encode())


def write_stdout(data: bytes | memoryview) -> None:
    """All of ``data`` to standard output, or ``OutputClosed`` when its reader is gone."""
    try:
        sys.stdout.flush()  # text written before must come first
        write_all(sys.stdout.buffer, bytes(data))
        flush_all(sys.stdout.buffer)
    except BrokenPipeError:
        raise OutputClosed("standard output was closed") from None


def printable(text: str) -> str:
    """``text`` with control characters escaped: a file or host name must not drive the
    terminal (escape sequences)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """Plain columns, each as wide as its widest line, a cell's lines stacked (restic's
    layout). Cells are printed as they are: no markup is interpreted, control characters
    are escaped, and no table library is loaded for a listing."""
    cells = [[[printable(line) for line in c.split("\n")] for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, lines in enumerate(row):
            widths[i] = max(widths[i], *(len(x) for x in lines))

    def line(parts: list[str]) -> str:
        return "  ".join(p.ljust(w) for p, w in zip(parts, widths, strict=True)).rstrip()

    out = [line(headers), "-" * (sum(widths) + 2 * (len(widths) - 1))]
    for row in cells:
        height = max(len(lines) for lines in row)
        for k in range(height):
            out.append(line([lines[k] if k < len(lines) else "" for lines in row]))
    return "\n".join(out) + "\n"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n} B"


def _line(p: Progress, started: float) -> str:
    elapsed = max(time.monotonic() - started, 1e-6)
    rate = p.bytes_done / elapsed
    text = f"{p.files_done} files, {human_bytes(p.bytes_done)}, {human_bytes(rate)}/s"
    if p.total_known and p.bytes_total:
        pct = 100 * p.bytes_done / p.bytes_total
        eta = (p.bytes_total - p.bytes_done) / rate if rate > 0 else 0
        text += f" | {pct:.0f}% of {human_bytes(p.bytes_total)}, ETA {int(eta)} s"
    return text


@contextmanager
def show_progress(p: Progress, enabled: bool = True) -> Iterator[None]:
    """Redraw one status line on stderr while the block runs, on a terminal only."""
    if not (enabled and sys.stderr.isatty()):
        yield
        return
    started = time.monotonic()
    stop = threading.Event()
    with err_console.status(_line(p, started)) as status:

        def refresh() -> None:
            while not stop.wait(0.25):
                status.update(_line(p, started))

        t = threading.Thread(target=refresh, daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
