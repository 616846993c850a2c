"""Fuzzing every object parser (hypothesis): only typed errors come out, nothing is unbounded.

Each test runs a fixed number of deterministic examples (``derandomize=True``, no example
database), so a run is reproducible and its length is known. Two kinds of input:

- structured: JSON documents (tree nodes, snapshots, key files, config, settings, locks)
  whose fields take random types and values (huge and negative ints, floats, NaN, nested
  lists, strings that are not base64 or hex, names with ``/`` and NUL, duplicate names), and
  binary objects (index plaintexts, pack trailers, zstd frames) with crafted counts, offsets
  and declared sizes;
- mutation: flipped, overwritten, inserted, deleted and truncated bytes of the real objects
  of a small repository.

Whatever sits behind authentication is also sealed properly with the repository's keys, so
the garbage reaches the parser ("validly encrypted garbage").

Repository-level entry points may raise ``DrengineError`` subclasses only; the pure parsers
what their docstrings document (``decode_tree`` and ``Snapshot.from_bytes``: ``ValueError``).
Every example runs under a deadline (a hang fails it) and must finish quickly; the inputs
that declare huge sizes are also measured with tracemalloc.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import struct
import time
import tracemalloc
import unittest.mock
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import cache, partial
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import zstandard
from argon2.low_level import hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from drengine.core.errors import DrengineError, IntegrityError
from drengine.core.model import NODE_TYPES, Node, Snapshot, encode_tree
from drengine.core.tree_decode import decode_tree  # what reads use; falls back to model
from drengine.crypto import keys as keys_module
from drengine.crypto.aead import DOMAIN_TRAILER, ObjectCipher, seal, unseal
from drengine.crypto.keys import KdfParams, key_file_meta, open_key_file
from drengine.engine.backup import BackupOptions, run_backup
from drengine.repository import blobcodec, layout
from drengine.repository import config as config_module
from drengine.repository import index_format as index_module
from drengine.repository import locks as locks_module
from drengine.repository import pack as pack_module
from drengine.repository import repo as repo_module
from drengine.repository.config import Settings, open_settings, read_header
from drengine.repository.index_format import INDEX_MAGIC, RECORD_DTYPE, decode_index, encode_index
from drengine.repository.layout import BlobType
from drengine.repository.listing import list_objects, list_packs
from drengine.repository.locks import Locks
from drengine.repository.pack import (
    HEADER_SIZE,
    PACK_MAGIC,
    PackWriter,
    parse_trailer,
)
from drengine.repository.repo import Repository
from drengine.sources.files import FileSource
from drengine.storage.memory import MemoryBackend

# One place for the budget: examples per test, by how much work one example is.
PURE = 300  # pure parsers: a fraction of a millisecond each, most of it generating input
REPO = 150  # repository-level: a few storage round trips (in memory) each
OPEN = 120  # Repository.open: Argon2 (cheap parameters) per key file tried

EXAMPLE_SECONDS = 1.0  # every example must finish within this
HANG_SECONDS = 10.0  # an example still running after this is a hang: interrupted, fails


def fuzz(examples: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.function_scoped_fixture,  # fast_argon2: a patch, the same for every example
        ],
    )


class Hang(Exception):
    """An example ran past ``HANG_SECONDS``: not a typed error, so it fails the test."""


@contextmanager
def bounded(what: str = "example") -> Iterator[None]:
    """Fail on a hang (SIGALRM interrupts Python-level loops) and on a slow example. Slow
    is measured in CPU time, so a machine busy with other work does not fail the test."""

    def alarm(signum: int, frame: object) -> None:
        raise Hang(f"{what} ran for more than {HANG_SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    start = time.process_time()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    elapsed = time.process_time() - start
    assert elapsed < EXAMPLE_SECONDS, f"{what} took {elapsed:.2f} s"


def only(
    allowed: type[BaseException] | tuple[type[BaseException], ...], fn: Callable[[], Any]
) -> Any:
    """``fn()``, or None if it raised one of ``allowed``; anything else propagates (a bug).
    The outcome is a hypothesis event (``--hypothesis-show-statistics`` shows how much got
    past each check)."""
    with bounded():
        try:
            result = fn()
        except allowed as e:
            event(f"refused: {type(e).__name__}")
            return None
    event("accepted")
    return result


# ---- strategies: JSON values ----------------------------------------------------------------

EDGE_INTS = [
    -(2**64),
    -(2**63) - 1,
    -(2**63),
    -(2**31),
    -1,
    0,
    1,
    0o7777,
    0o7777 + 1,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**40,
    2**53 + 1,
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    2**100,
    10**4000,  # the longest a JSON reader accepts (int max str digits 4300)
]
ints = st.one_of(st.integers(-5, 5000), st.integers(), st.sampled_from(EDGE_INTS))
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([float("inf"), float("-inf"), float("nan"), 1e308, -0.0, 0.5, 420.0]),
)
ODD_TEXT = [
    "",
    "not base64!",
    "QQ",  # unpadded
    "QR==",  # non-canonical padding bits
    "QQ==QQ==",
    "====",
    "\x00",
    "é",
    "\udc80",  # a lone surrogate (surrogate escape of a non-UTF-8 byte)
    "\ud800",
    "../../etc",
    "/abs",
    "a/b",
    "0" * 63,
    "0" * 65,
    "zz" * 32,
    "AB" * 32,
    "é" * 64,
    "2026-11-26T21:50:05.123456+00:00",
    "2026-11-26T21:50:05",
    "9999-12-31T23:59:59.999999-23:59",
    "0001-01-01T00:00:00+14:00",
    "123",
    "1e400",
    "NaN",
]
texts = st.one_of(st.text(max_size=12), st.sampled_from(ODD_TEXT))
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(texts, inner, max_size=4)),
    max_leaves=10,
)

DEEP = "\x00deep\x00"  # a string value replaced by deeply nested JSON after serializing


def dumps(doc: object, depth: int = 0, ascii: bool = True) -> bytes:
    """JSON as a hostile writer might emit it: NaN/Infinity allowed, non-ASCII escaped (lone
    surrogates reach the parser as such) or raw, and every ``DEEP`` value replaced by
    ``depth`` nested arrays (past the parser's recursion limit)."""
    text = json.dumps(doc, allow_nan=True, ensure_ascii=ascii)
    if depth:
        text = text.replace(json.dumps(DEEP, ensure_ascii=ascii), "[" * depth + "]" * depth)
    return text.encode("utf-8", "surrogatepass")


depths = st.sampled_from([0, 0, 0, 3, 900, 5000, 100_000])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


names = st.one_of(
    st.binary(min_size=1, max_size=12),
    st.sampled_from([b"/", b"a/b", b"\x00", b"a\x00b", b".", b"..", b"", b"\xff\xfe", b"x" * 300]),
)
ids = st.binary(min_size=32, max_size=32)


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to four byte-level edits."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "append", "dup"]))
        pos = draw(st.integers(0, max(len(buf) - 1, 0)))
        if op == "flip" and buf:
            buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and buf:
            buf[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete":
            del buf[pos : pos + draw(st.integers(1, 16))]
        elif op == "truncate":
            del buf[pos:]
        elif op == "append":
            buf += draw(st.binary(min_size=1, max_size=16))
        elif op == "dup" and buf:
            buf[pos:pos] = buf[pos : pos + draw(st.integers(1, 64))]
    return bytes(buf)


@st.composite
def mutated_doc(draw: st.DrawFn, doc: dict[str, Any], special: dict[str, Any]) -> dict[str, Any]:
    """``doc`` with some fields dropped, replaced by random JSON or by a field's odd values
    (``special``: key -> strategy), and perhaps unknown fields added."""
    out = dict(doc)
    keys = sorted(set(doc) | set(special))
    for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)):
        how = draw(st.sampled_from(["drop", "junk", "special", "special"]))
        if how == "drop":
            out.pop(key, None)
        elif how == "junk" or key not in special:
            out[key] = draw(json_values)
        else:
            out[key] = draw(special[key])
    if draw(st.integers(0, 9)) == 0:
        out[draw(texts)] = draw(json_values)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(keys))] = DEEP
    return out


