"""Snapshots and trees: the data model every layer shares.

A tree is one directory: its entries (``Node``) sorted by name. It is stored as one blob of
canonical JSON, so an unchanged directory serializes to the same bytes and deduplicates across
snapshots. Names and symlink targets are raw bytes (base64 in JSON): a name that is not UTF-8
survives the round trip.
"""

from __future__ import annotations

import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

NODE_TYPES = ("file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket")


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _unb64(text: str) -> bytes:
    # Strict mode refuses exactly what ``b64decode(validate=True)`` refuses (anything
    # outside the alphabet, bad padding) without its regular expression: 4x faster.
    return binascii.a2b_base64(text, strict_mode=True)


def load_json(data: bytes | str) -> Any:
    """``json.loads`` for stored documents: nesting deeper than the parser's recursion limit
    (a crafted ``[[[[...``) is a ``ValueError`` like any malformed JSON, not a
    ``RecursionError`` that escapes every handler."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


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
    damaged: str = ""  # set by ``repair snapshots``: what was lost from this entry
    # Not stored: why this node, as read from a tree, cannot be trusted ("" if it can).
    invalid: str = field(default="", compare=False)

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
        if self.damaged:
            d["damaged"] = self.damaged
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Node:
        """A node from its JSON object. Fields that are missing, of the wrong type or out of
        range do not raise: they take a default and are named in ``invalid``, so one bad
        entry costs that entry only (restore skips it, check reports it)."""
        fast = _well_formed(d)
        return fast if fast is not None else _NodeReader(d).node()


# Bounds of what a file system can hold: anything beyond them is damage or a crafted tree
# (a mode or uid of 2**40 once aborted a whole restore with OverflowError).
_U32 = (1 << 32) - 1
_U64 = (1 << 64) - 1
_I64 = (-(1 << 63), (1 << 63) - 1)
_ID_HEX = 64


def _int_in(v: object, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _id_or_none(v: object) -> bytes | None:
    if type(v) is not str or len(v) != _ID_HEX:
        return None
    try:
        return bytes.fromhex(v)
    except ValueError:
        return None


def _well_formed(d: object) -> Node | None:
    """The node of a JSON object that passes every check of ``_NodeReader``, built without
    its bookkeeping (check, restore and ls decode every node of every tree); None when
    anything is off, and the reader then says what. The checks are written out inline:
    a restore's plan decodes every node of the snapshot, and a call per field cost half."""
    if type(d) is not dict:
        return None
    try:
        g = d.get
        kind, mode, uid, gid, mtime = d["type"], d["mode"], d["uid"], d["gid"], d["mtime_ns"]
        ctime, size, inode = g("ctime_ns", 0), g("size", 0), g("inode", 0)
        device, links, rdev = g("device", 0), g("links", 1), g("rdev", 0)
        user, group, damaged = g("user", ""), g("group", ""), g("damaged", "")
        if (
            kind not in NODE_TYPES
            # a bool is an int to isinstance, not to type()
            or type(mode) is not int
            or type(uid) is not int
            or type(gid) is not int
            or type(mtime) is not int
            or type(ctime) is not int
            or type(size) is not int
            or type(inode) is not int
            or type(device) is not int
            or type(links) is not int
            or type(rdev) is not int
            or not 0 <= mode <= 0o7777
            or not 0 <= uid <= _U32
            or not 0 <= gid <= _U32
            or not _I64[0] <= mtime <= _I64[1]
            or not _I64[0] <= ctime <= _I64[1]
            or not 0 <= size <= _I64[1]
            or not 0 <= inode <= _U64
            or not 0 <= device <= _U64
            or not 0 <= links <= _U64
            or not 0 <= rdev <= _U64
            or type(user) is not str
            or type(group) is not str
            or type(damaged) is not str
        ):
            return None
        target = _unb64(d["target"]) if "target" in d else None
        xattrs = g("xattrs", ())
        if type(xattrs) is not list and xattrs != ():
            return None
        pairs: list[tuple[bytes, bytes]] = []
        for x in xattrs:
            if type(x) is not list or len(x) != 2:
                return None
            pairs.append((_unb64(x[0]), _unb64(x[1])))
        content = g("content", ())
        if type(content) is not list and content != ():
            return None
        ids = []
        for c in content:
            if type(c) is not str or len(c) != _ID_HEX:
                return None
            ids.append(bytes.fromhex(c))
        ch = g("content_hash")
        if ch is not None:
            if type(ch) is not str or len(ch) != _ID_HEX:
                return None
            ch = bytes.fromhex(ch)
        subtree = g("subtree")
        if subtree:
            if type(subtree) is not str or len(subtree) != _ID_HEX:
                return None
            subtree = bytes.fromhex(subtree)
        else:
            subtree = None
        node = Node(
            _unb64(d["name"]), kind, mode, uid, gid, user, group, mtime, ctime, size, inode,
            device, links, rdev, target, pairs, ids, ch, subtree, g("sparse", False) is True,
            damaged,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    if kind == "file" and ch is None:
        return None
    if kind == "dir" and subtree is None:
        return None
    if kind == "symlink" and target is None:
        return None
    return node


class _NodeReader:
    """Reads one node's fields, collecting what is wrong instead of raising."""

    def __init__(self, d: object) -> None:
        self.d: dict[str, Any] = d if isinstance(d, dict) else {}
        self.problems: list[str] = [] if isinstance(d, dict) else ["not a JSON object"]

    def bad(self, key: str, why: str) -> None:
        self.problems.append(f"{key} {why}")

    def integer(self, key: str, lo: int, hi: int, default: int = 0, required: bool = False) -> int:
        if key not in self.d:
            if required:
                self.bad(key, "is missing")
            return default
        v = self.d[key]
        if not isinstance(v, int) or isinstance(v, bool):
            self.bad(key, f"is not an integer ({type(v).__name__})")
            return default
        if not lo <= v <= hi:
            self.bad(key, f"{v} is out of range")
            return default
        return v

    def text(self, key: str) -> str:
        v = self.d.get(key, "")
        if not isinstance(v, str):
            self.bad(key, "is not a string")
            return ""
        return v

    def raw(self, key: str, required: bool = False) -> bytes | None:
        if key not in self.d:
            if required:
                self.bad(key, "is missing")
            return None
        v = self.d[key]
        try:
            if not isinstance(v, str):
                raise TypeError
            return _unb64(v)
        except (TypeError, ValueError):
            self.bad(key, "is not base64")
            return None

    def blob_id(self, v: object, key: str) -> bytes | None:
        try:
            if not isinstance(v, str) or len(v) != _ID_HEX:
                raise ValueError
            return bytes.fromhex(v)
        except ValueError:
            self.bad(key, "is not a blob ID")
            return None

    def node(self) -> Node:
        name = self.raw("name", required=True)
        kind = self.d.get("type")
        if kind not in NODE_TYPES:
            self.bad("type", f"{kind!r} is unknown")
            kind = "file"
        node = Node(
            name=name if name is not None else b"",
            type=kind,
            mode=self.integer("mode", 0, 0o7777, required=True),
            uid=self.integer("uid", 0, _U32, required=True),
            gid=self.integer("gid", 0, _U32, required=True),
            user=self.text("user"),
            group=self.text("group"),
            mtime_ns=self.integer("mtime_ns", *_I64, required=True),
            ctime_ns=self.integer("ctime_ns", *_I64),
            size=self.integer("size", 0, _I64[1]),
            inode=self.integer("inode", 0, _U64),
            device=self.integer("device", 0, _U64),
            links=self.integer("links", 0, _U64, default=1),
            rdev=self.integer("rdev", 0, _U64),
            target=self.raw("target"),
            sparse=self.d.get("sparse", False) is True,
            damaged=self.text("damaged"),
        )
        xattrs = self.d.get("xattrs", [])
        if isinstance(xattrs, list) and all(isinstance(x, list) and len(x) == 2 for x in xattrs):
            try:
                node.xattrs = [(_unb64(k), _unb64(v)) for k, v in xattrs]
            except (TypeError, ValueError, AttributeError):
                self.bad("xattrs", "are not base64 pairs")
        else:
            self.bad("xattrs", "are not a list of pairs")
        content = self.d.get("content", [])
        if isinstance(content, list):
            ids = [self.blob_id(c, "content") for c in content]
            node.content = [i for i in ids if i is not None]
        else:
            self.bad("content", "is not a list")
        ch = self.d.get("content_hash")
        if ch is not None:
            node.content_hash = self.blob_id(ch, "content_hash")
        if self.d.get("subtree"):
            node.subtree = self.blob_id(self.d["subtree"], "subtree")
        if node.type == "file" and node.content_hash is None:
            self.bad("content_hash", "is missing")
        if node.type == "dir" and node.subtree is None:
            self.bad("subtree", "is missing")
        if node.type == "symlink" and node.target is None:
            self.bad("target", "is missing")
        node.invalid = "; ".join(self.problems)
        return node


def encode_tree(nodes: list[Node]) -> bytes:
    """The tree blob: canonical JSON of the nodes sorted by name, byte for byte what
    ``json.dumps({"nodes": [n.to_dict() ...]}, sort_keys=True, separators=(",", ":"))``
    gives (``encode_tree_reference``, the definition the tests hold this to), written
    field by field: a backup encodes every directory, and building dicts for the json
    module to sort cost a third of an unchanged re-backup."""
    nodes = sorted(nodes, key=lambda n: n.name)
    return ('{"nodes":[' + ",".join([encode_node(n) for n in nodes]) + "]}").encode("ascii")


def encode_tree_parts(parts: list[tuple[bytes, bytes]]) -> bytes:
    """The tree blob of nodes given as (name, ``encode_node`` of the node as ASCII): the same
    bytes as ``encode_tree`` (a backup takes an unchanged entry's JSON from its cache)."""
    parts = sorted(parts, key=lambda p: p[0])
    return b'{"nodes":[' + b",".join([text for _, text in parts]) + b"]}"


def encode_tree_reference(nodes: list[Node]) -> bytes:
    nodes = sorted(nodes, key=lambda n: n.name)
    doc = {"nodes": [n.to_dict() for n in nodes]}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


_JSON_STR: dict[str, str] = {}  # user and group names repeat: each escaped once


def _json_str(text: str) -> str:
    out = _JSON_STR.get(text)
    if out is None:
        out = json.dumps(text)
        if len(_JSON_STR) < 4096:
            _JSON_STR[text] = out
    return out


def encode_node(n: Node) -> str:
    """One node's JSON object, keys in sorted order (see ``Node.to_dict``)."""
    head = ""
    if n.type == "file":
        content = ",".join(['"' + c.hex() + '"' for c in n.content])
        chash = '"' + n.content_hash.hex() + '"' if n.content_hash else "null"
        head = f'"content":[{content}],"content_hash":{chash},'
    damaged = f'"damaged":{json.dumps(n.damaged)},' if n.damaged else ""
    mid = (
        f'"ctime_ns":{n.ctime_ns},{damaged}"device":{n.device},"gid":{n.gid},'
        f'"group":{_json_str(n.group)},"inode":{n.inode},"links":{n.links},'
        f'"mode":{n.mode},"mtime_ns":{n.mtime_ns},"name":"{_b64(n.name)}"'
    )
    tail = ""
    if n.type in ("chardev", "blockdev"):
        tail += f',"rdev":{n.rdev}'
    if n.type == "file":
        tail += f',"size":{n.size}' + (',"sparse":true' if n.sparse else "")
    if n.subtree is not None:
        tail += f',"subtree":"{n.subtree.hex()}"'
    if n.target is not None:
        tail += f',"target":"{_b64(n.target)}"'
    tail += f',"type":{_json_str(n.type)},"uid":{n.uid},"user":{_json_str(n.user)}'
    if n.xattrs:
        pairs = ",".join([f'["{_b64(k)}","{_b64(v)}"]' for k, v in n.xattrs])
        tail += f',"xattrs":[{pairs}]'
    return "{" + head + mid + tail + "}"


def decode_tree(data: bytes) -> list[Node]:
    """The nodes of a tree blob. ``ValueError`` if it is not a tree at all; a node whose
    fields are wrong comes back with ``invalid`` saying why (see ``Node.from_dict``)."""
    doc = load_json(data)
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list):
        raise ValueError("not a tree object")
    return [Node.from_dict(d) for d in doc["nodes"]]


