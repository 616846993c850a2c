"""Directory signatures: what lets a backup reuse an unchanged directory's tree blob.

A directory's *listing signature* digests, for every entry kept after excludes, its name and
every ``lstat`` field a tree node is built from (type and mode, owner and the owner's names,
size, blocks, times, inode, device, link count, device number), under a context digest of
the backup's options (exclude rules, ``--one-file-system``, this format's version). A change
to an entry's extended attributes, ACLs or link target changes its ctime (or its inode), so
it changes the signature too. The *subtree signature* digests the subdirectories' tree IDs
in name order: a directory whose listing and subtrees are unchanged has an unchanged tree
blob, which the backup then references instead of building nodes and encoding them again.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from functools import lru_cache

import blake3

from drengine.sources.files_meta import owner_names

# Bump when what a tree node records from an entry changes: old rows then never match.
_VERSION = b"drengine dirsig 1\n"
# mode uid gid len(name) size mtime ctime ino dev nlink rdev blocks
_ENTRY = struct.Struct("<IIIIqqqQQQQQ")


def context_digest(*options: object) -> bytes:
    """What else decides a directory's tree: the backup's options, as their ``repr``."""
    return blake3.blake3(_VERSION + repr(options).encode("utf-8", "surrogateescape")).digest()


@lru_cache(maxsize=4096)
def _owners(uid: int, gid: int) -> bytes:
    user, group = owner_names(uid, gid)
    return (user + "\0" + group + "\0").encode("utf-8", "surrogateescape")


def listing_signature(context: bytes, entries: Iterable[tuple[bytes, os.stat_result]]) -> bytes:
    pack = _ENTRY.pack
    parts = [context]
    for name, st in entries:
        parts.append(
            pack(
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
        )
        parts.append(name)
        parts.append(_owners(st.st_uid, st.st_gid))
    return blake3.blake3(b"".join(parts)).digest()


def subtree_signature(tree_ids: Iterable[bytes | None]) -> bytes:
    return blake3.blake3(b"".join(t or b"\0" * 32 for t in tree_ids)).digest()