def structured(doc: dict[str, Any], special: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Documents derived from ``doc``; now and then not an object at all."""
    return st.one_of(
        st.tuples(mutated_doc(doc, special), depths, st.booleans()).map(lambda d: dumps(*d)),
        st.tuples(json_values, depths, st.booleans()).map(lambda d: dumps(*d)),
    )


# ---- strategies: zstd frames ----------------------------------------------------------------

_ZSTD_MAGIC = 0xFD2FB528
_BLOCK_MAX = 128 << 10


def frame(
    blocks: list[tuple[str, bytes, int]], declared: int | None, window_log: int | None = 17
) -> bytes:
    """A zstd frame (RFC 8878 §3.1.1) built by hand, for header values no compressor writes:
    any declared content size (8-byte field, or none), any window, raw and RLE blocks.
    ``blocks`` are ("raw", content, 0) or ("rle", byte, count)."""
    single = 0x20 if window_log is None else 0
    descriptor = (3 << 6 if declared is not None else 0) | single
    out = struct.pack("<IB", _ZSTD_MAGIC, descriptor)
    if window_log is not None:
        out += bytes(((window_log - 10) << 3,))
    if declared is not None:
        out += struct.pack("<Q", declared)
    for i, (kind, body, count) in enumerate(blocks):
        last = int(i == len(blocks) - 1)
        if kind == "raw":
            out += (last | len(body) << 3).to_bytes(3, "little") + body
        else:
            out += (last | 1 << 1 | count << 3).to_bytes(3, "little") + body[:1]
    if not blocks:
        out += (1).to_bytes(3, "little")  # one empty last raw block
    return out


def raw_blocks(data: bytes) -> list[tuple[str, bytes, int]]:
    return [("raw", data[i : i + _BLOCK_MAX], 0) for i in range(0, len(data), _BLOCK_MAX)]


HUGE_SIZES = [2**30, 2**31, 2**32, 2**33 + 7, 2**40, 2**62, 2**63, 2**64 - 2, 2**64 - 1]


@st.composite
def frames_of(draw: st.DrawFn, plain: bytes) -> bytes:
    """``plain`` as one of many zstd framings, valid or not."""
    how = draw(
        st.sampled_from(
            [
                *["size"] * 4,  # valid framings often enough that the content gets parsed
                *["nosize"] * 3,
                "declared",
                "declared",
                "rle",
                "window",
                "truncated",
                "skippable",
                "two",
                "junk-after",
                "not-zstd",
            ]
        )
    )
    if how == "size":
        return bytes(zstandard.ZstdCompressor(write_content_size=True).compress(plain))
    if how == "nosize":
        return bytes(zstandard.ZstdCompressor(write_content_size=False).compress(plain))
    if how == "declared":
        declared = draw(
            st.one_of(
                st.sampled_from([0, 1, len(plain), len(plain) + 1, max(len(plain) - 1, 0)]),
                st.sampled_from(HUGE_SIZES),
                st.integers(0, 2**64 - 1),
            )
        )
        single = draw(st.booleans())
        return frame(raw_blocks(plain), declared, None if single else 17)
    if how == "rle":  # little input, much output: up to 32 blocks of 128 KiB
        n = draw(st.integers(1, 32))
        claim = draw(st.sampled_from([None, n * _BLOCK_MAX, n * _BLOCK_MAX - 1, 2**40]))
        return frame([("rle", b"\x00", _BLOCK_MAX)] * n, claim)
    if how == "window":  # a window larger than the decoder allows
        return frame(raw_blocks(plain), None, draw(st.integers(10, 41)))
    if how == "truncated":
        whole = zstandard.ZstdCompressor().compress(plain)
        return bytes(whole[: draw(st.integers(0, max(len(whole) - 1, 0)))])
    if how == "skippable":
        skip = struct.pack("<II", 0x184D2A50 + draw(st.integers(0, 15)), 4) + b"abcd"
        return skip + zstandard.ZstdCompressor().compress(plain)
    if how == "two":
        c = zstandard.ZstdCompressor()
        return bytes(c.compress(plain) + c.compress(plain))
    if how == "junk-after":
        return bytes(zstandard.ZstdCompressor().compress(plain)) + draw(st.binary(max_size=16))
    return plain


# ---- checks on what a parser accepted --------------------------------------------------------

_U32 = 2**32 - 1
_U64 = 2**64 - 1
_I64 = (-(2**63), 2**63 - 1)
# The ranges of §7 (and of what a file system can hold): required, lo, hi.
NODE_INTS = {
    "mode": (True, 0, 0o7777),
    "uid": (True, 0, _U32),
    "gid": (True, 0, _U32),
    "mtime_ns": (True, *_I64),
    "ctime_ns": (False, *_I64),
    "size": (False, 0, _I64[1]),
    "inode": (False, 0, _U64),
    "device": (False, 0, _U64),
    "links": (False, 0, _U64),
    "rdev": (False, 0, _U64),
}


def _int_ok(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def check_node(n: Node, source: object = None) -> None:
    """A node as read is fully typed and in range; a source field out of range is reported."""
    assert isinstance(n, Node)
    assert isinstance(n.name, bytes) and n.type in NODE_TYPES
    for key, (_, lo, hi) in NODE_INTS.items():
        assert _int_ok(getattr(n, key), lo, hi), (key, getattr(n, key))
    for key in ("user", "group", "damaged", "invalid"):
        assert isinstance(getattr(n, key), str)
    assert n.target is None or isinstance(n.target, bytes)
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in n.xattrs)
    assert all(isinstance(c, bytes) and len(c) == 32 for c in n.content)
    for h in (n.content_hash, n.subtree):
        assert h is None or (isinstance(h, bytes) and len(h) == 32)
    assert n.sparse in (True, False)
    encode_tree([n])  # whatever was read can be written back (repair snapshots does)
    if isinstance(source, dict):
        for key, (required, lo, hi) in NODE_INTS.items():
            if (key in source and not _int_ok(source[key], lo, hi)) or (
                required and key not in source
            ):
                assert n.invalid, f"{key}={source.get(key)!r} was not reported"


def check_snapshot(s: Snapshot) -> None:
    for key in ("time", "host", "username", "program_version", "kind", "id"):
        assert isinstance(getattr(s, key), str)
    assert isinstance(s.source, dict) and all(isinstance(p["kind"], str) for p in s.parts)
    assert all(isinstance(p, str) for p in s.paths) and all(isinstance(t, str) for t in s.tags)
    assert isinstance(s.tree, bytes) and len(s.tree) == 32
    assert s.parent is None or isinstance(s.parent, str)
    assert s.original is None or isinstance(s.original, str)
    assert isinstance(s.summary, dict)
    assert s.sort_time().tzinfo is not None


# ---- the inputs that found bugs, run first as explicit examples ------------------------------

NESTED = b"[" * 100_000  # RecursionError out of json.loads, through every JSON parser
NESTED_OBJECT = b'{"a":' * 100_000
_U32_MAX = struct.pack("<I", 2**32 - 1)
# 2**32-1 superseded IDs claimed in 12 bytes: decode_index looped building empty slices.
INDEX_HUGE_SUPERSEDED = INDEX_MAGIC + struct.pack("<I", 0) + _U32_MAX
# One pack, one record of blob type 2: ``BlobType(2)`` raised ValueError at look-up.
INDEX_TYPE_2 = (
    INDEX_MAGIC
    + struct.pack("<II", 1, 0)
    + bytes(32)
    + struct.pack("<I", 1)
    + struct.pack("<B32sIII", 2, bytes(32), 36, 20, 4)
)


def trailer_pack(key: bytes, records: list[tuple[int, bytes, int, int, int]], body: bytes) -> bytes:
    """A well-formed pack whose trailer (sealed under ``key``) lists ``records``."""
    plain = struct.pack("<I", len(records)) + b"".join(struct.pack("<B32sIII", *r) for r in records)
    salt = bytes(32)
    ct = ObjectCipher(key, salt).encrypt(DOMAIN_TRAILER, 0, plain, pack_module._TRAILER_AAD)
    return PACK_MAGIC + salt + body + ct + struct.pack("<I", len(ct))


# ---- tree nodes -------------------------------------------------------------------------------

hex_ids = ids.map(bytes.hex)
odd_hex = st.one_of(hex_ids, texts, json_values)


@st.composite
def valid_nodes(draw: st.DrawFn) -> Node:
    """A node as a backup writes it: it must read back equal and without complaint."""
    kind = draw(st.sampled_from(NODE_TYPES))
    u32 = st.integers(0, _U32)
    u64 = st.integers(0, _U64)
    i64 = st.integers(*_I64)
    node = Node(
        name=draw(st.binary(min_size=1, max_size=16)),
        type=kind,
        mode=draw(st.integers(0, 0o7777)),
        uid=draw(u32),
        gid=draw(u32),
        user=draw(st.text(max_size=8)),
        group=draw(st.text(max_size=8)),
        mtime_ns=draw(i64),
        ctime_ns=draw(i64),
        inode=draw(u64),
        device=draw(u64),
        links=draw(u64),
        xattrs=draw(st.lists(st.tuples(st.binary(max_size=8), st.binary(max_size=8)), max_size=2)),
    )
    if kind == "file":
        node.size = draw(st.integers(0, _I64[1]))
        node.content = draw(st.lists(ids, max_size=3))
        node.content_hash = draw(ids)
        node.sparse = draw(st.booleans())
    elif kind == "dir":
        node.subtree = draw(ids)
    elif kind == "symlink":
        node.target = draw(st.binary(max_size=16))
    elif kind in ("chardev", "blockdev"):
        node.rdev = draw(u64)
    return node


node_special: dict[str, Any] = {
    "name": st.one_of(names.map(b64), texts, ints),
    "type": st.one_of(st.sampled_from(NODE_TYPES), texts, json_values),
    **{key: st.one_of(ints, floats, st.booleans(), texts) for key in NODE_INTS},
    "user": st.one_of(texts, ints),
    "content": st.one_of(
        st.lists(st.one_of(hex_ids, odd_hex), max_size=4), texts, st.lists(st.lists(ints))
    ),
    "content_hash": odd_hex,
    "subtree": odd_hex,
    "target": st.one_of(names.map(b64), texts, ints),
    "sparse": json_values,
    "xattrs": st.one_of(
        st.lists(st.lists(st.one_of(names.map(b64), texts, ints), max_size=3), max_size=3),
        json_values,
    ),
    "damaged": json_values,
}


@st.composite
def node_docs(draw: st.DrawFn) -> tuple[object, Node | None]:
    """(a node's JSON, the node it must read as if it is a valid one, else None)."""
    node = draw(valid_nodes())
    if draw(st.integers(0, 3)) == 0:
        return node.to_dict(), node
    if draw(st.integers(0, 15)) == 0:
        return draw(json_values), None
    return draw(mutated_doc(node.to_dict(), node_special)), None


@st.composite
def tree_docs(draw: st.DrawFn) -> tuple[bytes, list[tuple[object, Node | None]]]:
    """(tree JSON, its nodes' sources); duplicate names now and then, odd top levels."""
    nodes = draw(st.lists(node_docs(), max_size=5))
    duplicate = draw(st.booleans())
    if nodes and duplicate:
        nodes.append(nodes[draw(st.integers(0, len(nodes) - 1))])  # a duplicate name
    doc: object = {"nodes": [d for d, _ in nodes]}
    shape = draw(st.integers(0, 11))
    if shape == 0:
        doc = [d for d, _ in nodes]
    elif shape == 1:
        doc = {"nodes": draw(json_values)}
        nodes = []
    elif shape == 2 and isinstance(doc, dict):
        doc["extra"] = draw(json_values)
    return dumps(doc, draw(depths), draw(st.booleans())), nodes


@fuzz(PURE)
@given(tree_docs())
@example((NESTED, []))
def test_decode_tree_structured(case: tuple[bytes, list[tuple[object, Node | None]]]) -> None:
    data, sources = case
    nodes = only(ValueError, lambda: decode_tree(data))
    if nodes is None:
        return
    assert isinstance(nodes, list)
    for n in nodes:
        check_node(n)
    if len(nodes) == len(sources):
        for n, (source, valid) in zip(nodes, sources, strict=True):
            check_node(n, source)
            if valid is not None:
                assert n == valid and n.invalid == "", n.invalid


@fuzz(PURE)
@given(st.lists(valid_nodes(), max_size=4).map(encode_tree).flatmap(mutated))
def test_decode_tree_mutated(data: bytes) -> None:
    for n in only(ValueError, lambda: decode_tree(data)) or []:
        check_node(n)


# ---- snapshots --------------------------------------------------------------------------------

_REAL_SNAPSHOT = json.loads(
    Snapshot(
        time="2026-11-26T21:50:05.123456+00:00",
        host="h",
        username="u",
        paths=["/srv/data", "/caf\udcc3"],
        tags=["a", "b"],
        tree=bytes(range(32)),
        program_version="0.1.0",
        parent="ab" * 32,
        original="cd" * 32,
        summary={"files_total": 1, "errors": [{"path": "/x", "error": "gone"}]},
    ).to_bytes()
)
snapshot_special: dict[str, Any] = {
    "time": texts,
    "tree": odd_hex,
    "paths": st.one_of(st.lists(texts), st.lists(json_values), texts),
    "tags": st.one_of(st.lists(texts), json_values),
    "source": st.one_of(st.fixed_dictionaries({"kind": json_values}), json_values),
    "parent": odd_hex,
    "summary": json_values,
    "version": ints,
}
snapshot_plaintexts = st.one_of(
    structured(_REAL_SNAPSHOT, snapshot_special),
    st.just(dumps(_REAL_SNAPSHOT)).flatmap(mutated),
    st.binary(max_size=64),
)


@fuzz(PURE)
@given(snapshot_plaintexts)
@example(NESTED_OBJECT)
def test_snapshot_from_bytes(data: bytes) -> None:
    snap = only(ValueError, lambda: Snapshot.from_bytes(data, "id"))
    if snap is not None:
        check_snapshot(snap)


# ---- index objects ----------------------------------------------------------------------------

u32s = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 35, 36, 37, 2**31, 2**32 - 1]))
blob_types = st.sampled_from([0, 1] * 8 + [2, 255])  # mostly valid: one bad type refuses all
records = st.tuples(blob_types, ids, u32s, u32s, u32s).map(lambda r: struct.pack("<B32sIII", *r))


