"""``drengine report``: gather each policy's period from its repository and the job history,
then render it (text, signed JSON, or a standalone HTML page)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from drengine.core.errors import UsageError
from drengine.policy.model import PolicyFile


def period(since: str, until: str, now: datetime) -> tuple[datetime, datetime]:
    """The period: dates or times as given (UTC unless an offset is written); by default
    from the start of the current quarter until now."""

    def parse(text: str, what: str) -> datetime:
        try:
            t = datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(f"--{what} {text!r} is not a date (2026-10-01) or time") from None
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    end = parse(until, "until") if until else now
    if since:
        start = parse(since, "since")
    else:
        start = datetime(now.year, 3 * ((now.month - 1) // 3) + 1, 1, tzinfo=UTC)
    if start >= end:
        raise UsageError("the period is empty: --since must come before --until")
    return start, end


def _policies(files: list[str], directory: str) -> list[PolicyFile]:
    from drengine.cli.cmd_policy import policy_or_exit

    paths = list(files)
    if directory:
        found = sorted(str(p) for p in Path(directory).glob("*.yaml"))
        if not found:
            raise UsageError(f"no policy files (*.yaml) in {directory}")
        paths += found
    if not paths:
        raise UsageError("name the policies: --policy FILE (repeatable) or --policies DIR")
    return [policy_or_exit(p) for p in paths]


def build_report(
    files: list[str], directory: str, since: str, until: str, fmt: str, state_file: str
) -> str:
    from drengine.reports.period import History, compliance_document, policy_section
    from drengine.repository.reports import publish_signer
    from drengine.scheduler.run import open_policy_repository
    from drengine.scheduler.state import StateDB, default_state_path

    if fmt not in ("text", "json", "html"):
        raise UsageError(f"--format {fmt!r}: use text, json or html")
    start, end = period(since, until, datetime.now(UTC))
    pols = _policies(files, directory)
    state_path = Path(state_file) if state_file else default_state_path()
    state = StateDB(state_path) if state_path.exists() else None
    sections = []
    signer = None
    try:
        for p in pols:
            repo = open_policy_repository(p)
            signer = signer or repo
            history = None
            if state is not None and state.first_start(p.name) is not None:
                jobs = state.jobs_between(p.name, "backup", start.timestamp(), end.timestamp())
                history = History(
                    run=len(jobs),
                    failed=sum(1 for j in jobs if j.outcome == "failure"),
                    # All of them, not only the period's: a gap open when it began counts.
                    success_times=[
                        datetime.fromtimestamp(t, UTC)
                        for t in state.backup_times(p.name)
                        if t < end.timestamp()
                    ],
                )
            sections.append(policy_section(p, repo, start, end, history))
    finally:
        if state is not None:
            state.close()
    doc = compliance_document(sections, start, end)
    if fmt == "json":
        assert signer is not None
        key, _ = publish_signer(signer)
        doc["signed_by_repository"] = signer.id
        return json.dumps(key.sign(doc), indent=2, sort_keys=True) + "\n"
    from drengine.reports.render import render_html, render_text

    return render_html(doc) if fmt == "html" else render_text(doc)
