"""The index: blob ID -> (pack, type, offset, length, raw length).

In memory it is a few numpy arrays sorted by the first 8 bytes of the ID (about 50 bytes a
blob, so 10^7 blobs take ~500 MB rather than several GB of Python objects), plus a small dict
of blobs added since the last merge. IDs are keyed hashes, so their prefixes are uniform and
binary search on a uint64 key is fast; equal prefixes are resolved by comparing whole IDs.

On storage an index object is sealed (see ``crypto.aead``); its plaintext is zstd-compressed::

    "DRI\\x01" | u32 pack count | u32 superseded count | superseded index IDs (32 each)
    per pack: pack ID (32) | u32 blob count | blob records (45 bytes each, as in pack trailers)
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import zstandard

from drengine.core.errors import IntegrityError
from drengine.repository.layout import BlobType
from drengine.repository.pack import RECORD_DTYPE, BlobRecord, records_to_bytes

INDEX_MAGIC = b"DRI\x01"
_U32 = struct.Struct("<I")
_ROW_DTYPE = np.dtype(
    [
        ("id", "V32"),
        ("pack", "<u4"),
        ("type", "u1"),
        ("offset", "<u4"),
        ("length", "<u4"),
        ("raw", "<u4"),
    ]
)
_MERGE_AT = 1 << 16
_TYPES = {int(t): t for t in BlobType}  # BlobType(n) costs an enum call per look-up
# Format limit (repository-format §11): an index object's plaintext is at most this large.
# Checked while decompressing, so a small crafted object cannot inflate to gigabytes.
MAX_INDEX_PLAINTEXT = 256 << 20
# Writers start a new index object after this many blobs (about 4.5 MB of plaintext).
BLOBS_PER_INDEX = 100_000


@dataclass(frozen=True, slots=True)
class IndexEntry:
    pack_id: bytes
    type: BlobType
    offset: int
    length: int
    raw_length: int


def _key(blob_id: bytes) -> int:
    return int.from_bytes(blob_id[:8], "big")


class Index:
    """Thread-safe look-ups; additions from pack uploads of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pack_ids: list[bytes] = []
        self._pack_no: dict[bytes, int] = {}
        self._keys = np.zeros(0, dtype=np.uint64)
        self._rows = np.zeros(0, dtype=_ROW_DTYPE)
        self._overlay: dict[bytes, tuple[int, int, int, int, int]] = {}
        self._staged: list[np.ndarray] = []
        # Packs found missing from storage: their entries are skipped, so a look-up finds
        # another copy of the blob if there is one, and a backup stores the blob again.
        self._missing: set[int] = set()

    def _pack_number(self, pack_id: bytes) -> int:
        no = self._pack_no.get(pack_id)
        if no is None:
            no = len(self._pack_ids)
            self._pack_ids.append(pack_id)
            self._pack_no[pack_id] = no
        return no

    def stage_pack_array(self, pack_id: bytes, records: np.ndarray) -> None:
        """Add a pack's records (RECORD_DTYPE array) in bulk; call ``build`` when done."""
        with self._lock:
            rows = np.zeros(len(records), dtype=_ROW_DTYPE)
            for field in ("id", "type", "offset", "length"):
                rows[field] = records[field]
            rows["raw"] = records["raw"]
            rows["pack"] = self._pack_number(pack_id)
            self._staged.append(rows)

    def build(self) -> None:
        with self._lock:
            self._merge_locked()

    def add_pack(self, pack_id: bytes, records: Iterable[BlobRecord]) -> None:
        with self._lock:
            no = self._pack_number(pack_id)
            for r in records:
                self._overlay[r.id] = (no, int(r.type), r.offset, r.length, r.raw_length)
            if len(self._overlay) >= _MERGE_AT:
                self._merge_locked()

    def _merge_locked(self) -> None:
        parts = [self._rows, *self._staged]
        if self._overlay:
            extra = np.zeros(len(self._overlay), dtype=_ROW_DTYPE)
            for i, (bid, (no, t, off, ln, raw)) in enumerate(self._overlay.items()):
                extra[i] = (bid, no, t, off, ln, raw)
            parts.append(extra)
        rows = np.concatenate(parts) if len(parts) > 1 else self._rows
        keys = np.frombuffer(rows["id"].tobytes(), dtype=">u8")[::4].astype(np.uint64)
        order = np.argsort(keys, kind="stable")
        self._rows, self._keys = rows[order], keys[order]
        self._overlay.clear()
        self._staged.clear()

    def mark_missing(self, pack_id: bytes) -> bool:
        """Skip this pack's entries from now on; False if it was not indexed or already
        skipped."""
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is None or no in self._missing:
                return False
            self._missing.add(no)
            return True

    def lookup(self, blob_id: bytes, skip: frozenset[bytes] = frozenset()) -> IndexEntry | None:
        """The entry of a blob in a pack not marked missing and not in ``skip``."""
        with self._lock:
            hit = self._overlay.get(blob_id)
            if hit is not None:
                no, t, off, ln, raw = hit
                if no not in self._missing and self._pack_ids[no] not in skip:
                    return IndexEntry(self._pack_ids[no], _TYPES[t], off, ln, raw)
            key = _key(blob_id)
            keys = self._keys
            i = int(keys.searchsorted(np.uint64(key)))
            while i < len(keys) and int(keys[i]) == key:
                # One conversion of the row to Python values (field access costs one each).
                bid, no, t, off, ln, raw = self._rows[i].item()
                if bid == blob_id and no not in self._missing and self._pack_ids[no] not in skip:
                    return IndexEntry(self._pack_ids[no], _TYPES[t], off, ln, raw)
                i += 1
        return None

    def missing_pack_of(self, blob_id: bytes) -> bytes | None:
        """The pack, marked missing, that held the blob (for messages naming what was
        lost), or None."""
        with self._lock:
            hit = self._overlay.get(blob_id)
            if hit is not None and hit[0] in self._missing:
                return self._pack_ids[hit[0]]
            key = _key(blob_id)
            keys = self._keys
            i = int(keys.searchsorted(np.uint64(key)))
            while i < len(keys) and int(keys[i]) == key:
                bid, no, *_ = self._rows[i].item()
                if bid == blob_id and no in self._missing:
                    return self._pack_ids[int(no)]
                i += 1
        return None

    def __contains__(self, blob_id: object) -> bool:
        return isinstance(blob_id, bytes) and self.lookup(blob_id) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows) + len(self._overlay) + sum(len(s) for s in self._staged)

    def pack_ids(self) -> set[bytes]:
        with self._lock:
            self._merge_locked()
            used = np.unique(self._rows["pack"])
            return {self._pack_ids[int(n)] for n in used if int(n) not in self._missing}

    def entries(self) -> Iterator[tuple[bytes, IndexEntry]]:
        """Every (blob ID, entry) outside missing packs; for check and prune, not hot paths."""
        with self._lock:
            self._merge_locked()
            rows, pack_ids, missing = self._rows, list(self._pack_ids), set(self._missing)
        for bid, no, t, off, ln, raw in rows.tolist():
            if no not in missing:
                yield bytes(bid), IndexEntry(pack_ids[no], BlobType(t), off, ln, raw)


