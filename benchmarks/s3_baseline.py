"""The plain-boto3 baseline: the dataset's bytes as ~16 MiB objects, up and down.

What a backup tool could at best achieve on this server with this many threads: no chunking,
hashing, compression or encryption, no small objects, no metadata. The files are read in
order and their bytes concatenated into objects of ``object_size`` (the last one smaller),
like drengine's packs. Their sizes and SHA-256 are computed first, untimed. ``put_object``
then uploads them from a thread pool with a bounded number in flight (as drengine's
uploaders do), and ``get_object`` reads them back from another pool, checking each object's
length and SHA-256 against what was sent (restore verifies too).
"""

from __future__ import annotations

import hashlib
import os
import resource
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass
class Transfer:
    """One timed baseline run."""

    seconds: float
    cpu_seconds: float  # user + system of this process, all threads
    objects: int
    bytes: int


@dataclass
class Uploaded:
    keys: list[str] = field(default_factory=list)
    digests: dict[str, tuple[int, str]] = field(default_factory=dict)  # key -> (size, sha256)


def dataset_files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirs, names in os.walk(root):
        dirs.sort()
        out.extend(Path(dirpath) / n for n in sorted(names))
    return out


def objects_of(files: list[Path], object_size: int) -> Iterator[bytes]:
    """The files' bytes, concatenated and cut into pieces of ``object_size``."""
    buf = bytearray()
    for path in files:
        with path.open("rb") as f:
            while block := f.read(object_size - len(buf)):
                buf += block
                if len(buf) == object_size:
                    yield bytes(buf)
                    buf.clear()
    if buf:
        yield bytes(buf)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def plan(prefix: str, files: list[Path], object_size: int) -> Uploaded:
    """Keys ``PREFIX/NNNNNN`` and the expected size and SHA-256 of each (computed untimed)."""
    up = Uploaded()
    for i, data in enumerate(objects_of(files, object_size)):
        key = f"{prefix}/{i:06d}"
        up.keys.append(key)
        up.digests[key] = (len(data), hashlib.sha256(data).hexdigest())
    return up


def put_all(
    client: Any, bucket: str, up: Uploaded, files: list[Path], object_size: int, threads: int
) -> Transfer:
    """Upload the files' bytes as the planned objects from ``threads`` threads."""
    slots = threading.BoundedSemaphore(threads + 1)  # objects read but not yet uploaded

    def put(key: str, data: bytes) -> None:
        try:
            client.put_object(Bucket=bucket, Key=key, Body=data)
        finally:
            slots.release()

    total = 0
    cpu0, t0 = _cpu(), time.perf_counter()
    futures: list[Future[None]] = []
    with ThreadPoolExecutor(threads, thread_name_prefix="put") as pool:
        for key, data in zip(up.keys, objects_of(files, object_size), strict=True):
            slots.acquire()
            total += len(data)
            futures.append(pool.submit(put, key, data))
        for fut in futures:
            fut.result()
    seconds = time.perf_counter() - t0
    return Transfer(seconds, _cpu() - cpu0, len(up.keys), total)


class BaselineMismatch(RuntimeError):
    pass


def get_all(client: Any, bucket: str, up: Uploaded, threads: int) -> Transfer:
    """Download every uploaded object from ``threads`` threads; verify length and hash."""

    def get(key: str) -> int:
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        if (len(data), hashlib.sha256(data).hexdigest()) != up.digests[key]:
            raise BaselineMismatch(f"object {key} came back different from what was uploaded")
        return len(data)

    cpu0, t0 = _cpu(), time.perf_counter()
    with ThreadPoolExecutor(threads, thread_name_prefix="get") as pool:
        total = sum(pool.map(get, up.keys))
    seconds = time.perf_counter() - t0
    return Transfer(seconds, _cpu() - cpu0, len(up.keys), total)


def delete_all(client: Any, bucket: str, keys: list[str]) -> None:
    for first in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[first : first + 1000]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
