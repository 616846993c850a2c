"""How the in-memory index scales: bytes per blob, look-up cost, and additions.

Usage: ``python benchmarks/index_scale.py [--blobs 10000000]``. Loads N synthetic blobs the
way ``Repository.load_index`` does (index objects of 100,000 blobs each, one sort), then
reports the runs' bytes per blob, the process's resident growth, the cost of a look-up of a
present and of an absent ID at several sizes, and the cost of adding blobs as a backup does
(``add_pack``), with the longest time a look-up had to wait meanwhile.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from drengine.repository.index import Index
from drengine.repository.index_format import RECORD_DTYPE
from drengine.repository.index_split import BLOBS_PER_INDEX
from drengine.repository.layout import BlobType
from drengine.repository.pack import BlobRecord


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def synthetic_records(n: int, rng: np.random.Generator) -> np.ndarray:
    arr = np.zeros(n, dtype=RECORD_DTYPE)
    arr["id"] = np.frombuffer(rng.bytes(32 * n), dtype="V32")
    arr["type"] = 1
    arr["offset"] = rng.integers(36, 1 << 24, n, dtype=np.uint32)
    arr["length"] = rng.integers(100, 1 << 20, n, dtype=np.uint32)
    arr["raw"] = arr["length"]
    return arr


def lookup_cost(index: Index, ids: list[bytes]) -> float:
    """Microseconds per look-up."""
    start = time.perf_counter()
    for bid in ids:
        index.lookup(bid)
    return (time.perf_counter() - start) / len(ids) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blobs", type=int, default=10_000_000)
    ap.add_argument("--add", type=int, default=500_000, help="blobs added as by a backup")
    ap.add_argument("--results", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    out: dict[str, object] = {"blobs": args.blobs}
    sizes = sorted({s for s in (10**5, 10**6, 10**7, args.blobs) if s <= args.blobs})
    index, present = Index(), np.zeros(0, dtype=RECORD_DTYPE)
    costs = []
    for size in sizes:
        del index, present
        before = rss_mib()
        index = Index()  # loaded from scratch, as by a new process
        t0 = time.perf_counter()
        done = 0
        while done < size:
            part = synthetic_records(min(BLOBS_PER_INDEX, size - done), rng)
            index.stage_pack_array(rng.bytes(32), part)
            present, done = part, done + len(part)
        index.build()
        build_s = time.perf_counter() - t0
        hits = [bytes(b) for b in present["id"][:20_000]]
        misses = [rng.bytes(32) for _ in range(20_000)]
        row = {
            "blobs": size,
            "bytes_per_blob": round(index.memory_bytes() / size, 1),
            "load_s": round(build_s, 2),
            "lookup_hit_us": round(lookup_cost(index, hits), 2),
            "lookup_miss_us": round(lookup_cost(index, misses), 2),
            "rss_growth_mib": round(rss_mib() - before, 1),
        }
        costs.append(row)
        print(json.dumps(row), flush=True)
    out["sizes"] = costs

    # Additions as a backup makes them, with a reader measuring how long look-ups wait.
    longest = [0.0]
    stop = threading.Event()
    probe = [bytes(b) for b in present["id"][:1000]]

    def reader() -> None:
        while not stop.is_set():
            for bid in probe:
                t = time.perf_counter()
                index.lookup(bid)
                longest[0] = max(longest[0], time.perf_counter() - t)

    th = threading.Thread(target=reader)
    th.start()
    t0 = time.perf_counter()
    for _ in range(args.add // 100):
        recs = [
            BlobRecord(BlobType.DATA, rng.bytes(32), 36 + 1000 * i, 1000, 1000) for i in range(100)
        ]
        index.add_pack(rng.bytes(32), recs)
    add_s = time.perf_counter() - t0
    stop.set()
    th.join()
    add = {
        "added": args.add,
        "add_us_per_blob": round(add_s / args.add * 1e6, 2),
        "longest_lookup_ms": round(longest[0] * 1e3, 2),
        "bytes_per_blob_after": round(index.memory_bytes() / len(index), 1),
    }
    print(json.dumps(add))
    out["additions"] = add
    if args.results:
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
