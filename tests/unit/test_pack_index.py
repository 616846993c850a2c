"""Packs (``PackWriter``/``parse_trailer``), index objects (``encode_index``/``decode_index``)
and the in-memory ``Index``: round trips, the byte layout of the format document, damage."""

from __future__ import annotations

import os
import struct
import threading

import numpy as np
import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from drengine.core.errors import IntegrityError
from drengine.repository import blobcodec
from drengine.repository import index as index_module
from drengine.repository.index import Index
from drengine.repository.index_entry import IndexEntry
from drengine.repository.index_format import (
    RECORD_DTYPE,
    decode_index,
    encode_index,
    records_from_array,
)
from drengine.repository.layout import BlobType
from drengine.repository.pack import (
    HEADER_SIZE,
    PACK_MAGIC,
    BlobRecord,
    PackWriter,
    decrypt_blob,
    parse_trailer,
    records_to_bytes,
)

KEY = bytes(range(32))
N_IDS = 200_000


def _pack(blobs: list[tuple[BlobType, bytes]], key: bytes = KEY) -> tuple[bytes, PackWriter]:
    w = PackWriter(key)
    for t, data in blobs:
        w.add(t, os.urandom(32), blobcodec.encode(data, 3), len(data))
    return bytes(w.finish()), w


def _sample_blobs() -> list[tuple[BlobType, bytes]]:
    return [
        (BlobType.DATA, os.urandom(5000)),  # incompressible: stored raw
        (BlobType.DATA, b"abc" * 4000),  # compressible: zstd
        (BlobType.DATA, b""),
        (BlobType.DATA, b"x"),
        (BlobType.TREE, b'{"nodes":[]}'),
        (BlobType.DATA, os.urandom(70_000)),
    ]


# ---- packs ------------------------------------------------------------------------------------


def test_pack_round_trip() -> None:
    blobs = _sample_blobs()
    pack, w = _pack(blobs)
    salt, records = parse_trailer(KEY, pack, "pack")
    assert salt == pack[4:HEADER_SIZE]
    assert records == w.records
    assert [r.type for r in records] == [t for t, _ in blobs]
    for rec, (_, data) in zip(records, blobs, strict=True):
        assert rec.raw_length == len(data)
        payload = decrypt_blob(KEY, salt, rec, pack[rec.offset : rec.offset + rec.length], "b")
        assert blobcodec.decode(payload, rec.raw_length, "b") == data


def test_pack_layout_matches_the_format_document() -> None:
    blobs = _sample_blobs()
    pack, w = _pack(blobs)
    assert pack[:4] == PACK_MAGIC == b"DRP\x01"
    salt = pack[4:36]
    # blob ciphertexts back to back from offset 36, each payload + 16-byte tag
    offset = 36
    for rec in w.records:
        assert rec.offset == offset
        offset += rec.length
    (tlen,) = struct.unpack("<I", pack[-4:])
    assert len(pack) == offset + tlen + 4
    # the trailer, decrypted independently: u32 count, then 45-byte records
    subkey = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=salt, info=b"drengine v1 object key"
    ).derive(KEY)
    aead = AESGCM(subkey)
    plain = aead.decrypt(struct.pack(">IQ", 1, 0), pack[offset:-4], b"drengine pack trailer")
    (count,) = struct.unpack_from("<I", plain)
    assert count == len(blobs) and len(plain) == 4 + 45 * count
    for i, rec in enumerate(w.records):
        t, bid, off, ln, raw = struct.unpack_from("<B32sIII", plain, 4 + 45 * i)
        assert (t, bid, off, ln, raw) == (rec.type, rec.id, rec.offset, rec.length, rec.raw_length)
        # each blob: nonce (0, offset), AAD type byte + blob ID
        payload = aead.decrypt(struct.pack(">IQ", 0, off), pack[off : off + ln], bytes([t]) + bid)
        assert len(payload) + 16 == ln
        assert payload[0] in (0, 1)


def test_empty_pack_round_trip() -> None:
    pack, _ = _pack([])
    salt, records = parse_trailer(KEY, pack, "pack")
    assert records == [] and salt == pack[4:36]


