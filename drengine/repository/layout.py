"""Object names. Everything but ``config`` is named by the BLAKE3 hash of its stored bytes."""

from __future__ import annotations

from enum import IntEnum

import blake3

CONFIG = "config"
KEYS = "keys/"
DATA = "data/"
INDEX = "index/"
SNAPSHOTS = "snapshots/"
LOCKS = "locks/"
REPORTS = "reports/"
SIGNERS = "signers/"


class BlobType(IntEnum):
    DATA = 0
    TREE = 1


def object_id(data: bytes | bytearray | memoryview) -> str:
    """The name of a stored object: hex BLAKE3 (unkeyed) of its exact bytes."""
    return blake3.blake3(data, max_threads=blake3.blake3.AUTO).hexdigest()


def pack_name(pack_id: str) -> str:
    return f"{DATA}{pack_id[:2]}/{pack_id}"


def pack_id_from_name(name: str) -> str:
    return name.rsplit("/", 1)[-1]
