"""Settings of a storage backend, as an object an operation is given.

A long-lived process (the daemon) runs policies with different S3 settings side by side, so
no backend reads them from the process environment while it works: the CLI reads the
environment once (``S3Options.from_env``), lays its flags over it, and passes the object.
boto3's own chain (``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, credential
files) still applies where an option is not set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drengine.core.errors import UsageError

ENV_STORAGE_CLASS = "DRENGINE_S3_STORAGE_CLASS"
ENV_SSE = "DRENGINE_S3_SSE"
ENV_SSE_KMS_KEY_ID = "DRENGINE_S3_SSE_KMS_KEY_ID"
ENV_UNSAFE_NO_CONDITIONAL = "DRENGINE_S3_UNSAFE_NO_CONDITIONAL_WRITES"
ENV_CONNECT_TIMEOUT = "DRENGINE_S3_CONNECT_TIMEOUT"
ENV_READ_TIMEOUT = "DRENGINE_S3_READ_TIMEOUT"
ENV_RETRY_BUDGET = "DRENGINE_S3_RETRY_BUDGET"


@dataclass(frozen=True)
class S3Options:
    endpoint_url: str | None = None  # None: boto3's (AWS_ENDPOINT_URL, or AWS itself)
    region: str | None = None  # None: boto3's (AWS_DEFAULT_REGION, the profile)
    storage_class: str | None = None
    sse: str | None = None
    sse_kms_key_id: str | None = None
    unsafe_no_conditional_writes: bool = False
    connect_timeout: float | None = None  # None: the backend's default
    read_timeout: float | None = None
    retry_budget: float | None = None  # seconds the retry wrapper keeps trying

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Options:
        """The ``DRENGINE_S3_*`` variables; ``UsageError`` for a malformed number."""
        return cls(
            storage_class=env.get(ENV_STORAGE_CLASS) or None,
            sse=env.get(ENV_SSE) or None,
            sse_kms_key_id=env.get(ENV_SSE_KMS_KEY_ID) or None,
            unsafe_no_conditional_writes=env.get(ENV_UNSAFE_NO_CONDITIONAL, "").lower()
            in ("1", "true", "yes"),
            connect_timeout=seconds(env, ENV_CONNECT_TIMEOUT),
            read_timeout=seconds(env, ENV_READ_TIMEOUT),
            retry_budget=seconds(env, ENV_RETRY_BUDGET),
        )

    def with_given(self, **values: Any) -> S3Options:
        """These options with the given values laid over them (None and "" are not given)."""
        return dataclasses.replace(self, **{k: v for k, v in values.items() if v not in (None, "")})

    def backend_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``S3Backend`` for what is set."""
        out: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "storage_class": self.storage_class,
            "sse": self.sse,
            "sse_kms_key_id": self.sse_kms_key_id,
            "unsafe_no_conditional_writes": self.unsafe_no_conditional_writes,
        }
        if self.connect_timeout is not None:
            out["connect_timeout"] = self.connect_timeout
        if self.read_timeout is not None:
            out["read_timeout"] = self.read_timeout
        return out


def seconds(env: Mapping[str, str], name: str) -> float | None:
    """A positive number of seconds from ``env``, or None if unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise UsageError(f"{name} must be a positive number of seconds, not {raw!r}")
    return value


@dataclass(frozen=True)
class BackendSpec:
    """What another process (a worker of a restore or check) opens to reach the same storage
    with the same settings: ``storage.url.open_backend(url, s3)``."""

    url: str
    s3: S3Options | None = None
