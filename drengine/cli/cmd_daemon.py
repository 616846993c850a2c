"""``drengine daemon --policies DIR``: run every policy on its schedules."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import typer

from drengine.cli.main import app


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


@app.command()
def daemon(
    policies: str = typer.Option(..., "--policies", help="Directory of policy files (*.yaml)."),
    state_file: str = typer.Option("", "--state", help="Job history database."),
    metrics_address: str = typer.Option(
        "127.0.0.1:9842", "--metrics-address", help="HOST:PORT for /metrics ('' for none)."
    ),
    log_json: bool = typer.Option(False, "--log-json", help="Log JSON lines."),
) -> None:
    """Run every policy's backup, prune, check and drill on its schedules (stop with SIGTERM)."""
    from drengine.scheduler.daemon import Daemon, DaemonOptions
    from drengine.scheduler.state import default_state_path

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonLines() if log_json else logging.Formatter("%(asctime)s %(levelname)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("apscheduler", "botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    d = Daemon(
        DaemonOptions(
            policies=Path(policies),
            state=Path(state_file) if state_file else default_state_path(),
            metrics_address=metrics_address,
        )
    )
    raise typer.Exit(d.serve())