@st.composite
def index_plaintexts(draw: st.DrawFn) -> bytes:
    """An index object's plaintext with counts that may lie, cut short or with extra bytes."""
    magic = draw(st.sampled_from([INDEX_MAGIC] * 12 + [b"DRI\x02", b"DRI", b""]))
    supersedes = draw(st.lists(ids, max_size=3))
    packs = draw(st.lists(st.tuples(ids, st.lists(records, max_size=4)), max_size=3))

    def count(real: int) -> int:
        return draw(st.sampled_from([real] * 12 + [real + 1, real - 1 if real else 1, 2**32 - 1]))

    out = magic + struct.pack("<II", count(len(packs)), count(len(supersedes)))
    out += b"".join(supersedes)
    for pack_id, recs in packs:
        out += pack_id + struct.pack("<I", count(len(recs))) + b"".join(recs)
    cut = draw(st.integers(0, 5))
    if cut == 0:
        out = out[: draw(st.integers(0, len(out)))]
    elif cut == 1:
        out += draw(st.binary(min_size=1, max_size=50))
    return out


index_objects = st.one_of(
    index_plaintexts().flatmap(frames_of),
    st.binary(max_size=64).flatmap(frames_of),
    st.binary(max_size=64),
)


def check_index(result: tuple[list[tuple[bytes, np.ndarray]], list[bytes]]) -> None:
    packs, supersedes = result
    assert all(isinstance(s, bytes) and len(s) == 32 for s in supersedes)
    for pack_id, arr in packs:
        assert isinstance(pack_id, bytes) and len(pack_id) == 32
        assert arr.dtype == RECORD_DTYPE
        assert set(arr["type"].tolist()) <= {int(t) for t in BlobType}, "unknown blob type"