@dataclass
class Snapshot:
    time: str
    host: str
    username: str
    paths: list[str]
    tags: list[str]
    tree: bytes
    program_version: str
    # What was backed up: {"kind": K, "parts": [record, ...]} (``sources/``; K is the one
    # part's kind or "mixed"); snapshots before sources were recorded hold {"kind": "files"}.
    source: dict[str, Any] = field(default_factory=lambda: {"kind": "files"})
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
            "source": self.source,
            "parent": self.parent,
            **({"original": self.original} if self.original else {}),
            "summary": self.summary,
        }
        return json.dumps(doc, sort_keys=True).encode()

    @property
    def kind(self) -> str:
        k = self.source.get("kind")
        return k if isinstance(k, str) else ""

    @property
    def parts(self) -> list[dict[str, Any]]:
        """Each source's record; an old files snapshot's one part is made up from it."""
        parts = self.source.get("parts")
        if isinstance(parts, list):
            return [p for p in parts if isinstance(p, dict) and isinstance(p.get("kind"), str)]
        return [{"kind": self.kind, "paths": list(self.paths)}]

    def streams(self) -> list[dict[str, Any]]:
        """Every stream entry of every part: {"path", "size", "sha256"} (plus the part's
        ``kind``), as recorded at backup."""
        out = []
        for part in self.parts:
            entries = part.get("entries")
            if isinstance(entries, list):
                out += [
                    {**e, "kind": part["kind"]}
                    for e in entries
                    if isinstance(e, dict) and isinstance(e.get("path"), str)
                ]
        return out

    def sort_time(self) -> datetime:
        """The instant of ``time`` (checked when the snapshot was read)."""
        t = datetime.fromisoformat(self.time)
        return t if t.tzinfo else t.replace(tzinfo=UTC)

    @classmethod
    def from_bytes(cls, data: bytes, snapshot_id: str) -> Snapshot:
        """Parse and type-check a snapshot document; ``ValueError`` if it is not one."""
        d = load_json(data)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        source = d.get("source", {})
        snap = cls(
            time=_typed(d, "time", str),
            host=_typed(d, "host", str),
            username=_typed(d, "username", str, ""),
            paths=_strings(d, "paths"),
            tags=_strings(d, "tags", required=False),
            tree=bytes.fromhex(_typed(d, "tree", str)),
            program_version=_typed(d, "program_version", str, ""),
            source=_source(source),
            parent=_typed(d, "parent", (str, type(None)), None),
            original=_typed(d, "original", (str, type(None)), None),
            summary=_typed(d, "summary", dict, {}),
            id=snapshot_id,
        )
        if len(snap.tree) != 32:
            raise ValueError("tree is not a blob ID")
        snap.sort_time()  # a time that does not parse would break every listing's order
        return snap


_MISSING = object()


def _source(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        return {"kind": ""}
    if not isinstance(v.get("kind", "files"), str):
        raise ValueError("source.kind has the wrong type")
    return {"kind": "files", **v}


def _typed(
    d: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any = _MISSING
) -> Any:
    v = d.get(key, default)
    if v is _MISSING:
        raise ValueError(f"{key} is missing")
    if not isinstance(v, kind):
        raise ValueError(f"{key} has the wrong type")
    return v


def _strings(d: dict[str, Any], key: str, required: bool = True) -> list[str]:
    v = d.get(key, _MISSING if required else [])
    if v is _MISSING:
        raise ValueError(f"{key} is missing")
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{key} is not a list of strings")
    return list(v)
