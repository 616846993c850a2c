"""Listing the repository's directories, with every name checked against the layout.

Storage may hold objects the format never wrote: an NFS ``.nfs…`` file in ``data/``, a copy
left by a sync tool, a pack moved into the wrong directory. A listing yields only names of
the format (64 hex digits, in the directory their name says) and reports every other name
once, so one stray object never stops a command; ``check`` reports them as errors.
"""

from __future__ import annotations

import logging
import string
from dataclasses import dataclass, field

from drengine.repository import layout
from drengine.storage.base import Backend

log = logging.getLogger(__name__)

_HEX = frozenset(string.hexdigits.lower())
ID_LENGTH = 64  # hex digits of an object ID


def is_object_id(text: str) -> bool:
    return len(text) == ID_LENGTH and set(text) <= _HEX


@dataclass
class Strays:
    """Names in storage that are not objects of the format, by name: what is wrong."""

    found: dict[str, str] = field(default_factory=dict)
    # Packs stored under a wrong ``data/XX/`` directory: pack ID -> the name they have.
    misplaced: dict[bytes, str] = field(default_factory=dict)
    _said: set[str] = field(default_factory=set)

    def add(self, name: str, why: str) -> None:
        self.found[name] = why
        if name not in self._said:  # once per name for the life of the repository object
            self._said.add(name)
            log.warning("ignoring %s: %s", name, why)


@dataclass(frozen=True)
class Listed:
    oid: str
    size: int


def list_objects(backend: Backend, prefix: str, strays: Strays) -> list[Listed]:
    """Objects directly under ``prefix`` (``index/``, ``snapshots/``, ``keys/``, ``locks/``)."""
    out = []
    for info in backend.list(prefix):
        oid = info.name[len(prefix) :]
        if is_object_id(oid):
            out.append(Listed(oid, info.size))
        else:
            strays.add(info.name, "not an object of the repository format (stray file)")
    return out


def list_packs(backend: Backend, strays: Strays) -> dict[bytes, int]:
    """Pack ID -> size for every pack in its right place under ``data/``."""
    packs: dict[bytes, int] = {}
    for info in backend.list(layout.DATA):
        rest = info.name[len(layout.DATA) :]
        folder, _, oid = rest.rpartition("/")
        if not is_object_id(oid) or len(folder) != 2 or set(folder) - _HEX:
            strays.add(info.name, "not a pack of the repository format (stray file)")
        elif folder != oid[:2]:
            strays.misplaced[bytes.fromhex(oid)] = info.name
            strays.add(info.name, f"pack in the wrong directory (belongs in data/{oid[:2]}/)")
        else:
            packs[bytes.fromhex(oid)] = info.size
    return packs
