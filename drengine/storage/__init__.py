"""Object storage: the ``Backend`` contract and its implementations."""

from drengine.storage.base import Backend, ObjectInfo
from drengine.storage.url import open_backend

__all__ = ["Backend", "ObjectInfo", "open_backend"]
