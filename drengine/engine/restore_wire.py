"""Messages between a restore and its writer processes, over a private socket pair.

Each message is a 4-byte big-endian length and a pickle. Pickle is safe here: both ends are
this program, the socket pair is created by the parent and inherited by the child only,
and nothing read from the repository or the target is unpickled (a repository's bytes
reach a worker only as ``bytes`` inside a message the parent built).

Parent to worker: ``Setup``, then the target's descriptor (``SCM_RIGHTS``), then work
items (``BatchItem`` or ``FileItem``), then ``None`` (no more work). Worker to parent:
for each item in order a ``Done``, ``Progress`` messages meanwhile, and
``Finished`` with its phase timings before it exits.
"""

from __future__ import annotations

import pickle
import socket
import struct
from dataclasses import dataclass, field

from drengine.crypto.keys import MasterKeys
from drengine.engine.restore_batches import Batch
from drengine.engine.restore_plan import Entry
from drengine.repository.config import Config
from drengine.repository.index import IndexEntry

_LENGTH = struct.Struct(">I")
_MAX_MESSAGE = 1 << 30


@dataclass
class Setup:
    url: str  # the pack storage, opened again by the worker (``storage.url.reopen_url``)
    keys: MasterKeys
    config: Config
    parents: list[int]  # the plan's directories, as ``DirFds`` takes them
    names: list[bytes]
    is_root: bool


@dataclass
class BatchItem:
    """One-blob files whose blobs lie in one range of one pack."""

    batch: Batch[Entry]


@dataclass
class FileItem:
    """A file of several blobs (or one read alone): its entry and each blob's location."""

    entry: Entry
    blobs: list[tuple[bytes, IndexEntry]]


@dataclass
class Done:
    """Per entry of the item, in order: whether it is written, verified and in place.
    ``notes`` are messages the parent reports as they are (a temporary file that could not
    be removed); an entry not done is written again by the parent, which reports why."""

    done: list[bool]
    notes: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Progress:
    nbytes: int


@dataclass
class Finished:
    phases: list[tuple[str, float, float]]  # (phase, wall seconds, busy seconds)


def send(sock: socket.socket, obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def recv(sock: socket.socket) -> object:
    """The next message; ``EOFError`` if the other end closed or died."""
    (length,) = _LENGTH.unpack(_exactly(sock, _LENGTH.size))
    if length > _MAX_MESSAGE:
        raise EOFError(f"a message of {length} bytes")
    return pickle.loads(_exactly(sock, length))


def _exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("the other end closed the connection")
        buf += chunk
    return bytes(buf)


def entries_of(item: BatchItem | FileItem) -> list[Entry]:
    if isinstance(item, BatchItem):
        return [entry for entry, _, _ in item.batch.items]
    return [item.entry]
