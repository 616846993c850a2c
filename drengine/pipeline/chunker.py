"""Content-defined chunking of a stream with FastCDC (pyfastcdc, seeded per repository).

Reads go into a fresh buffer each round, so the memoryviews handed out stay valid while
other threads compress them: no copy per chunk. The last chunk of a buffer may have been cut
only because the buffer ended, so it is carried into the next round; a FastCDC cut depends
only on bytes before it, so the result equals chunking the whole stream at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from pyfastcdc import FastCDC

ReadInto = Callable[[memoryview], int]
# Each buffer stays alive while any chunk cut from it waits for a sealer: 8 MiB reads pinned
# ~37 MB in a backup of /usr/lib (memray). A buffer still holds a whole chunk after the
# carried tail, which is scanned again (~20 % more FastCDC work on large files, in C).
_READ_SIZE = 4 * 1024 * 1024


class Chunker:
    def __init__(self, min_size: int, avg_size: int, max_size: int, seed: int) -> None:
        self._cdc = FastCDC(
            avg_size, min_size=min_size, max_size=max_size, normalized_chunking=1, seed=seed
        )
        self.min_size = min_size
        self._read_size = max(_READ_SIZE, max_size)

    def chunks(self, read_into: ReadInto, first: int = 0) -> Iterator[memoryview]:
        """Chunks of everything ``read_into`` delivers until it returns 0.

        ``first`` sizes the first buffer (a small file needs no 4 MiB buffer).
        """
        carry: bytes = b""
        size = min(first, self._read_size) + 1 if first else self._read_size
        while True:
            buf = bytearray(len(carry) + size)
            buf[: len(carry)] = carry
            filled, eof = len(carry), False
            view = memoryview(buf)
            while filled < len(buf):
                n = read_into(view[filled:])
                if n <= 0:
                    eof = True
                    break
                filled += n
            data = view[:filled]
            if not data:
                return
            if eof:
                for c in self._cdc.cut_buf(data):
                    yield c.data
                return
            last: memoryview | None = None
            for c in self._cdc.cut_buf(data):
                if last is not None:
                    yield last
                last = c.data
            carry = bytes(last) if last is not None else b""
            size = self._read_size
