"""A policy file's typed model: one protected system, what to back up, when, how long to keep
it, what to check and whom to tell (``policies/*.yaml``; ``docs/policies.md``).

Validated by pydantic with unknown keys rejected; each value is checked where it is read (a
cron field, a duration, a source URL, a readable password file), so that ``policy check``
finds what a 3 a.m. run would trip over. The keys follow borgmatic's where it has one
(``keep_daily``, ``before``/``after``/``on_failure`` hooks).
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from drengine.core.errors import UsageError

_SPAN = re.compile(r"(\d+)([wdhms])")
_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def span_seconds(text: str) -> int:
    """``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``: whole seconds, more than zero."""
    s = text.strip()
    pos, total, used = 0, 0, set()
    while pos < len(s):
        m = _SPAN.match(s, pos)
        if m is None or m.group(2) in used:
            break
        used.add(m.group(2))
        total += int(m.group(1)) * _SECONDS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise ValueError(f"{text!r} is not a duration: use numbers with w, d, h, m, s, like 1h30m")
    return total


_TARGET = re.compile(r"(\d+)(ms|[wdhms])")
_MS = {"ms": 1, **{k: v * 1000 for k, v in _SECONDS.items()}}


def span_ms(text: str) -> int:
    """A target: a duration as ``span_seconds`` reads, or in milliseconds (``500ms``)."""
    s = text.strip()
    pos, total, used = 0, 0, set()
    while pos < len(s):
        m = _TARGET.match(s, pos)
        if m is None or m.group(2) in used:
            break
        used.add(m.group(2))
        total += int(m.group(1)) * _MS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s) or total <= 0:
        raise ValueError(f"{text!r} is not a duration: use numbers with w, d, h, m, s, ms")
    return total


def _target(v: str) -> str:
    span_ms(v)
    return v


def _span(v: str) -> str:
    span_seconds(v)
    return v


def _keep_within(v: str) -> str:
    from drengine.engine.forget import parse_duration

    try:
        parse_duration(v)
    except UsageError as e:
        raise ValueError(str(e).replace("invalid duration", "not a duration")) from None
    return v


def _schedule(v: str) -> str:
    from drengine.policy.schedule import parse_schedule

    parse_schedule(v, "UTC")  # the timezone is checked on its own
    return v


Span = Annotated[str, AfterValidator(_span)]
Schedule = Annotated[str, AfterValidator(_schedule)]
Count = Annotated[int, Field(ge=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Hooks(_Strict):
    before: list[str] = []
    after: list[str] = []
    on_failure: list[str] = []


class Retention(_Strict):
    keep_last: Count = 0
    keep_hourly: Count = 0
    keep_daily: Count = 0
    keep_weekly: Count = 0
    keep_monthly: Count = 0
    keep_yearly: Count = 0
    keep_within: Annotated[str, AfterValidator(_keep_within)] | None = None
    keep_tags: list[str] = []

    @model_validator(mode="after")
    def _keeps_something(self) -> Retention:
        if self.is_empty():
            raise ValueError(
                "keeps nothing: give at least one keep_* (refusing a policy that would "
                "remove every snapshot)"
            )
        return self

    def is_empty(self) -> bool:
        return bool(self.to_policy().is_empty())

    def to_policy(self) -> Any:
        """The engine's ``forget.Policy`` (what ``forget --keep-*`` builds)."""
        from drengine.engine.forget import Duration, Policy, parse_duration, parse_taglist

        return Policy(
            last=self.keep_last,
            hourly=self.keep_hourly,
            daily=self.keep_daily,
            weekly=self.keep_weekly,
            monthly=self.keep_monthly,
            yearly=self.keep_yearly,
            within=parse_duration(self.keep_within) if self.keep_within else Duration(),
            tags=tuple(parse_taglist(t) for t in self.keep_tags),
        )


class Job(_Strict):
    schedule: Schedule


class CheckJob(_Strict):
    schedule: Schedule
    read_data_subset: Annotated[str, Field(pattern=r"^(100|[1-9]?[0-9](\.[0-9]+)?)%$")] | None = (
        None
    )


class Targets(_Strict):
    rpo: Annotated[str, AfterValidator(_target)]  # at most this long without a backup
    rto: Annotated[str, AfterValidator(_target)]  # a full restore within this

    @property
    def rpo_ms(self) -> int:
        return span_ms(self.rpo)

    @property
    def rto_ms(self) -> int:
        return span_ms(self.rto)


class DrillCheck(_Strict):
    sql: Annotated[str, Field(min_length=1)]
    expect: str  # the result as text: fields joined by tabs, rows by newlines
    # Where it runs: a database kind of the snapshot (default: its one database kind) and,
    # for a snapshot of several databases, which one (default: the only or first one).
    kind: Literal["postgresql", "mysql", "sqlite"] | None = None
    database: str | None = None