def index_batches(
    packs: list[tuple[bytes, list[BlobRecord]]],
) -> Iterator[list[tuple[bytes, list[BlobRecord]]]]:
    """Split packs into groups of at most ``BLOBS_PER_INDEX`` blobs (a pack holds at most
    that many), one index object each, so none outgrows the format's limit."""
    part: list[tuple[bytes, list[BlobRecord]]] = []
    count = 0
    for pack in packs:
        if part and count + len(pack[1]) > BLOBS_PER_INDEX:
            yield part
            part, count = [], 0
        part.append(pack)
        count += len(pack[1])
    if part:
        yield part


def encode_index(
    packs: list[tuple[bytes, list[BlobRecord]]], supersedes: list[bytes] | None = None
) -> bytes:
    supersedes = supersedes or []
    out = [INDEX_MAGIC, _U32.pack(len(packs)), _U32.pack(len(supersedes)), *supersedes]
    for pack_id, records in packs:
        out += [pack_id, _U32.pack(len(records)), records_to_bytes(records)]
    return zstandard.ZstdCompressor(level=3).compress(b"".join(out))


def _decompress_bounded(data: bytes, what: str) -> bytes:
    """One zstd frame, refused before allocating when it would exceed ``MAX_INDEX_PLAINTEXT``.
    A frame with its content size in the header is checked against the limit first (and zstd
    checks the size it declares); one without is decoded with the limit as the bound."""
    try:
        declared = zstandard.frame_content_size(data)
        if declared > MAX_INDEX_PLAINTEXT:
            raise IntegrityError(f"{what} declares {declared} bytes, more than an index may hold")
        dctx = zstandard.ZstdDecompressor()
        if declared >= 0:
            return dctx.decompress(data)
        return dctx.decompress(data, max_output_size=MAX_INDEX_PLAINTEXT)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"{what} does not decompress: {e}") from None


def decode_index(data: bytes, what: str) -> tuple[list[tuple[bytes, np.ndarray]], list[bytes]]:
    """(list of (pack ID, RECORD_DTYPE array)), superseded index IDs)."""
    plain = _decompress_bounded(data, what)
    try:
        if not plain.startswith(INDEX_MAGIC):
            raise ValueError("bad magic")
        pos = len(INDEX_MAGIC)
        (npacks,) = _U32.unpack_from(plain, pos)
        (nsup,) = _U32.unpack_from(plain, pos + 4)
        pos += 8
        if 32 * nsup > len(plain) - pos:
            # Checked first: 2**32-1 IDs claimed by 12 bytes meant minutes and a 34 GB list.
            raise ValueError(f"{nsup} superseded IDs do not fit")
        supersedes = [plain[pos + 32 * i : pos + 32 * (i + 1)] for i in range(nsup)]
        pos += 32 * nsup
        packs = []
        for _ in range(npacks):
            pack_id = plain[pos : pos + 32]
            (count,) = _U32.unpack_from(plain, pos + 32)
            pos += 36
            arr = np.frombuffer(plain, dtype=RECORD_DTYPE, count=count, offset=pos)
            if (arr["type"] > max(BlobType)).any():  # look-ups would fail on it later
                raise ValueError("a blob of unknown type")
            pos += count * RECORD_DTYPE.itemsize
            packs.append((pack_id, arr))
        if pos != len(plain):
            raise ValueError("trailing bytes")
    except (ValueError, struct.error) as e:
        raise IntegrityError(f"{what} is malformed: {e}") from None
    return packs, supersedes
