"""Directory signatures: what lets a backup reuse an unchanged directory's tree blob.

A directory's *listing signature* digests, for every entry kept after excludes, its name and
every ``lstat`` field a tree node is built from (type and mode, owner and the owner's names,
size, blocks, times, inode, device, link count, device number), under a context digest of
the backup's options (exclude rules, ``--one-file-system``, this format's version). A change
to an entry's extended attributes, ACLs or link target changes its ctime (or its inode), so
it changes the signature too. The *subtree signature* digests the subdirectories' tree IDs
in name order: a directory whose listing and subtrees are unchanged has an unchanged tree
blob, which the backup then references instead of building nodes and encoding them again.

An entry's *key* is its part of the listing signature: the ``lstat`` fields and owner names
(its name is kept beside it). A directory row also keeps, for every entry other than a
subdirectory, its key and its node's JSON as it went into the tree blob (``pack_entries``).
When such a directory changed, every entry whose key is unchanged takes its JSON from the
row, byte for byte what building and encoding its node again would give; only the others
are handled. The records are protected by a digest (a damaged cache costs speed only) and
name the context they were made under.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache

import blake3
import zstandard

from drengine.repository.blobcodec import compressor, decompressor
from drengine.sources.files_meta import owner_names

# Bump when what a tree node records from an entry changes: old rows then never match.
_VERSION = b"drengine dirsig 2\n"
# mode uid gid len(name) size mtime ctime ino dev nlink rdev blocks
_ENTRY = struct.Struct("<IIIIqqqQQQQQ")


def context_digest(*options: object) -> bytes:
    """What else decides a directory's tree: the backup's options, as their ``repr``."""
    return blake3.blake3(_VERSION + repr(options).encode("utf-8", "surrogateescape")).digest()


@lru_cache(maxsize=4096)
def _owners(uid: int, gid: int) -> bytes:
    user, group = owner_names(uid, gid)
    return (user + "\0" + group + "\0").encode("utf-8", "surrogateescape")


def listing_signature(
    context: bytes, entries: Sequence[tuple[bytes, os.stat_result]]
) -> tuple[bytes, dict[bytes, bytes]]:
    """The listing's signature and every entry's key (what of it, besides its name, decides
    its tree node), by name."""
    pack, owners = _ENTRY.pack, _owners
    keys = {
        name: pack(
            st.st_mode,
            st.st_uid,
            st.st_gid,
            len(name),
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            st.st_dev,
            st.st_nlink,
            st.st_rdev,
            st.st_blocks,
        )
        + owners(st.st_uid, st.st_gid)
        for name, st in entries
    }
    parts = [context]
    for name, key in keys.items():
        parts.append(key)
        parts.append(name)
    return blake3.blake3(b"".join(parts)).digest(), keys


def subtree_signature(tree_ids: Iterable[bytes | None]) -> bytes:
    return blake3.blake3(b"".join(t or b"\0" * 32 for t in tree_ids)).digest()


# name length, key length, JSON length
_RECORD = struct.Struct("<HHI")
_SLICE = 4 * 256  # parts of 256 records: ~128 KiB of node JSON


def pack_entries(context: bytes, records: Iterable[tuple[bytes, bytes, bytes]]) -> bytes:
    """A directory row's entry records, each (name, key, node JSON): a digest of the rest,
    the context, then zstd of each record's three lengths and its three parts (JSON
    compresses about five times: the cache file and its writes stay small)."""
    pack = _RECORD.pack
    parts: list[bytes] = []
    size = 0
    for name, key, text in records:
        parts += (pack(len(name), len(key), len(text)), name, key, text)
        size += _RECORD.size + len(name) + len(key) + len(text)
    # Compressed a slice of records at a time: joined whole, the 18,018 records of
    # /usr/share/man/man1 took 10 MB, and as much again for zstd's output bound, at the
    # backup's memory peak. The frame still records its content size, as one-shot reads need.
    z = compressor(1).compressobj(size=size)
    out = [context]
    for i in range(0, len(parts), _SLICE):
        out.append(z.compress(b"".join(parts[i : i + _SLICE])))
    out.append(z.flush())
    payload = b"".join(out)
    return blake3.blake3(payload).digest() + payload


def unpack_entries(context: bytes, data: bytes | None) -> dict[bytes, tuple[bytes, bytes]]:
    """The records of ``pack_entries`` as {name: (key, node JSON)}; none when they are
    missing, damaged or made under another context."""
    if not data or len(data) < 64 or data[32:64] != context:
        return {}
    if blake3.blake3(memoryview(data)[32:]).digest() != data[:32]:
        return {}
    out: dict[bytes, tuple[bytes, bytes]] = {}
    try:
        raw = decompressor().decompress(data[64:])
        unpack, pos, end = _RECORD.unpack_from, 0, len(raw)
        while pos < end:
            n, k, t = unpack(raw, pos)
            a = pos + 8
            b = a + n
            c = b + k
            pos = c + t
            out[raw[a:b]] = (raw[b:c], raw[c:pos])
    except (struct.error, zstandard.ZstdError):
        return {}
    return out if pos == end else {}
