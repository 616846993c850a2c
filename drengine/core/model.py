"""Snapshots and trees: the data model every layer shares.

A tree is one directory: its entries (``Node``) sorted by name. It is stored as one blob of
canonical JSON, so an unchanged directory serializes to the same bytes and deduplicates across
snapshots. Names and symlink targets are raw bytes (base64 in JSON): a name that is not UTF-8
survives the round trip.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

NODE_TYPES = ("file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


@dataclass(slots=True)
class Node:
    name: bytes
    type: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    size: int = 0
    inode: int = 0
    device: int = 0
    links: int = 1
    rdev: int = 0
    target: bytes | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    content: list[bytes] = field(default_factory=list)
    content_hash: bytes | None = None
    subtree: bytes | None = None
    sparse: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": _b64(self.name),
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
            "user": self.user,
            "group": self.group,
            "mtime_ns": self.mtime_ns,
            "ctime_ns": self.ctime_ns,
            "inode": self.inode,
            "device": self.device,
            "links": self.links,
        }
        if self.type == "file":
            d["size"] = self.size
            d["content"] = [c.hex() for c in self.content]
            d["content_hash"] = self.content_hash.hex() if self.content_hash else None
            if self.sparse:
                d["sparse"] = True
        if self.type in ("chardev", "blockdev"):
            d["rdev"] = self.rdev
        if self.target is not None:
            d["target"] = _b64(self.target)
        if self.xattrs:
            d["xattrs"] = [[_b64(k), _b64(v)] for k, v in self.xattrs]
        if self.subtree is not None:
            d["subtree"] = self.subtree.hex()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        ch = d.get("content_hash")
        return cls(
            name=_unb64(d["name"]),
            type=d["type"],
            mode=int(d["mode"]),
            uid=int(d["uid"]),
            gid=int(d["gid"]),
            user=d.get("user", ""),
            group=d.get("group", ""),
            mtime_ns=int(d["mtime_ns"]),
            ctime_ns=int(d.get("ctime_ns", 0)),
            size=int(d.get("size", 0)),
            inode=int(d.get("inode", 0)),
            device=int(d.get("device", 0)),
            links=int(d.get("links", 1)),
            rdev=int(d.get("rdev", 0)),
            target=_unb64(d["target"]) if "target" in d else None,
            xattrs=[(_unb64(k), _unb64(v)) for k, v in d.get("xattrs", [])],
            content=[bytes.fromhex(c) for c in d.get("content", [])],
            content_hash=bytes.fromhex(ch) if ch else None,
            subtree=bytes.fromhex(d["subtree"]) if d.get("subtree") else None,
            sparse=bool(d.get("sparse", False)),
        )


def encode_tree(nodes: list[Node]) -> bytes:
    nodes = sorted(nodes, key=lambda n: n.name)
    doc = {"nodes": [n.to_dict() for n in nodes]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def decode_tree(data: bytes) -> list[Node]:
    return [Node.from_dict(d) for d in json.loads(data)["nodes"]]


@dataclass
class Snapshot:
    time: str
    host: str
    username: str
    paths: list[str]
    tags: list[str]
    tree: bytes
    program_version: str
    source: str = "files"
    parent: str | None = None
    original: str | None = None  # for a copy: the snapshot ID in the repository copied from
    summary: dict[str, Any] = field(default_factory=dict)
    id: str = ""  # the object name; not part of the stored document

    def to_bytes(self) -> bytes:
        doc = {
            "version": 1,
            "time": self.time,
            "host": self.host,
            "username": self.username,
            "paths": self.paths,
            "tags": self.tags,
            "tree": self.tree.hex(),
            "program_version": self.program_version,
            "source": {"kind": self.source},
            "parent": self.parent,
            **({"original": self.original} if self.original else {}),
            "summary": self.summary,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes, snapshot_id: str) -> Snapshot:
        d = json.loads(data)
        return cls(
            time=d["time"],
            host=d["host"],
            username=d.get("username", ""),
            paths=list(d["paths"]),
            tags=list(d.get("tags", [])),
            tree=bytes.fromhex(d["tree"]),
            program_version=d.get("program_version", ""),
            source=d.get("source", {}).get("kind", "files"),
            parent=d.get("parent"),
            original=d.get("original"),
            summary=d.get("summary", {}),
            id=snapshot_id,
        )
