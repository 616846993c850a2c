"""Every error drengine raises on purpose, and the exit code the CLI maps it to.

    DrengineError                       exit 1, base of everything below
    ├── UsageError                      exit 2  bad arguments, unknown snapshot, no password
    │   └── SnapshotNotFound            exit 2
    ├── RepositoryNotFound              exit 10 nothing (or no repository) at that location
    ├── RepositoryLocked                exit 11 another process holds a conflicting lock
    ├── WrongPassword                   exit 12 no key file opens with that password
    ├── RepositoryExists                exit 1  init on a location that already holds one
    ├── UnsupportedFormat               exit 1  a newer format version than this program reads
    ├── StorageError                    exit 1  the backend failed (I/O, network)
    │   ├── ObjectNotFound              exit 1  an object that should be there is missing
    │   └── ObjectExists                exit 1  put-if-absent found the name taken
    ├── IntegrityError                  exit 1  an object failed authentication or its hash
    ├── LockLost                        exit 1  our lock went stale or was removed meanwhile
    ├── OutputClosed                    exit 141 the reader of stdout went away (``| head``)
    ├── RestoreError                    exit 1  a restore could not complete (target problems)
    ├── SourceFailed                    exit 13 a source could not be read or its dump failed
    ├── HookFailed                      exit 14 a --before/--after hook failed
    ├── DrillFailed                     exit 20 a drill's restore or verification failed
    ├── TargetMissed                    exit 21 a drill passed but missed its RTO or RPO target
    ├── ReportInvalid                   exit 22 a report's signature, key or evidence fails
    └── Cancelled                       exit 130 the operation's cancel event was set (SIGTERM)

Callers catch ``DrengineError``; the CLI prints ``str(error)`` as one sentence.
"""

from __future__ import annotations


class DrengineError(Exception):
    exit_code = 1


class UsageError(DrengineError):
    exit_code = 2


class SnapshotNotFound(UsageError):
    pass


class RepositoryNotFound(DrengineError):
    exit_code = 10


class RepositoryLocked(DrengineError):
    exit_code = 11


class WrongPassword(DrengineError):
    exit_code = 12


class RepositoryExists(DrengineError):
    pass


class UnsupportedFormat(DrengineError):
    pass


class StorageError(DrengineError):
    pass


class ObjectNotFound(StorageError):
    pass


class ObjectExists(StorageError):
    pass


class IntegrityError(DrengineError):
    pass


class LockLost(DrengineError):
    """Our lock may have looked stale to others (a paused process) or was removed: what we
    relied on it for (no prune meanwhile) is no longer proven."""


class OutputClosed(DrengineError):
    """Standard output's reader went away. Not an OSError on purpose: click turns an EPIPE
    OSError into a silent exit 1; this one reaches the CLI, which stops quietly."""

    exit_code = 141  # 128 + SIGPIPE, as a shell reports for `cat` in `cat f | head`


class RestoreError(DrengineError):
    pass


class SourceFailed(DrengineError):
    """A source could not be read (server down, wrong password, no such database or
    device) or its producer failed after its last byte: no snapshot is written."""

    exit_code = 13


class HookFailed(DrengineError):
    """A consistency hook failed: before the backup (nothing read), or after it."""

    exit_code = 14


class DrillFailed(DrengineError):
    """A restore drill could not restore the snapshot or the copy failed a check: the
    backup is not proven restorable (the report says what and where)."""

    exit_code = 20


class TargetMissed(DrengineError):
    """A drill restored and verified the snapshot but missed its RTO or RPO target."""

    exit_code = 21


class ReportInvalid(DrengineError):
    """A signed report does not verify: malformed, changed after signing, signed by
    another key, or naming snapshots that are not in the repository."""

    exit_code = 22


class Cancelled(DrengineError):
    """An operation stopped at a safe point because its cancellation event was set (the
    daemon on SIGTERM): nothing half-done is recorded, the lock is released."""

    exit_code = 130  # 128 + SIGINT, as for an interrupted command
