"""A directory row's entry records (``files_dirsig.pack_entries``): what goes in comes out,
across the slices it is compressed in, and a damaged or foreign row reads as none."""

from __future__ import annotations

import random

import pytest

from drengine.sources import files_dirsig
from drengine.sources.files_dirsig import pack_entries, unpack_entries

CTX = bytes(range(32))


def _records(n: int, seed: int) -> list[tuple[bytes, bytes, bytes]]:
    rng = random.Random(seed)
    return [
        (
            b"n%d-" % i + rng.randbytes(rng.randrange(0, 30)),
            rng.randbytes(rng.randrange(60, 80)),
            b'{"name":"x","size":%d}' % rng.randrange(10**9) * rng.randrange(1, 20),
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("n", [0, 1, 255, 256, 257, 3000])
def test_records_come_back_across_slices(n: int) -> None:
    recs = _records(n, n)
    assert unpack_entries(CTX, pack_entries(CTX, recs)) == {a: (b, c) for a, b, c in recs}


def test_slices_do_not_change_what_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    recs = _records(500, 7)
    whole = unpack_entries(CTX, pack_entries(CTX, recs))
    monkeypatch.setattr(files_dirsig, "_SLICE", 4)  # one record per slice
    assert unpack_entries(CTX, pack_entries(CTX, recs)) == whole


def test_a_damaged_or_foreign_row_reads_as_none() -> None:
    data = bytearray(pack_entries(CTX, _records(50, 1)))
    assert unpack_entries(bytes(32), bytes(data)) == {}  # another context
    data[-3] ^= 1
    assert unpack_entries(CTX, bytes(data)) == {}
    assert unpack_entries(CTX, None) == {} and unpack_entries(CTX, b"x" * 63) == {}