@fuzz(PURE)
@given(index_objects)
@example(zstandard.compress(INDEX_HUGE_SUPERSEDED))
@example(zstandard.compress(INDEX_TYPE_2))
def test_decode_index(data: bytes) -> None:
    result = only(IntegrityError, lambda: decode_index(data, "index"))
    if result is not None:
        check_index(result)


# ---- blob payloads ----------------------------------------------------------------------------

_LIMITS = [blobcodec.MAX_DATA_BLOB, blobcodec.MAX_TREE_BLOB]
raw_lengths = st.sampled_from(
    [0, 1, 63, 64, -1, 2**32 - 1, 2**40, *_LIMITS, *(n + 1 for n in _LIMITS)]
)


@st.composite
def blob_payloads(draw: st.DrawFn) -> tuple[bytes, int, bool]:
    """(payload, raw length the index claims, is a tree)."""
    plain = draw(st.one_of(st.binary(max_size=200), st.integers(0, 5000).map(lambda n: b"a" * n)))
    kind = draw(st.sampled_from([0, 1, 1, 1, 2, 255]))
    body = draw(frames_of(plain)) if kind == 1 else plain
    payload = b"" if draw(st.integers(0, 30)) == 0 else bytes((kind,)) + body
    near = [len(plain), len(plain) + 1, max(len(plain) - 1, 0), len(body)]
    raw = draw(st.one_of(st.sampled_from(near), raw_lengths))
    if body[:4] == struct.pack("<I", _ZSTD_MAGIC) and draw(st.booleans()):
        with suppress(zstandard.ZstdError):  # the index agrees with what the frame declares
            raw = max(zstandard.frame_content_size(body), 0)
    return payload, raw, draw(st.booleans())


@fuzz(PURE)
@given(blob_payloads())
def test_blobcodec_decode(case: tuple[bytes, int, bool]) -> None:
    payload, raw, is_tree = case
    out = only(IntegrityError, lambda: blobcodec.decode(payload, raw, "blob", is_tree))
    if out is not None:
        assert isinstance(out, bytes) and len(out) == raw


# ---- pack trailers ----------------------------------------------------------------------------

KEY = bytes(range(32))


@st.composite
def crafted_packs(draw: st.DrawFn, key: bytes = KEY) -> bytes:
    """A pack whose trailer authenticates under ``key`` and says anything: types, counts,
    offsets and lengths at will, a trailer length that may lie, a header that may be off."""
    salt = draw(ids)
    body = draw(st.binary(max_size=120))
    end = HEADER_SIZE + len(body)
    near = st.sampled_from([0, HEADER_SIZE - 1, HEADER_SIZE, end - 16, end, end + 1])

    @st.composite
    def record(draw: st.DrawFn) -> tuple[int, bytes, int, int, int]:
        if draw(st.integers(0, 3)):  # inside the pack, as a writer lists it
            offset = draw(st.integers(HEADER_SIZE, end))
            length = draw(st.integers(0, end - offset))
        else:
            offset = draw(st.one_of(near, u32s))
            length = draw(st.one_of(st.integers(0, 200), u32s))
        return draw(blob_types), draw(ids), offset, length, draw(u32s)

    recs = draw(st.lists(record(), max_size=4))
    count = draw(st.sampled_from([len(recs)] * 8 + [len(recs) + 1, 2**32 - 1]))
    plain = struct.pack("<I", count) + b"".join(struct.pack("<B32sIII", *r) for r in recs)
    if draw(st.integers(0, 5)) == 0:
        plain = plain[: draw(st.integers(0, len(plain)))]
    ct = ObjectCipher(key, salt).encrypt(DOMAIN_TRAILER, 0, plain, pack_module._TRAILER_AAD)
    tlen = draw(
        st.sampled_from([len(ct)] * 14 + [0, 1, 19, 20, len(ct) - 1, len(ct) + 1, 2**32 - 1])
    )
    magic = draw(st.sampled_from([PACK_MAGIC] * 16 + [b"DRP\x02", b"DRE\x01"]))
    return magic + salt + body + ct + struct.pack("<I", tlen)


def check_records(recs: list[pack_module.BlobRecord], size: int) -> None:
    for r in recs:
        assert isinstance(r.type, BlobType) and len(r.id) == 32
        assert r.offset >= HEADER_SIZE and r.offset + r.length <= size


@fuzz(PURE)
@given(st.one_of(crafted_packs(), crafted_packs().flatmap(mutated), st.binary(max_size=80)))
@example(trailer_pack(KEY, [(2, bytes(32), HEADER_SIZE, 20, 4)], bytes(20)))  # ValueError
def test_parse_trailer(pack: bytes) -> None:
    result = only(IntegrityError, lambda: parse_trailer(KEY, pack, "pack"))
    if result is not None:
        salt, recs = result
        assert len(salt) == 32
        check_records(recs, len(pack))


