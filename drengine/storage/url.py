"""Turn a repository URL into a backend."""

from __future__ import annotations

from drengine.core.errors import UsageError
from drengine.storage.base import Backend


def open_backend(url: str) -> Backend:
    """``PATH``, ``file://PATH`` or ``memory:`` (tests); ``s3://`` arrives with the S3 issue."""
    from drengine.storage.local import LocalBackend
    from drengine.storage.memory import MemoryBackend

    if not url:
        raise UsageError("no repository given: use --repo or set DRENGINE_REPOSITORY")
    if url.startswith("file://"):
        return LocalBackend(url[len("file://") :])
    if url == "memory:":
        return MemoryBackend()
    scheme, sep, _ = url.partition("://")
    if sep and scheme.isalnum():
        raise UsageError(f"unsupported repository URL scheme {scheme!r} in {url}")
    return LocalBackend(url)
