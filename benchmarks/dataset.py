"""Deterministic benchmark dataset: many small files, one large log file, one disk image.

At ``--scale 1`` the dataset is about 1 GB:

- ``small/``: 30,000 files of 1-16 KiB in 300 directories, 60 % text-like (compressible),
  40 % random (incompressible);
- ``log/app.log``: 300 MiB of log-like text (timestamps, levels, templated messages);
- ``image/disk.img``: a 400 MiB disk image made of extents: runs of zeros, random data,
  text-like data, and extents copied from earlier in the image (deduplicable).

Everything derives from one seed, so the same parameters give the same bytes. Generation is
skipped when the marker file ``<dir>.params.json`` beside the directory records the same
parameters. Usage: ``python benchmarks/dataset.py DIR [--scale S] [--seed N]``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GENERATOR_VERSION = 1
KIB = 1024
MIB = 1024 * KIB

SMALL_FILES = 30_000
SMALL_DIRS = 300
SMALL_MIN, SMALL_MAX = 1 * KIB, 16 * KIB
SMALL_TEXT_FRACTION = 0.6
LOG_BYTES = 300 * MIB
IMAGE_BYTES = 400 * MIB
IMAGE_BLOCK = 4 * KIB
EXTENT_MIN, EXTENT_MAX = 64 * KIB, 4 * MIB
# Extent kinds of the disk image and their probabilities.
EXTENT_KINDS = ("zero", "random", "copy", "text")
EXTENT_P = (0.30, 0.30, 0.25, 0.15)
CORPUS_BYTES = 32 * MIB
WRITE_CHUNK = 8 * MIB


@dataclass(frozen=True)
class DatasetInfo:
    root: Path
    files: int
    total_bytes: int
    params: dict[str, Any]


def marker_path(root: Path) -> Path:
    return root.with_name(root.name + ".params.json")


def make_vocabulary(rng: np.random.Generator, n: int = 8000) -> list[bytes]:
    lengths = rng.integers(2, 11, n)
    letters = rng.integers(ord("a"), ord("z") + 1, int(lengths.sum()), dtype=np.uint8).tobytes()
    ends = np.cumsum(lengths)
    return [letters[e - k : e] for e, k in zip(ends.tolist(), lengths.tolist(), strict=True)]


def zipf_weights(n: int, s: float = 1.1) -> np.ndarray:
    w: np.ndarray = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    w /= w.sum()
    return w


def text_like(rng: np.random.Generator, vocab: list[bytes], nbytes: int) -> bytes:
    """Prose-like text: Zipf-distributed words, a line break every dozen words or so."""
    tokens = [w + b" " for w in vocab] + [w + b".\n" for w in vocab]
    weights = zipf_weights(len(vocab))
    parts: list[bytes] = []
    have = 0
    while have < nbytes:
        k = max(1024, (nbytes - have) // 5)
        idx = rng.choice(len(vocab), size=k, p=weights)
        idx += len(vocab) * (rng.random(k) < 1 / 12)
        part = b"".join(map(tokens.__getitem__, idx.tolist()))
        parts.append(part)
        have += len(part)
    return b"".join(parts)[:nbytes]


def write_log(path: Path, rng: np.random.Generator, vocab: list[bytes], nbytes: int) -> None:
    """Application-log-like text: increasing timestamps, levels, components, templates."""
    words = [w.decode() for w in vocab[:2000]]
    templates = []
    for _ in range(600):
        picks = rng.integers(0, len(words), int(rng.integers(3, 10)))
        templates.append(" ".join(words[i] for i in picks.tolist()))
    levels = ["DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR"]
    comps = [f"{words[i]}.{words[i + 1]}" for i in range(0, 80, 2)]
    start = int(dt.datetime(2024, 3, 1, tzinfo=dt.UTC).timestamp() * 1_000_000)
    seconds: dict[int, str] = {}
    written = 0
    now_us = start
    n = 50_000
    with path.open("wb") as f:
        while written < nbytes:
            step = rng.exponential(1500.0, n).astype(np.int64) + 1
            ts = (now_us + np.cumsum(step)).tolist()
            now_us = ts[-1]
            lvl = rng.integers(0, len(levels), n).tolist()
            comp = rng.integers(0, len(comps), n).tolist()
            tpl = (rng.zipf(1.3, n) % len(templates)).tolist()
            rid = rng.integers(0, 2**48, n).tolist()
            dur = rng.integers(0, 5000, n).tolist()
            lines = []
            for t, a, b, c, r, d in zip(ts, lvl, comp, tpl, rid, dur, strict=True):
                sec = t // 1_000_000
                stamp = seconds.get(sec)
                if stamp is None:
                    stamp = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
                    seconds[sec] = stamp
                lines.append(
                    f"{stamp}.{t % 1_000_000:06d}Z {levels[a]} [{comps[b]}] {templates[c]} "
                    f"req={r:012x} took={d}ms\n"
                )
            data = "".join(lines).encode()[: nbytes - written]
            f.write(data)
            written += len(data)


def write_small_files(
    root: Path, rng: np.random.Generator, corpus: bytes, n_files: int, n_dirs: int
) -> None:
    sizes = rng.integers(SMALL_MIN, SMALL_MAX + 1, n_files).tolist()
    is_text = (rng.random(n_files) < SMALL_TEXT_FRACTION).tolist()
    offsets = rng.integers(0, len(corpus) - SMALL_MAX, n_files).tolist()
    dirs = [root / "small" / f"g{d // 20:02d}" / f"d{d:03d}" for d in range(n_dirs)]
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    for i in range(n_files):
        size = sizes[i]
        if is_text[i]:
            data, name = corpus[offsets[i] : offsets[i] + size], f"f{i:05d}.txt"
        else:
            data, name = rng.bytes(size), f"f{i:05d}.bin"
        (dirs[i % n_dirs] / name).write_bytes(data)


def write_image(path: Path, rng: np.random.Generator, corpus: bytes, nbytes: int) -> None:
    """A disk image: extents of zeros, random data, text, and copies of earlier extents."""
    nbytes -= nbytes % IMAGE_BLOCK
    image = bytearray(nbytes)  # zero-filled: "zero" extents need no work
    view = memoryview(image)
    pos = 0
    lo, hi = EXTENT_MIN // IMAGE_BLOCK, EXTENT_MAX // IMAGE_BLOCK
    while pos < nbytes:
        size = min(int(rng.integers(lo, hi + 1)) * IMAGE_BLOCK, nbytes - pos)
        kind = EXTENT_KINDS[int(rng.choice(len(EXTENT_KINDS), p=EXTENT_P))]
        if kind == "copy" and pos < size:
            kind = "random"
        if kind == "random":
            view[pos : pos + size] = rng.bytes(size)
        elif kind == "text":
            off = int(rng.integers(0, max(1, len(corpus) - size)))
            chunk = corpus[off : off + size]
            view[pos : pos + len(chunk)] = chunk
        elif kind == "copy":
            src = int(rng.integers(0, (pos - size) // IMAGE_BLOCK + 1)) * IMAGE_BLOCK
            view[pos : pos + size] = view[src : src + size]
        pos += size
    with path.open("wb") as f:
        for off in range(0, nbytes, WRITE_CHUNK):
            f.write(view[off : off + WRITE_CHUNK])


def scan(root: Path) -> tuple[int, int]:
    files = total = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            files += 1
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return files, total


def generate(root: Path, scale: float, seed: int) -> None:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    seq = np.random.SeedSequence([seed, GENERATOR_VERSION])
    r_vocab, r_corpus, r_small, r_log, r_image = (np.random.default_rng(s) for s in seq.spawn(5))
    vocab = make_vocabulary(r_vocab)
    corpus = text_like(r_corpus, vocab, max(2 * MIB, int(CORPUS_BYTES * scale)))
    n_files = max(1, round(SMALL_FILES * scale))
    write_small_files(
        root, r_small, corpus, n_files, max(1, min(n_files, round(SMALL_DIRS * scale)))
    )
    (root / "log").mkdir()
    write_log(root / "log" / "app.log", r_log, vocab, max(MIB, int(LOG_BYTES * scale)))
    (root / "image").mkdir()
    write_image(root / "image" / "disk.img", r_image, corpus, max(MIB, int(IMAGE_BYTES * scale)))


def ensure_dataset(root: Path, scale: float, seed: int = 1, quiet: bool = False) -> DatasetInfo:
    """Generate the dataset in ``root`` unless the marker says it is already there."""
    root = root.resolve()
    params: dict[str, Any] = {"generator": GENERATOR_VERSION, "scale": scale, "seed": seed}
    marker = marker_path(root)
    if marker.exists() and root.is_dir():
        try:
            recorded = json.loads(marker.read_text())
        except (OSError, ValueError):
            recorded = {}
        if recorded.get("params") == params:
            return DatasetInfo(root, recorded["files"], recorded["bytes"], params)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    if not quiet:
        print(f"generating dataset in {root} (scale {scale}, seed {seed}) ...", flush=True)
    generate(root, scale, seed)
    files, total = scan(root)
    marker.write_text(json.dumps({"params": params, "files": files, "bytes": total}, indent=2))
    if not quiet:
        secs = time.perf_counter() - t0
        print(f"generated {files} files, {total / 1e6:.1f} MB in {secs:.1f} s", flush=True)
    return DatasetInfo(root, files, total, params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--scale", type=float, default=1.0, help="size factor (1.0 = ~1 GB)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--quiet", action="store_true", help="print only while generating")
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    info = ensure_dataset(args.directory, args.scale, args.seed)
    if not args.quiet:
        print(f"{info.root}: {info.files} files, {info.total_bytes / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