# ---- sealed objects, config, key files ------------------------------------------------------


@fuzz(PURE)
@given(
    st.one_of(
        st.binary(max_size=120).map(lambda b: seal(KEY, b, b"aad")),
        st.binary(min_size=30, max_size=120).map(lambda b: seal(KEY, b, b"aad")).flatmap(mutated),
        st.binary(max_size=80),
        st.binary(max_size=80).map(lambda b: b"DRE\x01" + b),
    )
)
def test_unseal(data: bytes) -> None:
    only(IntegrityError, lambda: unseal(KEY, data, b"aad", "object"))


_REPO_ID = "ab" * 32
_REAL_CONFIG = json.loads(config_module.Config(1, _REPO_ID, Settings()).to_bytes(KEY))
config_special: dict[str, Any] = {
    "format": st.one_of(st.just("drengine"), texts, json_values),
    "version": st.one_of(ints, floats, texts, st.booleans()),
    "id": st.one_of(st.just(_REPO_ID), texts, ints),
    "settings": st.one_of(texts, ints, st.binary(max_size=40).map(b64)),
}


@fuzz(PURE)
@given(
    st.one_of(
        structured(_REAL_CONFIG, config_special),
        st.just(json.dumps(_REAL_CONFIG).encode()).flatmap(mutated),
        st.binary(max_size=40),
    )
)
@example(b"[]")  # AttributeError: 'list' object has no attribute 'get'
@example(NESTED)
@example(json.dumps({**_REAL_CONFIG, "version": float("inf")}).encode())  # OverflowError
@example(json.dumps({**_REAL_CONFIG, "settings": 5}).encode())  # AttributeError
@example(json.dumps({**_REAL_CONFIG, "id": "\ud800"}).encode())  # UnicodeEncodeError, later
@example(json.dumps({**_REAL_CONFIG, "id": "../../elsewhere"}).encode())  # a cache dir outside
def test_read_header(data: bytes) -> None:
    header = only(DrengineError, lambda: read_header(data, "here"))
    if header is not None:
        version, repo_id, sealed = header
        assert type(version) is int and version == 1
        assert len(repo_id) == 64 and set(repo_id) <= set("0123456789abcdef"), repo_id
        assert isinstance(sealed, bytes)


settings_special: dict[str, Any] = {
    key: st.one_of(ints, floats, texts, st.booleans(), json_values)
    for key in Settings.__dataclass_fields__
}
settings_plaintexts = st.one_of(
    structured(Settings().to_json(), settings_special),
    structured(
        Settings(object_lock_mode="GOVERNANCE", object_lock_days=3).to_json(), settings_special
    ),
    st.binary(max_size=40),
)


def check_settings(s: Settings) -> None:
    for key, f in Settings.__dataclass_fields__.items():
        assert type(getattr(s, key)) is type(f.default), (key, getattr(s, key))


@fuzz(PURE)
@given(settings_plaintexts)
@example(b"\x80")  # UnicodeDecodeError
@example(b"x")  # JSONDecodeError
@example(json.dumps({**Settings().to_json(), "pack_size": float("inf")}).encode())  # Overflow
def test_open_settings(plain: bytes) -> None:
    sealed = seal(KEY, plain, config_module._SETTINGS_AAD + _REPO_ID.encode())
    s = only(DrengineError, lambda: open_settings(sealed, _REPO_ID, KEY))
    if s is not None:
        check_settings(s)


PASSWORD = b"fuzz password"
CHEAP = KdfParams(memory_kib=1024, iterations=1)
_REAL_MASTER = keys_module.MasterKeys(bytes(32), bytes(range(32)), 12345)


