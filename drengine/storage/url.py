"""Turn a repository URL into a backend."""

from __future__ import annotations

import os

from drengine.core.errors import UsageError
from drengine.storage.base import Backend
from drengine.storage.options import BackendSpec, S3Options


def open_backend(url: str, s3: S3Options | None = None) -> Backend:
    """``PATH``, ``file://PATH``, ``s3://BUCKET[/PREFIX]`` or ``memory:`` (tests); ``s3``:
    the S3 settings (default: the ``DRENGINE_S3_*`` environment, read now)."""
    from drengine.storage.local import LocalBackend
    from drengine.storage.memory import MemoryBackend

    if not url:
        raise UsageError("no repository given: use --repo or set DRENGINE_REPOSITORY")
    if url.startswith("file://"):
        return LocalBackend(url[len("file://") :])
    if url == "memory:":
        return MemoryBackend()
    if url.startswith("s3://"):
        from drengine.storage.retry import RetryingBackend, RetryPolicy
        from drengine.storage.s3 import S3Backend

        opts = s3 if s3 is not None else S3Options.from_env(os.environ)
        # Network storage fails transiently; the retry wrapper rides that out (storage.md).
        budget = opts.retry_budget
        policy = RetryPolicy() if budget is None else RetryPolicy(budget=budget)
        backend = RetryingBackend(S3Backend.from_url(url, opts), policy)
        backend.spec = BackendSpec(url, opts)
        return backend
    scheme, sep, _ = url.partition("://")
    if sep and scheme.isalnum():
        raise UsageError(f"unsupported repository URL scheme {scheme!r} in {url}")
    return LocalBackend(url)


def reopen_spec(backend: Backend) -> BackendSpec | None:
    """How another process opens the same storage (``open_backend(spec.url, spec.s3)``), or
    None if it cannot: storage in memory or a fault-injecting test backend. A cache in front
    of the storage holds no packs, so the storage behind it is what is opened; S3 comes with
    the options (and so the retry policy) it was opened with."""
    from drengine.storage.cache import CachingBackend
    from drengine.storage.local import LocalBackend
    from drengine.storage.retry import RetryingBackend

    while type(backend) is CachingBackend:
        backend = backend.inner
    if type(backend) is LocalBackend:
        return BackendSpec("file://" + os.path.abspath(backend.location))
    if type(backend) is RetryingBackend:
        return backend.spec
    return None