def test_damaged_pack_trailer_is_integrity_error() -> None:
    pack, w = _pack(_sample_blobs()[:3])
    trailer_start = w.records[-1].offset + w.records[-1].length
    for pos in [*range(trailer_start, len(pack)), 0, 3, 4, 35]:
        for bit in (0, 5):
            damaged = bytearray(pack)
            damaged[pos] ^= 1 << bit
            with pytest.raises(IntegrityError):
                parse_trailer(KEY, bytes(damaged), "pack")


@pytest.mark.parametrize("cut", [0, 1, 4, 35, 36, 40, 56, -1, -4, -5, -20])
def test_truncated_pack_is_integrity_error(cut: int) -> None:
    pack, _ = _pack(_sample_blobs()[:2])
    with pytest.raises(IntegrityError):
        parse_trailer(KEY, pack[:cut], "pack")


def test_pack_with_another_key_is_integrity_error() -> None:
    pack, _ = _pack(_sample_blobs()[:2])
    with pytest.raises(IntegrityError):
        parse_trailer(os.urandom(32), pack, "pack")


def test_blob_is_bound_to_its_type_id_and_offset() -> None:
    pack, w = _pack([(BlobType.DATA, b"first blob " * 10), (BlobType.DATA, b"second " * 10)])
    salt = pack[4:36]
    rec = w.records[1]
    ct = pack[rec.offset : rec.offset + rec.length]
    assert decrypt_blob(KEY, salt, rec, ct, "b")
    wrong = [
        BlobRecord(BlobType.TREE, rec.id, rec.offset, rec.length, rec.raw_length),
        BlobRecord(rec.type, os.urandom(32), rec.offset, rec.length, rec.raw_length),
        BlobRecord(rec.type, rec.id, w.records[0].offset, rec.length, rec.raw_length),
    ]
    for bad in wrong:
        with pytest.raises(IntegrityError):
            decrypt_blob(KEY, salt, bad, ct, "b")
    with pytest.raises(IntegrityError):
        decrypt_blob(KEY, os.urandom(32), rec, ct, "b")
    for bit in range(0, len(ct) * 8, 13):
        damaged = bytearray(ct)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError):
            decrypt_blob(KEY, salt, rec, bytes(damaged), "b")


# ---- index objects ----------------------------------------------------------------------------


def _random_records(n: int, rng: np.random.Generator) -> list[BlobRecord]:
    return [
        BlobRecord(
            BlobType(int(rng.integers(0, 2))),
            rng.bytes(32),
            int(rng.integers(36, 2**32)),
            int(rng.integers(17, 2**32)),
            int(rng.integers(0, 2**32)),
        )
        for _ in range(n)
    ]


def test_index_object_round_trip() -> None:
    rng = np.random.default_rng(7)
    packs = [(rng.bytes(32), _random_records(n, rng)) for n in (0, 1, 17, 300)]
    supersedes = [rng.bytes(32) for _ in range(3)]
    decoded, sup = decode_index(encode_index(packs, supersedes), "index")
    assert sup == supersedes
    assert [(pid, records_from_array(arr)) for pid, arr in decoded] == packs


def test_empty_index_object_round_trip() -> None:
    assert decode_index(encode_index([]), "index") == ([], [])


def test_index_object_layout_matches_the_format_document() -> None:
    rng = np.random.default_rng(8)
    packs = [(rng.bytes(32), _random_records(2, rng)), (rng.bytes(32), _random_records(1, rng))]
    sup = [rng.bytes(32)]
    plain = zstandard.ZstdDecompressor().decompress(encode_index(packs, sup))
    expect = b"DRI\x01" + struct.pack("<II", 2, 1) + sup[0]
    for pid, records in packs:
        expect += pid + struct.pack("<I", len(records))
        for r in records:
            expect += struct.pack("<B32sIII", r.type, r.id, r.offset, r.length, r.raw_length)
    assert plain == expect