@pytest.fixture
def fast_argon2(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at the cheapest cost whatever a key file asks, after checking the key file's
    parameters were held to the documented bounds before the KDF saw them. The derived key
    changes only for parameters above the cheap ones, which no test key file opens with."""

    def derive(**kw: Any) -> bytes:
        p, m, t = kw["parallelism"], kw["memory_cost"], kw["time_cost"]
        assert 1 <= p <= 64 and 8 * p <= m <= 4 << 20 and 1 <= t <= 1000, (p, m, t)
        return hash_secret_raw(**{**kw, "time_cost": 1, "memory_cost": max(8 * p, min(m, 1024))})

    monkeypatch.setattr(keys_module, "hash_secret_raw", derive)


@cache
def real_key_doc(password: bytes) -> dict[str, Any]:
    """A key file's JSON (cheap KDF), computed once: Argon2 is most of an example's time."""
    doc = json.loads(keys_module.make_key_file(_REAL_MASTER, password, CHEAP, {"created": "x"}))
    return cast(dict[str, Any], doc)


@cache
def _wrapping_key(password: bytes, salt: bytes) -> bytes:
    return CHEAP.derive(password, salt)


def wrapped_key_file(plain: bytes, password: bytes = PASSWORD) -> bytes:
    """A key file that opens with ``password`` and holds ``plain`` (any bytes) as its keys."""
    salt, nonce = bytes(range(32)), bytes(12)
    wrap = AESGCM(_wrapping_key(password, salt))
    data = wrap.encrypt(nonce, plain, keys_module._KEYFILE_AAD)
    doc = json.loads(json.dumps(real_key_doc(password)))
    doc.update(nonce=b64(nonce), data=b64(data))
    doc["kdf"]["salt"] = b64(salt)
    return json.dumps(doc).encode()


_REAL_MASTER_DOC = json.loads(_REAL_MASTER.to_json())
master_special: dict[str, Any] = {
    "encryption": st.one_of(st.binary(max_size=40).map(b64), texts, ints),
    "chunk_id": st.one_of(st.binary(max_size=40).map(b64), texts, ints),
    "chunker_seed": st.one_of(ints, floats, texts),
}
kdf_special: dict[str, Any] = {
    "algorithm": st.one_of(st.just("argon2id"), texts),
    "memory_kib": st.one_of(ints, floats, texts, st.sampled_from([8, 16, 4 << 20, (4 << 20) + 1])),
    "iterations": st.one_of(ints, floats, texts, st.sampled_from([1, 1000, 1001])),
    "parallelism": st.one_of(ints, floats, texts, st.sampled_from([1, 64, 65])),
    "salt": st.one_of(st.binary(max_size=40).map(b64), texts),
}


@st.composite
def key_files(draw: st.DrawFn, password: bytes = PASSWORD) -> bytes:
    real = real_key_doc(password)
    how = draw(st.integers(0, 4))
    if how == 0:  # validly wrapped garbage keys
        plain = draw(
            st.one_of(structured(_REAL_MASTER_DOC, master_special), st.binary(max_size=40))
        )
        return wrapped_key_file(plain, password)
    if how == 1:
        doc = draw(mutated_doc(real, {"version": ints, "nonce": texts, "data": texts}))
        if isinstance(doc.get("kdf"), dict) and draw(st.booleans()):
            doc["kdf"] = draw(mutated_doc(doc["kdf"], kdf_special))
        return dumps(doc, draw(depths), draw(st.booleans()))
    if how == 2:
        return dumps(draw(json_values))
    return draw(mutated(json.dumps(real).encode()))


def check_master(k: keys_module.MasterKeys) -> None:
    assert isinstance(k.encryption, bytes) and len(k.encryption) == 32
    assert isinstance(k.chunk_id, bytes) and len(k.chunk_id) == 32
    assert type(k.chunker_seed) is int and 1 <= k.chunker_seed < 2**63


def _key_doc(**kdf: object) -> bytes:
    doc = json.loads(json.dumps(real_key_doc(PASSWORD)))
    doc["kdf"].update(kdf)
    return json.dumps(doc).encode()


_MASTER_B64 = {"encryption": b64(bytes(32)), "chunk_id": b64(bytes(32)), "chunker_seed": 1}


@fuzz(OPEN)
@given(key_files())
@example(_key_doc(memory_kib=float("inf")))  # OverflowError
@example(NESTED)
@example(wrapped_key_file(json.dumps({**_MASTER_B64, "chunk_id": b64(b"12345")}).encode()))
@example(wrapped_key_file(json.dumps({**_MASTER_B64, "chunk_id": 7}).encode()))
@example(wrapped_key_file(json.dumps({**_MASTER_B64, "chunker_seed": float("inf")}).encode()))
def test_open_key_file(fast_argon2: None, data: bytes) -> None:
    k = only(DrengineError, lambda: open_key_file(data, PASSWORD, "keys/x"))
    if k is not None:
        check_master(k)


@fuzz(PURE)
@given(st.one_of(key_files(), st.binary(max_size=40)))
@example(b"[]")  # AttributeError: 'list' object has no attribute 'items'
def test_key_file_meta(fast_argon2: None, data: bytes) -> None:
    """Documented as ``ValueError`` for what is not a key file (``key list`` marks it)."""
    meta = only(ValueError, lambda: key_file_meta(data))
    if meta is not None:
        assert isinstance(meta, dict)


# ---- the repository-level entry points --------------------------------------------------------


@pytest.fixture
def small_repo(
    mem_repo: Repository,
    make_tree: Callable[[Path, Any], dict[str, bytes]],
    tmp_path: Path,
) -> Repository:
    """Two snapshots of a few files (data and tree packs, index objects), index loaded."""
    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    make_tree(
        src,
        {
            "a.txt": b"hello " * 300,
            "random.bin": rng.bytes(40_000),
            "empty": b"",
            "sub": {"b": b"b" * 5000, "deeper": {"c": b"c"}},
        },
    )
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])]))
    (src / "new").write_bytes(rng.bytes(3000))
    run_backup(mem_repo, BackupOptions([FileSource([str(src)])], tags=["second"]))
    mem_repo.load_index()
    return mem_repo


def _objects(repo: Repository) -> dict[str, bytes]:
    backend = repo.backend
    assert isinstance(backend, MemoryBackend)
    return backend.raw_objects()


def _of(repo: Repository, prefix: str) -> list[tuple[str, bytes]]:
    return sorted((n, d) for n, d in _objects(repo).items() if n.startswith(prefix))


@contextmanager
def stored(repo: Repository, objects: dict[str, bytes]) -> Iterator[None]:
    """``objects`` in the repository for the duration of one example."""
    raw = _objects(repo)
    before = {n: raw.get(n) for n in objects}
    raw.update(objects)
    try:
        yield
    finally:
        for n, old in before.items():
            if old is None:
                raw.pop(n, None)
            else:
                raw[n] = old


def _named(prefix: str, data: bytes) -> dict[str, bytes]:
    return {prefix + layout.object_id(data): data}


def test_repository_open(small_repo: Repository, repo_password: bytes, fast_argon2: None) -> None:
    """A garbage or mutated config, settings or key file: ``Repository.open`` raises only
    typed errors, and whatever it opens is fully typed."""
    objects = dict(_objects(small_repo))
    (key_name, key_data), *_ = _of(small_repo, layout.KEYS)
    config_doc = json.loads(objects[layout.CONFIG])
    enc = small_repo.keys.encryption
    real_master = json.loads(small_repo.keys.to_json())
    aad = config_module._SETTINGS_AAD + small_repo.id.encode()

    def with_settings(plain: bytes) -> bytes:
        return json.dumps({**config_doc, "settings": b64(seal(enc, plain, aad))}).encode()

    configs = st.one_of(
        st.just(objects[layout.CONFIG]).flatmap(mutated),
        structured(config_doc, config_special),
        settings_plaintexts.map(with_settings),
    )
    master_docs = structured(real_master, master_special)
    keys = st.one_of(
        st.just(key_data).flatmap(mutated),
        key_files(repo_password),
        st.one_of(master_docs, st.binary(max_size=40)).map(
            lambda p: wrapped_key_file(p, repo_password)
        ),
    )

    @fuzz(OPEN)
    @given(
        st.one_of(
            configs.map(lambda c: (c, None)),
            keys.map(lambda k: (None, k)),
            st.tuples(configs, keys),
        ),
        st.booleans(),
    )
    def one(case: tuple[bytes | None, bytes | None], keep_real_key: bool) -> None:
        config, key = case
        backend = MemoryBackend()
        raw = backend.raw_objects()
        raw.update(objects)
        if config is not None:
            raw[layout.CONFIG] = config
        if key is not None:
            if not keep_real_key:
                del raw[key_name]
            raw.update(_named(layout.KEYS, key))
        repo = only(DrengineError, lambda: Repository.open(backend, repo_password))
        if repo is not None:
            check_master(repo.keys)
            check_settings(repo.settings)
            assert len(repo.id) == 64 and set(repo.id) <= set("0123456789abcdef")
            assert only((), repo.snapshots) is not None

    one()


def test_snapshots(small_repo: Repository) -> None:
    """Garbage snapshot objects, sealed or not: ``load_snapshot`` raises only typed errors,
    ``snapshots()`` none (it reports and leaves out what it cannot read)."""
    repo = small_repo
    (_, real), *_ = _of(repo, layout.SNAPSHOTS)
    real_plain = unseal(repo.keys.encryption, real, repo_module._SNAPSHOT_AAD, "snapshot")
    enc = repo.keys.encryption
    good = len(repo.snapshots())

    objects = st.one_of(
        st.just(real).flatmap(mutated),
        st.binary(max_size=100),
        snapshot_plaintexts.map(lambda p: seal(enc, p, repo_module._SNAPSHOT_AAD)),
        st.just(real_plain).flatmap(mutated).map(lambda p: seal(enc, p, repo_module._SNAPSHOT_AAD)),
        snapshot_plaintexts.map(lambda p: seal(enc, p, repo_module._INDEX_AAD)),
    )

    @fuzz(REPO)
    @given(objects, st.booleans())
    @example(seal(enc, NESTED, repo_module._SNAPSHOT_AAD), False)  # RecursionError
    def one(data: bytes, misnamed: bool) -> None:
        oid = layout.object_id(data)
        if misnamed:
            oid = oid[::-1]
        with stored(repo, {layout.SNAPSHOTS + oid: data}):
            snap = only(DrengineError, lambda: repo.load_snapshot(oid))
            if snap is not None:
                check_snapshot(snap)
            snaps = only((), repo.snapshots)
            assert len(snaps) in (good, good + 1)
            for s in snaps:
                check_snapshot(s)

    one()


def test_load_index(small_repo: Repository) -> None:
    """Crafted index plaintexts sealed properly: ``load_index`` raises nothing (a damaged
    index object is reported), and what it loaded is usable: every entry can be listed and
    looked up, and reading a blob raises only typed errors."""
    repo = small_repo
    enc = repo.keys.encryption
    real_packs = sorted(repo.index.pack_ids())
    (_, real_index), *_ = _of(repo, layout.INDEX)
    real_plain = unseal(enc, real_index, repo_module._INDEX_AAD, "index")
    real_ids = [bid for bid, _ in repo.index.entries()]

    @st.composite
    def plaintexts(draw: st.DrawFn) -> bytes:
        body = draw(index_plaintexts())
        at = 12 + 32 * draw(st.integers(0, 3))  # a pack ID, if the counts are honest
        if draw(st.booleans()) and at + 32 <= len(body):
            body = body[:at] + draw(st.sampled_from(real_packs)) + body[at + 32 :]
        return body

    objects = st.one_of(
        plaintexts().flatmap(frames_of),
        st.just(real_plain).flatmap(mutated),
        st.just(zstandard.decompress(real_plain)).flatmap(mutated).flatmap(frames_of),
        st.binary(max_size=64),
    ).map(lambda p: seal(enc, p, repo_module._INDEX_AAD))

    def sealed(plain: bytes) -> bytes:
        return seal(enc, zstandard.compress(plain), repo_module._INDEX_AAD)

    @fuzz(REPO)
    @given(objects, st.booleans())
    @example(sealed(INDEX_HUGE_SUPERSEDED), False)
    @example(sealed(INDEX_TYPE_2), False)
    def one(data: bytes, present: bool) -> None:
        with stored(repo, _named(layout.INDEX, data)):
            with bounded("load_index"):
                repo.load_index(present=repo.list_packs() if present else None)
            with bounded("index look-ups"):
                entries = list(repo.index.entries())
                repo.index.pack_ids()
                for bid, entry in entries[:50]:
                    assert repo.index.lookup(bid) is not None
                    assert isinstance(entry.type, BlobType)
            for bid, _ in entries[:8]:
                only(DrengineError, partial(repo.read_blob, bid))
            for bid in real_ids[:3]:
                only(DrengineError, partial(repo.load_tree, bid))
        repo.load_index()

    one()


def store_blobs(
    repo: Repository, blobs: list[tuple[BlobType, bytes, bytes, int]]
) -> dict[str, bytes]:
    """A pack and an index object holding ``blobs`` (type, ID, payload, raw length), as
    objects to store: payloads and lengths are whatever the caller says."""
    w = PackWriter(repo.keys.encryption)
    for t, bid, payload, raw in blobs:
        w.add(t, bid, payload, raw)
    pack = bytes(w.finish())
    pack_id = layout.object_id(pack)
    index = seal(
        repo.keys.encryption,
        encode_index([(bytes.fromhex(pack_id), w.records)]),
        repo_module._INDEX_AAD,
    )
    return {layout.pack_name(pack_id): pack, **_named(layout.INDEX, index)}


def test_load_tree_crafted(small_repo: Repository) -> None:
    """Crafted tree JSON stored as a proper tree blob: ``load_tree`` raises only typed errors
    and returns fully typed nodes; crafted payloads and raw lengths behind a valid AEAD:
    ``read_blob`` raises only typed errors."""
    repo = small_repo

    @st.composite
    def crafted(draw: st.DrawFn) -> tuple[BlobType, bytes, bytes, int]:
        how = draw(st.integers(0, 3))
        if how <= 1:  # a tree blob of crafted JSON, stored as a writer would
            data = draw(tree_docs())[0] if how == 0 else draw(st.binary(max_size=60))
            return (
                BlobType.TREE,
                repo.blob_id(data, BlobType.TREE),
                blobcodec.encode(data, 3),
                len(data),
            )
        payload, raw, is_tree = draw(blob_payloads())
        t = BlobType.TREE if is_tree else BlobType.DATA
        if not 0 <= raw <= _U32:
            raw = _U32
        return t, draw(ids), payload, raw

    @fuzz(REPO)
    @given(st.lists(crafted(), min_size=1, max_size=3))
    @example(
        [
            (
                BlobType.TREE,
                repo.blob_id(NESTED, BlobType.TREE),
                blobcodec.encode(NESTED, 3),
                len(NESTED),
            )
        ]
    )
    def one(blobs: list[tuple[BlobType, bytes, bytes, int]]) -> None:
        with stored(repo, store_blobs(repo, blobs)):
            repo.load_index()
            for _, bid, _, raw in blobs:
                data = only(DrengineError, partial(repo.read_blob, bid))
                if data is not None:
                    assert len(data) == raw
                nodes = only(DrengineError, partial(repo.load_tree, bid))
                for n in nodes or []:
                    check_node(n)
        repo.load_index()

    one()


def test_read_pack_trailer(small_repo: Repository) -> None:
    """Crafted packs (trailers sealed with the repository key) and mutated real packs:
    ``read_pack_trailer`` raises only typed errors, whatever size the listing claims."""
    repo = small_repo
    packs = [d for _, d in _of(repo, layout.DATA)]

    @fuzz(REPO)
    @given(
        st.one_of(
            crafted_packs(repo.keys.encryption),
            st.sampled_from(packs).flatmap(mutated),
            st.binary(max_size=80),
        ),
        st.sampled_from([0, 0, 0, 0, 1, -1, 100, -100]),
    )
    def one(pack: bytes, size_error: int) -> None:
        pack_id = layout.object_id(pack)
        with stored(repo, {layout.pack_name(pack_id): pack}):
            size = max(len(pack) + size_error, 0)
            recs = only(DrengineError, lambda: repo.read_pack_trailer(bytes.fromhex(pack_id), size))
            if recs is not None:
                check_records(recs, size)

    one()


def test_locks_list(small_repo: Repository) -> None:
    """Garbage lock objects, sealed or not: ``Locks.list`` raises nothing (it skips what it
    cannot read), and each lock it returns can be judged stale or not and described."""
    repo = small_repo
    enc = repo.keys.encryption
    locks = Locks(repo, clock=lambda: datetime(2026, 11, 26, 21, 50, tzinfo=UTC))
    real = {
        "host": locks.host,
        "pid": os.getpid(),
        "username": "u",
        "time": "2026-11-26T21:45:00+00:00",
        "exclusive": False,
        "operation": "backup",
        "nonce": "00" * 8,
    }
    lock_special: dict[str, Any] = {
        "host": st.one_of(st.just(locks.host), texts, json_values),
        "pid": st.one_of(ints, floats, texts, st.booleans()),
        "time": st.one_of(texts, ints, floats),
        "exclusive": json_values,
        "operation": json_values,
    }
    plaintexts = st.one_of(
        structured(real, lock_special),
        st.just(json.dumps(real).encode()).flatmap(mutated),
        st.binary(max_size=40),
    )
    objects = st.one_of(
        plaintexts.map(lambda p: seal(enc, p, locks_module._LOCK_AAD)),
        plaintexts.map(lambda p: seal(enc, p, repo_module._SNAPSHOT_AAD)),
        st.binary(max_size=80),
    )

    def sealed(doc: dict[str, Any]) -> bytes:
        return seal(enc, json.dumps({**real, **doc}).encode(), locks_module._LOCK_AAD)

    @fuzz(REPO)
    @given(st.lists(objects, min_size=1, max_size=3))
    @example([sealed({"pid": float("inf")})])  # OverflowError
    @example([sealed({"pid": 2**70})])  # OverflowError in os.kill, judging it stale
    @example([sealed({"time": "2026-11-26T21:45:00"})])  # TypeError: naive minus aware
    @example([seal(enc, NESTED, locks_module._LOCK_AAD)])  # RecursionError
    def one(datas: list[bytes]) -> None:
        named = {layout.LOCKS + layout.object_id(d): d for d in datas}
        with stored(repo, named), bounded("locks"):
            for lock in locks.list():
                assert isinstance(lock.pid, int) and isinstance(lock.host, str)
                assert lock.time.tzinfo is not None
                locks.stale(lock)
                lock.describe()

    one()


stray_names = st.one_of(
    st.sampled_from(
        [
            ".nfs0001",
            "ab",
            "AB" * 32,
            "0" * 63,
            "0" * 65,
            "zz" * 32,
            "ab" * 32 + ".tmp",
            ".tmp-" + "ab" * 32,
            "ab/" + "ab" * 32,
            "ab" * 32 + "/x",
            "é" * 64,
            "x\x00y",
            "ab/" + "cd" * 32,  # a misplaced pack
            "abc/" + "ab" * 32,
        ]
    ),
    st.text(alphabet="0123456789abcdefABx/.é\x00", min_size=1, max_size=70),
)


def test_listing_strays(small_repo: Repository, repo_password: bytes, fast_argon2: None) -> None:
    """Names that are not objects of the format under every prefix: the listings skip and
    report them, and nothing that lists a prefix raises."""
    repo = small_repo
    n_snaps = len(repo.snapshots())

    @fuzz(REPO)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [layout.INDEX, layout.SNAPSHOTS, layout.LOCKS, layout.KEYS, layout.DATA]
                ),
                stray_names,
                st.binary(max_size=60),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def one(strays: list[tuple[str, str, bytes]]) -> None:
        named = {}
        for prefix, name, data in strays:
            try:
                repo.backend.put(prefix + name, data)  # only names a backend can hold
            except ValueError:
                continue
            named[prefix + name] = data
        with stored(repo, named):
            with bounded("listing"):
                for prefix in (layout.INDEX, layout.SNAPSHOTS, layout.LOCKS, layout.KEYS):
                    list_objects(repo.backend, prefix, repo.strays)
                list_packs(repo.backend, repo.strays)
                assert len(repo.snapshots()) == n_snaps
                repo.load_index()
                Locks(repo).list()
                repo.key_files()
            opened = only(DrengineError, lambda: Repository.open(repo.backend, repo_password))
            assert opened is not None

    one()


# ---- size bombs: refused quickly, without allocating what they declare ----------------------

MiB = 1 << 20


@contextmanager
def allocates_at_most(limit: int) -> Iterator[None]:
    tracemalloc.start()
    try:
        with bounded("size bomb"):
            yield
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit, f"allocated {peak / MiB:.0f} MiB"


def _index_body(npacks: int, nsup: int, tail: bytes = b"") -> bytes:
    return INDEX_MAGIC + struct.pack("<II", npacks, nsup) + tail


BOMBS: dict[str, tuple[Callable[[], object], int, type[Exception]]] = {
    # index: a frame declaring more than any index may hold
    "index declares 1 TiB": (
        lambda: decode_index(frame(raw_blocks(b"x"), 2**40), "i"),
        MiB,
        IntegrityError,
    ),
    "index declares 2**64-2": (
        lambda: decode_index(frame(raw_blocks(b"x"), 2**64 - 2), "i"),
        MiB,
        IntegrityError,
    ),
    # index: no declared size, 10 MiB of RLE blocks in 400 bytes: cut at the limit (lowered
    # from 256 MiB for speed)
    "index expands past its limit": (
        lambda: _with_index_limit(
            8 * MiB, lambda: decode_index(frame([("rle", b"\x00", _BLOCK_MAX)] * 80, None), "i")
        ),
        8 * MiB + MiB,
        IntegrityError,
    ),
    # index: counts of 2**32-1 superseded IDs or packs in a few bytes
    "index claims 2**32-1 superseded": (
        lambda: decode_index(zstandard.compress(_index_body(0, 2**32 - 1)), "i"),
        MiB,
        IntegrityError,
    ),
    "index claims 2**32-1 packs": (
        lambda: decode_index(zstandard.compress(_index_body(2**32 - 1, 0)), "i"),
        MiB,
        IntegrityError,
    ),
    "index claims 2**32-1 records": (
        lambda: decode_index(
            zstandard.compress(_index_body(1, 0, bytes(32) + struct.pack("<I", 2**32 - 1))), "i"
        ),
        MiB,
        IntegrityError,
    ),
    # blobs: the index and the frame disagree, or both claim more than the type allows
    "data blob frame declares 1 TiB": (
        lambda: blobcodec.decode(b"\x01" + frame(raw_blocks(b"x"), 2**40), 1, "b"),
        MiB,
        IntegrityError,
    ),
    "data blob claims 4 GiB": (
        lambda: blobcodec.decode(b"\x01" + frame(raw_blocks(b"x"), 2**32 - 1), 2**32 - 1, "b"),
        MiB,
        IntegrityError,
    ),
    "data blob expands past its length": (
        lambda: blobcodec.decode(b"\x01" + frame([("rle", b"a", _BLOCK_MAX)] * 800, None), 10, "b"),
        MiB,
        IntegrityError,
    ),
    # pack trailer: a count of 2**32-1 in 4 bytes, a trailer length of 4 GiB
    "trailer claims 2**32-1 blobs": (
        lambda: parse_trailer(KEY, PACK_MAGIC + bytes(32) + _trailer(_U32_MAX), "p"),
        MiB,
        IntegrityError,
    ),
    "trailer length 4 GiB": (
        lambda: parse_trailer(KEY, PACK_MAGIC + bytes(32) + _trailer(b"")[:-4] + _U32_MAX, "p"),
        MiB,
        IntegrityError,
    ),
    # key file: Argon2 asked for a terabyte
    "key file asks 1 TiB of Argon2 memory": (
        lambda: open_key_file(_key_doc(memory_kib=2**30, iterations=10**6), PASSWORD, "k"),
        MiB,
        IntegrityError,
    ),
    # JSON nested a million deep
    "tree nested 10**6 deep": (lambda: decode_tree(b"[" * 10**6), 16 * MiB, ValueError),
    "snapshot nested 10**6 deep": (
        lambda: Snapshot.from_bytes(b'{"a":' * 10**6, "s"),
        64 * MiB,
        ValueError,
    ),
}


def _with_index_limit(limit: int, fn: Callable[[], object]) -> object:
    """``fn()`` with the index size limit lowered: the mechanism that stops a frame without
    a declared size at 256 MiB, shown at a size that costs no time."""
    with unittest.mock.patch.object(index_module, "MAX_INDEX_PLAINTEXT", limit):
        return fn()


def _trailer(plain: bytes) -> bytes:
    ct = ObjectCipher(KEY, bytes(32)).encrypt(DOMAIN_TRAILER, 0, plain, pack_module._TRAILER_AAD)
    return ct + struct.pack("<I", len(ct))


@pytest.mark.parametrize("name", sorted(BOMBS))
def test_size_bombs_are_refused_without_allocating(name: str) -> None:
    fn, limit, expected = BOMBS[name]
    with allocates_at_most(limit), pytest.raises(expected):
        fn()