def _scratch_server(v: str, schemes: tuple[str, ...]) -> str:
    from drengine.sources.my_session import MyTarget
    from drengine.sources.pg_session import PgTarget
    from drengine.sources.urls import split_url

    try:
        u = split_url(v)
        if u.scheme not in schemes:
            raise UsageError(f"{v}: give a {schemes[0]}:// URL here")
        (PgTarget if schemes[0] == "postgresql" else MyTarget).from_url(u)  # its options
    except UsageError as e:
        raise ValueError(str(e)) from None
    if u.path.strip("/"):
        raise ValueError(
            f"{v}: name no database; each drill makes its own scratch database and drops it"
        )
    return v


def _scratch_pg(v: str) -> str:
    return _scratch_server(v, ("postgresql", "postgres"))


def _scratch_my(v: str) -> str:
    return _scratch_server(v, ("mysql", "mariadb"))


def _sandbox_dir(v: str) -> str:
    if not os.path.isabs(v):
        raise ValueError(f"{v!r} must be an absolute path")
    if os.path.exists(v) and not os.path.isdir(v):
        raise ValueError(f"{v} is not a directory")
    return v


class Drill(_Strict):
    schedule: Schedule
    snapshot: Literal["latest", "random"] = "latest"
    checks: list[DrillCheck] = []
    # Where the sandbox goes (default DRENGINE_DRILL_DIR, else /var/tmp).
    sandbox_dir: Annotated[str, AfterValidator(_sandbox_dir)] | None = None
    # Servers for scratch databases, instead of throwaway servers started in the sandbox.
    postgresql: Annotated[str, AfterValidator(_scratch_pg)] | None = None
    mysql: Annotated[str, AfterValidator(_scratch_my)] | None = None
    # The OS user throwaway servers run as when drengine runs as root.
    sandbox_user: str | None = None


class Notify(_Strict):
    webhooks: list[Annotated[str, Field(pattern=r"^https?://[^\s/]+")]] = []
    command: str | None = None
    timeout: Span = "10s"


class S3(_Strict):
    endpoint: Annotated[str, Field(pattern=r"^https?://")] | None = None
    region: str | None = None
    storage_class: str | None = None
    sse: Literal["AES256", "aws:kms"] | None = None
    sse_kms_key_id: str | None = None
    connect_timeout: Annotated[float, Field(gt=0)] | None = None
    read_timeout: Annotated[float, Field(gt=0)] | None = None
    retry_budget: Annotated[float, Field(gt=0)] | None = None


class PolicyFile(_Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    repository: Annotated[str, Field(min_length=1)]
    password_file: str | None = None
    password_command: str | None = None
    sources: Annotated[list[str], Field(min_length=1)]
    exclude: list[str] = []
    hooks: Hooks = Hooks()
    schedule: Schedule
    timezone: str = "UTC"
    retention: Retention
    prune: Job | None = None
    check: CheckJob | None = None
    targets: Targets | None = None
    drill: Drill | None = None
    notify: Notify = Notify()
    s3: S3 | None = None

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: list[str]) -> list[str]:
        from drengine.sources.urls import source_from_url

        for s in v:
            if "://" in s:
                try:
                    source_from_url(s)  # parses it fully; connects to nothing
                except UsageError as e:
                    raise ValueError(str(e)) from None
            elif not s.startswith("/"):
                raise ValueError(f"{s!r}: a path must be absolute (or a source URL)")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {v!r} (use an IANA name like Europe/Berlin)"
            ) from None
        return v

    @field_validator("password_file")
    @classmethod
    def _password_file(cls, v: str | None) -> str | None:
        if v is not None:
            if not os.path.isabs(v):
                raise ValueError(f"{v!r} must be an absolute path")
            try:
                with open(v, "rb") as f:
                    f.read(1)
            except OSError as e:
                raise ValueError(f"cannot read {v}: {e.strerror or e}") from None
        return v

    @model_validator(mode="after")
    def _whole(self) -> PolicyFile:
        if (self.password_file is None) == (self.password_command is None):
            raise ValueError("give exactly one of password_file and password_command")
        if self.s3 is not None and not self.repository.startswith("s3://"):
            raise ValueError("s3 options are for an s3:// repository")
        return self

    def password_source(self) -> tuple[str, str]:
        """("file", path) or ("command", command)."""
        if self.password_file is not None:
            return "file", self.password_file
        assert self.password_command is not None
        return "command", self.password_command


def source_kind(source: str) -> str:
    return source.split("://", 1)[0] if "://" in source else "files"