def _compressed(plain: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(plain)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"not zstd at all", id="not-zstd"),
        pytest.param(_compressed(b""), id="empty-plaintext"),
        pytest.param(_compressed(b"DRX\x01" + bytes(8)), id="bad-magic"),
        pytest.param(_compressed(b"DRI\x01" + bytes(8) + b"x"), id="trailing-byte"),
        pytest.param(_compressed(b"DRI\x01" + bytes(4)), id="short-header"),
        pytest.param(_compressed(b"DRI\x01" + struct.pack("<II", 1, 0)), id="missing-pack"),
        pytest.param(
            _compressed(b"DRI\x01" + struct.pack("<II", 1, 0) + bytes(32) + struct.pack("<I", 2)),
            id="missing-records",
        ),
        pytest.param(
            _compressed(b"DRI\x01" + struct.pack("<II", 0, 2) + bytes(32)),
            id="missing-superseded",
        ),
    ],
)
def test_malformed_index_object_is_integrity_error(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        decode_index(data, "index")


# ---- the in-memory Index ----------------------------------------------------------------------


def _record_array(ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    arr = np.zeros(len(ids), dtype=RECORD_DTYPE)
    arr["id"] = ids
    arr["type"] = rng.integers(0, 2, len(ids))
    arr["offset"] = rng.integers(36, 2**32, len(ids), dtype=np.uint64)
    arr["length"] = rng.integers(17, 2**32, len(ids), dtype=np.uint64)
    arr["raw"] = rng.integers(0, 2**32, len(ids), dtype=np.uint64)
    return arr


def _ids_with_shared_prefixes(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct random IDs. A tenth of them come in groups of five that share their
    first 8 bytes, spread a fifth of the array apart (so over different packs and different
    ways of adding); a few pairs differ only in their last byte."""
    raw = np.frombuffer(rng.bytes(32 * n), dtype=np.uint8).reshape(n, 32).copy()
    stride = n // 5
    leaders = np.arange(0, stride, 10)
    for k in range(1, 5):
        raw[leaders + k * stride, :8] = raw[leaders, :8]
    for i in range(1, n - 1, n // 50):
        raw[i + 1, :31] = raw[i, :31]
        raw[i + 1, 31] = raw[i, 31] ^ 0x80
    ids = raw.view("V32").reshape(n)
    assert len(np.unique(ids)) == n
    prefixes = raw[:, :8].copy().view(">u8").reshape(n)
    assert n - len(np.unique(prefixes)) >= n // 13  # the shared prefixes are really there
    return ids


class _Expected:
    """Which pack each ID was added with, to check every look-up against."""

    def __init__(self) -> None:
        self.packs: list[tuple[bytes, np.ndarray]] = []

    def add(self, pack_id: bytes, arr: np.ndarray) -> None:
        self.packs.append((pack_id, arr))

    def check(self, index: Index) -> None:
        n = 0
        for pack_id, arr in self.packs:
            for bid, t, off, ln, raw in zip(
                arr["id"].tolist(),
                arr["type"].tolist(),
                arr["offset"].tolist(),
                arr["length"].tolist(),
                arr["raw"].tolist(),
                strict=True,
            ):
                got = index.lookup(bytes(bid))
                assert got == IndexEntry(pack_id, BlobType(t), off, ln, raw), bytes(bid).hex()
                n += 1
        assert len(index) == n
        assert index.pack_ids() == {p for p, a in self.packs if len(a)}


def _unknown_ids_are_absent(index: Index, known: np.ndarray, rng: np.random.Generator) -> None:
    raw = np.frombuffer(known.tobytes(), dtype=np.uint8).reshape(len(known), 32)
    probes = [rng.bytes(32) for _ in range(2000)]
    # same first 8 bytes as a known ID (also as a shared-prefix one), different rest
    probes += [bytes(raw[i, :8]) + rng.bytes(24) for i in range(0, len(known), 997)]
    probes += [bytes(raw[i, :8]) + rng.bytes(24) for i in range(0, 2000, 10)]
    # a known ID with its last byte changed
    probes += [bytes(raw[i, :31]) + bytes([raw[i, 31] ^ 1]) for i in range(0, len(known), 4999)]
    known_set = set(known.tolist())
    for p in probes:
        assert p not in known_set
        assert index.lookup(p) is None
        assert p not in index
    assert index.lookup(b"") is None
    assert "not bytes" not in index


def _split(ids: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.array_split(ids, parts)


def test_index_lookups_staged_arrays() -> None:
    rng = np.random.default_rng(1)
    ids = _ids_with_shared_prefixes(rng, N_IDS)
    index, expected = Index(), _Expected()
    for chunk in _split(ids, 20):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        index.stage_pack_array(pack_id, arr)
        expected.add(pack_id, arr)
    index.build()
    expected.check(index)
    _unknown_ids_are_absent(index, ids, rng)


def test_index_lookups_add_pack_overlay() -> None:
    rng = np.random.default_rng(2)
    ids = _ids_with_shared_prefixes(rng, N_IDS)
    index, expected = Index(), _Expected()
    # packs of ~2500: the overlay fills up and is merged several times on the way
    for chunk in _split(ids, 80):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        index.add_pack(pack_id, records_from_array(arr))
        expected.add(pack_id, arr)
    expected.check(index)
    _unknown_ids_are_absent(index, ids, rng)


def test_index_lookups_overlay_only() -> None:
    rng = np.random.default_rng(3)
    ids = _ids_with_shared_prefixes(rng, 30_000)  # below the merge threshold
    index, expected = Index(), _Expected()
    for chunk in _split(ids, 7):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        index.add_pack(pack_id, records_from_array(arr))
        expected.add(pack_id, arr)
    expected.check(index)
    _unknown_ids_are_absent(index, ids, rng)


def test_index_lookups_mixed() -> None:
    rng = np.random.default_rng(4)
    ids = _ids_with_shared_prefixes(rng, N_IDS)
    parts = _split(ids, 40)  # shared-prefix groups straddle staged and overlaid packs
    index, expected = Index(), _Expected()
    for i, chunk in enumerate(parts):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        expected.add(pack_id, arr)
        if i % 3 == 0:
            index.add_pack(pack_id, records_from_array(arr))
        else:
            index.stage_pack_array(pack_id, arr)
            if i % 5 == 0:
                index.build()
    index.build()
    expected.check(index)
    _unknown_ids_are_absent(index, ids, rng)
    # entries() lists every blob once, with the same answer as lookup
    entries = dict(index.entries())
    assert len(entries) == N_IDS
    for bid in ids[:: N_IDS // 500].tolist():
        assert entries[bytes(bid)] == index.lookup(bytes(bid))


def test_index_blob_in_two_packs_resolves_to_either() -> None:
    rng = np.random.default_rng(5)
    ids = _ids_with_shared_prefixes(rng, 1000)
    a, b = _record_array(ids, rng), _record_array(ids[::2], rng)
    index = Index()
    index.stage_pack_array(b"A" * 32, a)
    index.build()
    index.add_pack(b"B" * 32, records_from_array(b))
    for row in a.tolist():
        entry = index.lookup(bytes(row[1]))
        assert entry is not None and entry.pack_id in (b"A" * 32, b"B" * 32)
    index.build()
    for row in b.tolist():
        entry = index.lookup(bytes(row[1]))
        assert entry is not None and entry.pack_id in (b"A" * 32, b"B" * 32)


def test_records_bytes_round_trip() -> None:
    rng = np.random.default_rng(6)
    records = _random_records(50, rng)
    raw = records_to_bytes(records)
    assert len(raw) == 45 * 50
    assert records_from_array(np.frombuffer(raw, dtype=RECORD_DTYPE)) == records


def test_index_runs_merge_and_stay_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """Many small additions become runs, merged like a binary counter: every blob stays
    findable, the number of runs stays logarithmic, and missing packs and ``skip`` still
    reach a second copy in another run."""
    monkeypatch.setattr(index_module, "_RUN_AT", 64)
    rng = np.random.default_rng(7)
    ids = _ids_with_shared_prefixes(rng, 20_000)
    base = _record_array(ids[:5000], rng)
    index, expected = Index(), _Expected()
    index.stage_pack_array(b"L" * 32, base)
    index.build()
    expected.add(b"L" * 32, base)
    for chunk in _split(ids[5000:], 300):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        index.add_pack(pack_id, records_from_array(arr))
        expected.add(pack_id, arr)
        assert len(index._runs) <= 2 + len(index).bit_length()
    expected.check(index)
    _unknown_ids_are_absent(index, ids, rng)
    # a second copy of some loaded blobs, in a later run: found when the first is skipped
    again = _record_array(ids[:100], rng)
    index.add_pack(b"C" * 32, records_from_array(again))
    for _ in range(64):  # push the copies out of the overlay into a run
        index.add_pack(
            rng.bytes(32),
            records_from_array(_record_array(np.frombuffer(rng.bytes(32), dtype="V32"), rng)),
        )
    for bid in again["id"][:50].tolist():
        assert index.lookup(bytes(bid), skip=frozenset({b"L" * 32})).pack_id == b"C" * 32
    assert index.mark_missing(b"L" * 32)
    for bid in again["id"].tolist():
        assert index.lookup(bytes(bid)).pack_id == b"C" * 32
        assert index.packs_of([bytes(bid)]) == [b"C" * 32]
    lost = bytes(ids[200])
    assert index.lookup(lost) is None and index.packs_of([lost]) is None
    assert index.missing_pack_of(lost) == b"L" * 32


def test_index_lookups_never_miss_while_runs_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader thread checks blobs added earlier while a writer adds more (runs being
    made and merged): no look-up of a present blob ever fails in between."""
    monkeypatch.setattr(index_module, "_RUN_AT", 256)
    rng = np.random.default_rng(8)
    ids = [rng.bytes(32) for _ in range(60_000)]
    index = Index()
    added = [0]
    failures: list[bytes] = []
    stop = threading.Event()

    def reader() -> None:
        local = np.random.default_rng(9)
        while not stop.is_set():
            n = added[0]
            if n:
                bid = ids[int(local.integers(0, n))]
                if index.lookup(bid) is None:
                    failures.append(bid)

    t = threading.Thread(target=reader)
    t.start()
    try:
        for start in range(0, len(ids), 100):
            part = ids[start : start + 100]
            recs = [BlobRecord(BlobType.DATA, b, 36 + i * 10, 10, 10) for i, b in enumerate(part)]
            index.add_pack(rng.bytes(32), recs)
            added[0] = start + len(part)
    finally:
        stop.set()
        t.join()
    assert not failures
    assert all(index.lookup(b) is not None for b in ids)


def test_lookup_many_answers_as_lookup_does() -> None:
    """Runs, the overlay, shared 8-byte prefixes, a blob in two packs, a missing pack and
    unknown IDs: ``lookup_many`` gives exactly the entries ``lookup`` gives, in order."""
    rng = np.random.default_rng(6)
    ids = _ids_with_shared_prefixes(rng, 60_000)
    index = Index()
    packs = []
    for i, chunk in enumerate(_split(ids, 24)):
        pack_id, arr = rng.bytes(32), _record_array(chunk, rng)
        packs.append(pack_id)
        if i % 4 == 0:
            index.add_pack(pack_id, records_from_array(arr))  # stays in the overlay
        else:
            index.stage_pack_array(pack_id, arr)
            if i % 5 == 0:
                index.build()
    index.build()
    again = _record_array(ids[:500], rng)  # also stored in a second pack
    index.stage_pack_array(rng.bytes(32), again)
    index.build()
    probes = [bytes(b) for b in ids[::7].tolist()] + [rng.bytes(32) for _ in range(300)]
    probes += [bytes(b) for b in ids[:500:3].tolist()]
    rng.shuffle(probes)

    def same() -> None:
        many = index.lookup_many(probes)
        assert many == [index.lookup(b) for b in probes]

    same()
    assert index.mark_missing(packs[3])  # its blobs: another copy, or none
    same()
    assert index.lookup_many(probes[:10]) == [index.lookup(b) for b in probes[:10]]
