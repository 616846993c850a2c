"""``forget`` as an operation: decide under the lock which snapshots go, and remove them.

The CLI's ``forget``, ``run POLICY`` and the daemon all call ``run_forget``, so retention
is applied by one piece of code wherever it runs (the policy itself is ``forget.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from drengine.core.errors import IntegrityError, UsageError
from drengine.core.model import Snapshot
from drengine.engine.forget import (
    DEFAULT_GROUP_BY,
    GroupDecision,
    GroupKey,
    Policy,
    apply_policy,
    matches_filter,
    parse_taglist,
    remove_snapshots,
)
from drengine.repository.locks import locked
from drengine.repository.repo import Repository

log = logging.getLogger(__name__)


@dataclass
class ForgetOptions:
    policy: Policy = field(default_factory=Policy)
    snapshot_ids: Sequence[str] = ()  # instead of a policy: exactly these snapshots
    hosts: Sequence[str] = ()
    tags: Sequence[str] = ()  # TAG[,TAG] lists: a snapshot matches one list wholly
    group_by: tuple[str, ...] | None = None  # None: host,paths
    dry_run: bool = False

    def check(self) -> None:
        """``UsageError`` for a combination that cannot mean what the user wants."""
        if self.snapshot_ids and (
            not self.policy.is_empty() or self.hosts or self.tags or self.group_by is not None
        ):
            raise UsageError(
                "snapshot IDs cannot be combined with --keep-*, --host, --tag or --group-by"
            )
        if not self.snapshot_ids and self.policy.is_empty():
            raise UsageError(
                "no policy given: use --keep-* options or name snapshot IDs "
                "(refusing to remove every snapshot)"
            )


@dataclass
class ForgetResult:
    decisions: list[GroupDecision]
    removed: list[str]  # snapshot IDs removed (none in a dry run)

    @property
    def doomed(self) -> list[str]:
        return [s.id for d in self.decisions for s in d.remove]


def run_forget(repo: Repository, opts: ForgetOptions, now: datetime | None = None) -> ForgetResult:
    opts.check()
    # Lock before listing, as restic does: two overlapping forgets must not each decide on a
    # list the other is changing and together remove more than either policy allows.
    with locked(repo, exclusive=not opts.dry_run, operation="forget") as lock:
        if opts.snapshot_ids:
            decisions = [_by_ids(repo, opts.snapshot_ids)]
        else:
            taglists = [parse_taglist(t) for t in opts.tags]
            snaps = [s for s in repo.snapshots() if matches_filter(s, opts.hosts, taglists)]
            fields = DEFAULT_GROUP_BY if opts.group_by is None else opts.group_by
            decisions = apply_policy(snaps, opts.policy, fields, now=now or datetime.now(UTC))
        doomed = [s.id for d in decisions for s in d.remove]
        removed = [] if opts.dry_run else remove_snapshots(repo, doomed, lock)
    return ForgetResult(decisions, removed)


def _by_ids(repo: Repository, refs: Sequence[str]) -> GroupDecision:
    # Resolve every reference before deleting anything: one typo removes nothing.
    snaps: dict[str, Snapshot] = {}
    for ref in refs:
        if ref == "latest":
            snap = repo.find_snapshot(ref)
        else:
            oid = repo.resolve_snapshot_id(ref)
            try:
                snap = repo.load_snapshot(oid)
            except IntegrityError as e:  # a damaged snapshot can still be forgotten by ID
                log.warning("%s; removing it all the same", e)
                snap = Snapshot("", "", "", [], [], b"", "", id=oid)
        snaps.setdefault(snap.id, snap)
    return GroupDecision(GroupKey(), [], list(snaps.values()))
