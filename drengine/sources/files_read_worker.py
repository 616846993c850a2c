"""A backup's read worker process: ``python -m drengine.sources.files_read_worker FD``.

Started by ``files_read_procs`` with one end of a socket pair as ``FD``. It receives what
sealing a small file takes (``SmallBlobs``: the blob-ID key and the compression level),
then batches of small files by path and inode. For each it does what the walker's
in-process read does (``Walker.read_small``): opens the file without following a symlink,
checks that it is still the regular file that was listed, reads it whole and its extended
attributes, and answers with its size, blob ID, content hash, compressed payload and its
node's JSON (built from the ``fstat`` of what it read), or with why it could not. It holds
no lock, writes nothing and knows no storage: the backup's process deduplicates, encrypts
and packs.

SIGINT is ignored (the backup decides what a Ctrl-C stops); a worker whose parent went
away sees the socket close and stops.
"""

from __future__ import annotations

import os
import socket
import stat
import sys
from typing import Any, cast

from drengine.core.model import encode_node
from drengine.core.workers import recv, send, worker_main
from drengine.pipeline.small_blobs import SmallBlobs
from drengine.sources.files_meta import node_from_stat, open_file

# Answers per file (the first field says which):
OK = 0  # (OK, size, blob ID, content hash, payload, node JSON, mtime_ns, ctime_ns)
FAILED = 1  # (FAILED, errno, message)
GREW = 2  # (GREW,): larger than ``small`` now; the backup chunks it itself

Answer = tuple[Any, ...]


def read_one(blobs: SmallBlobs, path: bytes, inode: int) -> Answer:
    """Read the regular file listed at ``path`` with ``inode`` as the walk would: its
    node is built from the ``fstat`` of what was read (the listed file: same inode)."""
    try:
        fd = open_file(path)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_ino != inode:
                raise OSError(0, "changed while being backed up")
            data = os.read(fd, blobs.small + 1)
        finally:
            os.close(fd)
        if len(data) > blobs.small:
            return (GREW,)
        node = node_from_stat(path[path.rfind(b"/") + 1 :], path, st)
    except OSError as e:
        return (FAILED, e.errno or 0, e.strerror or str(e))
    blob_id, content_hash, payload = blobs.seal(data)
    node.content, node.size, node.content_hash = [blob_id] if data else [], len(data), content_hash
    text = encode_node(node).encode("ascii")
    return (OK, len(data), blob_id, content_hash, payload, text, st.st_mtime_ns, st.st_ctime_ns)


def serve(sock: socket.socket) -> None:
    blobs = recv(sock)
    assert isinstance(blobs, SmallBlobs)
    while (batch := recv(sock)) is not None:
        number, files = cast(tuple[int, list[tuple[bytes, int]]], batch)
        send(sock, (number, [read_one(blobs, path, inode) for path, inode in files]))


def main(argv: list[str]) -> int:
    return worker_main(argv, serve, "a read worker process")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
