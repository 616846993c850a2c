"""What the index says of one blob, without the index: engine modules that only pass entries
around import this, not ``index`` with numpy, so a command derives its key (64 MiB at once)
before numpy is loaded."""

from __future__ import annotations

from typing import NamedTuple

from drengine.repository.layout import BlobType


class IndexEntry(NamedTuple):
    """A named tuple: made once per look-up, and a frozen dataclass costs 5x more."""

    pack_id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int
