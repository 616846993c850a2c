"""Count the S3 requests a process makes, by operation, from inside the process.

drengine runs as a child process, so a botocore event hook in the benchmark runner cannot
see its requests. Instead the child is started through ``LAUNCHER``: a few lines that import
this module, wrap ``boto3.session.Session.client`` so that every S3 client the process
creates (drengine makes one per backend, in a private session) gets our handlers, and then
run ``drengine.cli.main:main`` exactly as the ``drengine`` console script would. At exit the
counts are written as JSON to the file named by ``S3_BENCH_COUNTS_FILE``.

Counted per S3 operation (``PutObject``, ``GetObject``, ``ListObjectsV2``, ...):

- ``requests``: HTTP requests sent (botocore's ``before-send`` event fires once per attempt,
  so a retried call counts once per try: what the server sees and what S3 bills);
- ``errors``: answers with a status of 300 or more (412 for a conditional write that lost,
  404 for a missing object, 5xx), plus attempts that got no answer at all;
- ``bytes_sent`` / ``bytes_received``: request and response bodies (``Content-Length``).

The same ``RequestCounter`` counts the plain boto3 baseline, registered on its client.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import Counter
from pathlib import Path
from typing import Any

ENV_FILE = "S3_BENCH_COUNTS_FILE"

# Runs drengine's CLI after installing the hook (``python -c LAUNCHER ARGS...``); the
# benchmarks directory and the repository root must be on PYTHONPATH.
LAUNCHER = (
    "import sys, s3_count_hook; s3_count_hook.install_from_env(); "
    "from drengine.cli.main import main; sys.exit(main())"
)


def _length(headers: Any) -> int:
    for name in ("X-Amz-Decoded-Content-Length", "Content-Length"):
        value = headers.get(name) if headers is not None else None
        if value:
            try:
                return int(value)
            except (TypeError, ValueError):
                continue
    return 0


class RequestCounter:
    """Thread-safe counts of S3 requests by operation; handlers for botocore's events."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.bytes_sent: Counter[str] = Counter()
        self.bytes_received: Counter[str] = Counter()

    # botocore calls handlers with keyword arguments only; a before-send handler must return
    # None (a value would replace the HTTP response).
    def before_send(self, request: Any = None, event_name: str = "", **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        sent = _length(getattr(request, "headers", None))
        with self._lock:
            self.requests[op] += 1
            self.bytes_sent[op] += sent

    def after_call(
        self, http_response: Any = None, model: Any = None, event_name: str = "", **_: Any
    ) -> None:
        op = getattr(model, "name", None) or event_name.rsplit(".", 1)[-1]
        status = getattr(http_response, "status_code", 0)
        received = _length(getattr(http_response, "headers", None))
        with self._lock:
            self.bytes_received[op] += received
            if status >= 300:
                self.errors[op] += 1

    def after_call_error(self, event_name: str = "", **_: Any) -> None:
        with self._lock:
            self.errors[event_name.rsplit(".", 1)[-1]] += 1

    def attach(self, client: Any) -> None:
        """Count every request of this boto3 S3 client."""
        events = client.meta.events
        events.register("before-send.s3", self.before_send)
        events.register("after-call.s3", self.after_call)
        events.register("after-call-error.s3", self.after_call_error)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "total_requests": sum(self.requests.values()),
                "requests": dict(sorted(self.requests.items())),
                "errors": dict(sorted(self.errors.items())),
                "bytes_sent": sum(self.bytes_sent.values()),
                "bytes_received": sum(self.bytes_received.values()),
            }


def install(counter: RequestCounter) -> None:
    """Attach ``counter`` to every S3 client any boto3 session of this process creates."""
    import boto3.session

    original = boto3.session.Session.client

    def client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        service = args[0] if args else kwargs.get("service_name")
        if service == "s3":
            counter.attach(made)
        return made

    boto3.session.Session.client = client  # type: ignore[method-assign]


def install_from_env() -> RequestCounter:
    """Install a counter and write its counts to ``$S3_BENCH_COUNTS_FILE`` at exit."""
    counter = RequestCounter()
    install(counter)
    target = os.environ.get(ENV_FILE)
    if target:

        def write() -> None:
            Path(target).write_text(json.dumps(counter.snapshot(), indent=2) + "\n")

        atexit.register(write)
    return counter
