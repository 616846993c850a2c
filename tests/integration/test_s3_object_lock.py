"""S3 Object Lock on a real server: SeaweedFS implements it (retention on PUT, HEAD shows it,
versioned deletes refused while retained), so the CLI runs against a bucket created with it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from s3_cli import Drengine
from seaweed_server import BUCKET, SeaweedS3

from drengine.engine.check import run_check
from drengine.engine.prune import run_prune
from drengine.repository.repo import Repository
from drengine.storage.url import open_backend

PASSWORD = "object lock correct horse"

pytestmark = pytest.mark.integration

LOCK_BUCKET = "drengine-object-lock"


@pytest.fixture
def lock_bucket(seaweed_env: SeaweedS3, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("DRENGINE_CACHE_DIR", str(tmp_path / "cache"))
    client = seaweed_env.client()
    try:
        client.create_bucket(Bucket=LOCK_BUCKET, ObjectLockEnabledForBucket=True)
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    return LOCK_BUCKET


def _versions(seaweed: SeaweedS3, prefix: str) -> Iterator[dict[str, object]]:
    client = seaweed.client()
    pages = client.get_paginator("list_object_versions").paginate(
        Bucket=LOCK_BUCKET, Prefix=prefix + "/"
    )
    for page in pages:
        yield from page.get("Versions", [])


def test_object_lock_repository_on_seaweedfs(
    seaweed_env: SeaweedS3, lock_bucket: str, tmp_path: Path, s3_prefix: str
) -> None:
    run = Drengine(
        seaweed_env, f"s3://{lock_bucket}/{s3_prefix}", tmp_path / "cache", tmp_path, PASSWORD
    )
    src = tmp_path / "src"
    (src / "keep").mkdir(parents=True)
    (src / "keep" / "a.bin").write_bytes(os.urandom(2_000_000))
    (src / "gone.bin").write_bytes(os.urandom(3_000_000))
    run.init("--pack-size", "1", "--object-lock-mode", "GOVERNANCE", "--object-lock-days", "1")
    first = json.loads(run("backup", str(src), "--json").stdout)["snapshot_id"]
    (src / "gone.bin").unlink()
    run("backup", str(src))

    # Every object version drengine wrote is retained for a day; lock objects are not, nor is
    # the probe that checks the server honours conditional writes.
    client = seaweed_env.client()
    expected = datetime.now(UTC) + timedelta(days=1)
    versions = list(_versions(seaweed_env, s3_prefix))
    assert {str(v["Key"]).split("/")[2] for v in versions} >= {
        "config",
        "keys",
        "data",
        "index",
        "snapshots",
        "locks",
    }
    for v in versions:
        head = client.head_object(Bucket=lock_bucket, Key=v["Key"], VersionId=v["VersionId"])
        if "/locks/" in str(v["Key"]) or "/.drengine-conditional-write-probe-" in str(v["Key"]):
            assert "ObjectLockMode" not in head
            continue
        assert head["ObjectLockMode"] == "GOVERNANCE", v["Key"]
        assert abs(head["ObjectLockRetainUntilDate"] - expected) < timedelta(minutes=5)
    # The server itself refuses to destroy a retained version: that is the protection.
    pack = next(v for v in versions if "/data/" in str(v["Key"]))
    with pytest.raises(ClientError) as refused:
        client.delete_object(Bucket=lock_bucket, Key=pack["Key"], VersionId=pack["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"

    # prune keeps what is retained, says so, and leaves a repository that checks and restores.
    run("forget", first)
    res = json.loads(run("prune", "--max-unused", "0", "--json").stdout)
    kept = res["kept_locked"]
    assert {o["kind"] for o in kept} == {"pack", "index"}
    assert res["packs_deleted"] == res["packs_repacked"] == 0
    text = run("prune", "--dry-run").stdout
    assert "S3 Object Lock retains until" in text
    run("check", "--read-data")
    run("restore", "latest", "--target", str(tmp_path / "restore"))
    restored = tmp_path / "restore" / src.relative_to(src.anchor)
    assert (restored / "keep" / "a.bin").read_bytes() == (src / "keep" / "a.bin").read_bytes()

    # Once the retention has ended (prune's clock moved a day on), a later prune removes them.
    url = f"s3://{lock_bucket}/{s3_prefix}"
    password = run.env["DRENGINE_PASSWORD"].encode()
    later = datetime.now(UTC) + timedelta(days=1, hours=1)
    after = run_prune(
        Repository.open(open_backend(url), password), max_unused=0.0, now=lambda: later
    )
    assert after.kept_locked == [] and after.bytes_freed > 2_500_000
    check = run_check(Repository.open(open_backend(url), password), 1.0)
    assert check.errors == [] and check.warnings == []


def test_init_refuses_a_bucket_without_object_lock(
    seaweed: SeaweedS3, tmp_path: Path, s3_prefix: str
) -> None:
    run = Drengine(seaweed, f"s3://{BUCKET}/{s3_prefix}", tmp_path / "cache", tmp_path, PASSWORD)
    proc = run("init", "--object-lock-mode", "GOVERNANCE", "--object-lock-days", "1", code=1)
    assert "does not have S3 Object Lock enabled" in proc.stderr
    listing = seaweed.client().list_objects_v2(Bucket=BUCKET, Prefix=s3_prefix + "/")
    assert listing.get("KeyCount", 0) == 0
