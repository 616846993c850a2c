"""Tree blobs decoded in C: msgspec parses and checks a well-formed tree in one pass.

``model.decode_tree`` is the definition: it parses with the json module and checks each
node's fields in Python (``Node.from_dict``), which cost ~60 % of a restore's plan (every
node of the snapshot; ~20 µs per node). Here the same checks are msgspec types and
constraints, so a tree that passes them comes back as the same nodes several times faster.
Anything else (a field missing or out of range, a node the reference would mark invalid,
JSON the two parsers might read differently) takes the reference path, which then says
what is wrong. Only ASCII input is tried: drengine writes trees as ASCII, and the json
module refuses invalid UTF-8 inside values that msgspec skips. A differential test holds
this decoder to the reference on valid, damaged and crafted trees.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from drengine.core import model
from drengine.core.model import Node

_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1

_Id = Annotated[str, Meta(min_length=64, max_length=64)]  # a blob ID in hex
_Time = Annotated[int, Meta(ge=_I64_MIN, le=_I64_MAX)]
_Id32 = Annotated[int, Meta(ge=0, le=_U32)]
# msgspec bounds stop at int64: the uint64 fields are checked after decoding.
_Unsigned = Annotated[int, Meta(ge=0)]


class _WireNode(Struct, gc=False):
    # The bounds and defaults of ``model._well_formed``; unknown keys are ignored there too.
    name: bytes  # base64, as strictly as binascii's strict mode
    type: Literal["file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket"]
    mode: Annotated[int, Meta(ge=0, le=0o7777)]
    uid: _Id32
    gid: _Id32
    mtime_ns: _Time
    ctime_ns: _Time = 0
    size: Annotated[int, Meta(ge=0, le=_I64_MAX)] = 0
    inode: _Unsigned = 0
    device: _Unsigned = 0
    links: _Unsigned = 1
    rdev: _Unsigned = 0
    user: str = ""
    group: str = ""
    damaged: str = ""
    target: bytes | UnsetType = UNSET  # present means base64 (null is invalid)
    xattrs: list[tuple[bytes, bytes]] = []
    content: list[_Id] = []
    content_hash: _Id | None = None
    subtree: _Id | None = None
    sparse: bool = False


class _WireTree(Struct, gc=False):
    nodes: list[_WireNode]


_DECODER = msgspec.json.Decoder(_WireTree)


def decode_tree(data: bytes) -> list[Node]:
    """The nodes of a tree blob, exactly as ``model.decode_tree`` gives them."""
    if data.isascii():
        try:
            return _nodes(_DECODER.decode(data).nodes)
        except (msgspec.DecodeError, ValueError):
            pass  # the reference decides, and names what is wrong
    return model.decode_tree(data)


# Owner names are the same few strings in every node: one object each instead of a copy per
# node (~100 bytes) in the trees a restore's plan or a check holds decoded.
_OWNERS: dict[str, str] = {}


def _owner(name: str) -> str:
    if len(_OWNERS) > 4096:
        _OWNERS.clear()  # a crafted tree of many names must not grow this without bound
    return _OWNERS.setdefault(name, name)


def _nodes(wire: list[_WireNode]) -> list[Node]:
    fromhex = bytes.fromhex
    owners, owner = _OWNERS, _owner
    out = []
    for w in wire:
        if (w.inode | w.device | w.links | w.rdev) > _U64:
            raise ValueError("out of range")
        kind, target, ch, sub = w.type, w.target, w.content_hash, w.subtree
        if (
            (kind == "file" and ch is None)
            or (kind == "dir" and sub is None)
            or (kind == "symlink" and target is UNSET)
        ):
            raise ValueError("a required field is missing")
        out.append(
            Node(
                w.name,
                kind,
                w.mode,
                w.uid,
                w.gid,
                owners.get(w.user) or owner(w.user),
                owners.get(w.group) or owner(w.group),
                w.mtime_ns,
                w.ctime_ns,
                w.size,
                w.inode,
                w.device,
                w.links,
                w.rdev,
                None if target is UNSET else target,
                w.xattrs,
                [fromhex(c) for c in w.content],
                None if ch is None else fromhex(ch),
                None if sub is None else fromhex(sub),
                w.sparse,
                w.damaged,
            )
        )
    return out
