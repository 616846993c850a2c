"""Notifications: on a failure, on the first success after failures (recovery), and when the
newest successful backup is older than the RPO target (breach).

Each event is one JSON object: POSTed to every webhook of the policy (retried three times
with a pause, each attempt bounded by the policy's ``notify.timeout``), and given on the
standard input of the policy's notify command. A notification that cannot be delivered is
logged; it never fails the job that sent it.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from typing import Any

from drengine import __version__
from drengine.policy.model import PolicyFile, span_seconds

log = logging.getLogger(__name__)

_ATTEMPTS = 3
_PAUSE = 1.0


def event(p: PolicyFile, kind: str, **fields: Any) -> dict[str, Any]:
    return {
        "event": kind,  # failure, recovery, rpo_breach
        "policy": p.name,
        "host": socket.gethostname(),
        "time": datetime.now(UTC).isoformat(),
        "program_version": __version__,
        **fields,
    }


def send(p: PolicyFile, ev: dict[str, Any]) -> list[str]:
    """Deliver ``ev`` everywhere the policy says; the deliveries that failed, as sentences."""
    timeout = float(span_seconds(p.notify.timeout))
    body = json.dumps(ev, sort_keys=True).encode()
    failed = []
    for url in p.notify.webhooks:
        why = _post(url, body, timeout)
        if why:
            failed.append(f"webhook {url}: {why}")
    if p.notify.command:
        why = _command(p.notify.command, body, timeout)
        if why:
            failed.append(f"notify command {p.notify.command!r}: {why}")
    for f in failed:
        log.warning("notification not delivered: %s", f)
    return failed


def _post(url: str, body: bytes, timeout: float) -> str:
    why = ""
    for attempt in range(_ATTEMPTS):
        req = urllib.request.Request(
            url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"drengine/{__version__}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if 200 <= resp.status < 300:
                    return ""
                why = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            why = f"HTTP {e.code}"
            if 400 <= e.code < 500 and e.code != 429:
                return why  # the request is wrong: sending it again will not help
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            why = str(getattr(e, "reason", e))
        if attempt + 1 < _ATTEMPTS:
            time.sleep(_PAUSE * (attempt + 1))
    return why


def _command(cmd: str, body: bytes, timeout: float) -> str:
    try:
        out = subprocess.run(
            ["/bin/sh", "-c", cmd], input=body, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:.0f} s"
    except OSError as e:
        return e.strerror or str(e)
    if out.returncode != 0:
        tail = out.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return f"exited with status {out.returncode} {tail[0]}".rstrip()
    return ""
