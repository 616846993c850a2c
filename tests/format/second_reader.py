"""An independent reader of drengine repositories, written only from docs/repository-format.md.

It deliberately imports nothing from ``drengine``: it uses only the standard library and the
third-party primitives the spec names (cryptography, argon2-cffi, blake3, zstandard). Section
references (§n) point into the spec. The reader is strict: what the spec states is checked
(object names are hashes, canonical tree JSON, the exact field sets of §2/§3/§7/§8, back-to-back
blobs in packs, index records equal pack trailers, ...), and a violation raises
:class:`FormatError` naming the section. It has no tolerances for behaviour the spec does not
describe; where the spec is ambiguous the choice made here is commented ("spec ambiguity"), and
``tests/format/test_second_reader.py`` pins the known disagreements between spec and code.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import blake3
import zstandard
from argon2.low_level import Type, hash_secret_raw
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

SUPPORTED_VERSION = 1  # §11

# §2, §4, §5, §6: magics, AADs and info strings
KEYFILE_AAD = b"drengine key file v1"
SETTINGS_AAD = b"drengine config settings"
OBJECT_KEY_INFO = b"drengine v1 object key"
SEALED_MAGIC = b"DRE\x01"
PACK_MAGIC = b"DRP\x01"
INDEX_MAGIC = b"DRI\x01"
AAD_INDEX = b"drengine index"
AAD_SNAPSHOT = b"drengine snapshot"
AAD_LOCK = b"drengine lock"
AAD_TRAILER = b"drengine pack trailer"
DOMAIN_BLOB, DOMAIN_TRAILER, DOMAIN_SEALED = 0, 1, 2
SALT_LEN = 32
TAG_LEN = 16
ID_LEN = 32
RECORD = struct.Struct("<B32sIII")  # §5.2: type, blob ID, offset, ciphertext len, plain len
BLOB_DATA, BLOB_TREE = 0, 1

HEX64 = re.compile(r"[0-9a-f]{64}")

# Node fields of §7 and where they must appear.
NODE_TYPES = {"file", "dir", "symlink", "fifo", "chardev", "blockdev", "socket"}
NODE_COMMON = {
    "name", "type", "mode", "uid", "gid", "user", "group",
    "mtime_ns", "ctime_ns", "inode", "device", "links",
}  # fmt: skip
NODE_BY_TYPE = {
    "file": {"size", "content", "content_hash"},
    "dir": {"subtree"},
    "symlink": {"target"},
    "chardev": {"rdev"},
    "blockdev": {"rdev"},
    "fifo": set(),
    "socket": set(),
}
NODE_OPTIONAL = {"file": {"sparse"}}
NODE_OPTIONAL_ALL = {"xattrs"}

# Fields of §3 (settings) and §8 (snapshots).
SETTINGS_FIELDS = {"chunker_min", "chunker_avg", "chunker_max", "compression_level", "pack_size"}
SETTINGS_OPTIONAL = {"object_lock_mode", "object_lock_days"}  # §3: only with S3 Object Lock
SNAPSHOT_FIELDS = {
    "version", "time", "host", "username", "paths", "tags", "tree",
    "program_version", "source", "parent", "summary",
}  # fmt: skip
SUMMARY_FIELDS = {
    "files_total", "files_new", "files_changed", "files_unmodified", "dirs_total",
    "bytes_total", "bytes_new", "bytes_stored", "blobs_new", "packs_new",
    "duration_seconds", "errors",
}  # fmt: skip
KEYFILE_FIELDS = {"version", "created", "kdf", "nonce", "data"}
KDF_FIELDS = {"algorithm", "memory_kib", "iterations", "parallelism", "salt"}
MASTER_FIELDS = {"encryption", "chunk_id", "chunker_seed"}


class FormatError(Exception):
    """The repository does not follow docs/repository-format.md."""


class VersionError(FormatError):
    """§3/§11: config.version is newer than this reader."""


class WrongPassword(FormatError):
    """§2: no key file opens with the password."""


def b64(value: Any, what: str, length: int | None = None) -> bytes:
    """Standard base64 with padding (spec preamble), strictly."""
    if not isinstance(value, str):
        raise FormatError(f"{what}: expected a base64 string, got {type(value).__name__}")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as e:
        raise FormatError(f"{what}: not standard base64 with padding: {e}") from None
    if length is not None and len(raw) != length:
        raise FormatError(f"{what}: expected {length} bytes, got {len(raw)}")
    return raw


def unhex(value: Any, what: str) -> bytes:
    """Lowercase hex of 32 bytes (spec preamble: "hex" is lowercase)."""
    if not isinstance(value, str) or not HEX64.fullmatch(value):
        raise FormatError(f"{what}: expected 64 lowercase hex digits, got {value!r}")
    return bytes.fromhex(value)


def path_bytes(path: str) -> bytes:
    """§8 ``paths``: a string whose undecodable bytes are "surrogate escapes" (PEP 383)."""
    return path.encode("utf-8", "surrogateescape")


def nonce(domain: int, counter: int) -> bytes:
    """§4.1: domain (u32, big-endian) || counter (u64, big-endian)."""
    return struct.pack(">IQ", domain, counter)


def check_fields(obj: Any, required: set[str], optional: set[str], what: str) -> None:
    if not isinstance(obj, dict):
        raise FormatError(f"{what}: expected a JSON object")
    missing = required - obj.keys()
    extra = obj.keys() - required - optional
    if missing or extra:
        raise FormatError(
            f"{what}: fields differ from the spec: missing {sorted(missing)}, "
            f"undocumented {sorted(extra)}"
        )


def zstd_one_frame(data: bytes, what: str, need_content_size: bool) -> bytes:
    """Decompress exactly one zstd frame (§5.1, §6)."""
    try:
        params = zstandard.get_frame_parameters(data)
    except zstandard.ZstdError as e:
        raise FormatError(f"{what}: not a zstd frame: {e}") from None
    size = params.content_size
    if size == zstandard.CONTENTSIZE_UNKNOWN:
        # Spec ambiguity: §5.1 requires the content size in blob frames, §6 does not say it for
        # index frames (drengine writes it and its reader requires it); accept both here.
        if need_content_size:
            raise FormatError(f"{what}: zstd frame without the content size in its header")
        dobj = zstandard.ZstdDecompressor().decompressobj()
        out = dobj.decompress(data)
        if not dobj.eof:
            raise FormatError(f"{what}: truncated zstd frame")
        if dobj.unused_data:
            raise FormatError(f"{what}: bytes after the zstd frame")
        return out
    out = zstandard.ZstdDecompressor().decompress(data, max_output_size=max(size, 1))
    # A frame whose header records the size decompresses to exactly that size; anything after
    # it (a second frame) would be silently ignored by decompress(), so check the frame length.
    dobj = zstandard.ZstdDecompressor().decompressobj()
    dobj.decompress(data)
    if dobj.unused_data:
        raise FormatError(f"{what}: more than one zstd frame")
    if len(out) != size:
        raise FormatError(f"{what}: decompressed {len(out)} bytes, header says {size}")
    return out


@dataclass(frozen=True)
class BlobLocation:
    pack: bytes
    type: int
    offset: int
    length: int
    plain_length: int


@dataclass(frozen=True)
class MasterKeys:
    encryption: bytes
    chunk_id: bytes
    chunker_seed: int


@dataclass
class Entry:
    """One node of a snapshot, with its absolute path inside the snapshot (raw bytes)."""

    path: bytes
    node: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.node["type"])


@dataclass
class Snapshot:
    id: str
    data: dict[str, Any]


@dataclass
class Repository:
    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    keys: MasterKeys | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    index: dict[tuple[int, bytes], list[BlobLocation]] = field(default_factory=dict)
    pack_contents: dict[bytes, list[tuple[int, bytes, int, int, int]]] = field(default_factory=dict)
    superseded: set[bytes] = field(default_factory=set)
    _objects: dict[str, bytes] = field(default_factory=dict, repr=False)

    # ---- §1 objects -------------------------------------------------------------------

    def list_names(self, prefix: str) -> list[str]:
        """Objects under ``prefix`` ("keys/", "data/", ...); the local backend maps / to dirs."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        names = []
        for p in sorted(base.rglob("*")):
            if p.is_file() and not p.name.startswith(".tmp-"):
                names.append(p.relative_to(self.root).as_posix())
        return names

    def get(self, name: str) -> bytes:
        """Read an object and check it against its name (§1), except ``config``."""
        if name in self._objects:
            return self._objects[name]
        data = (self.root / name).read_bytes()
        if name == "config":
            return data
        kind, _, rest = name.partition("/")
        ident = rest.rsplit("/", 1)[-1]
        if kind == "data":
            expected = f"data/{ident[:2]}/{ident}"
            if name != expected:
                raise FormatError(f"§1: pack {name} is not stored as {expected}")
        elif "/" in rest:
            raise FormatError(f"§1: unexpected nesting in {name}")
        unhex(ident, f"§1: name of {name}")
        actual = blake3.blake3(data).hexdigest()
        if actual != ident:
            raise FormatError(f"§1: object {name} has BLAKE3 {actual}, not its name")
        self._objects[name] = data  # objects are immutable (§1)
        return data

    # ---- §3 config, §2 keys ---------------------------------------------------------------

    def read_config(self) -> dict[str, Any]:
        try:
            cfg = json.loads(self.get("config").decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FormatError(f"§3: config is not UTF-8 JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise FormatError("§3: config is not a JSON object")
        version = cfg.get("version")
        if not isinstance(version, int):
            raise FormatError(f"§3: config version {version!r} is not an integer")
        # §3/§11: refuse a newer version before asking for the password.
        if version > SUPPORTED_VERSION:
            raise VersionError(
                f"repository format version {version} is newer than supported "
                f"version {SUPPORTED_VERSION}"
            )
        check_fields(cfg, {"format", "version", "id", "settings"}, set(), "§3 config")
        if cfg["format"] != "drengine":
            raise FormatError(f"§3: config format is {cfg['format']!r}")
        if version != 1:
            raise FormatError(f"§3: config version {version} is not 1")
        unhex(cfg["id"], "§3 repository ID")
        self.config = cfg
        return cfg

    def open_keys(self, password: bytes) -> MasterKeys:
        """§2: try every key file until one opens."""
        names = self.list_names("keys/")
        if not names:
            raise FormatError("§2: no key files")
        for name in names:
            keys = self._try_key_file(name, password)
            if keys is not None:
                self.keys = keys
                return keys
        raise WrongPassword("§2: no key file opens with this password")

    def _try_key_file(self, name: str, password: bytes) -> MasterKeys | None:
        raw = self.get(name)
        kf = json.loads(raw.decode("utf-8"))
        check_fields(kf, KEYFILE_FIELDS, set(), f"§2 key file {name}")
        if kf["version"] != 1:
            raise FormatError(f"§2: key file {name} has version {kf['version']!r}")
        kdf = kf["kdf"]
        check_fields(kdf, KDF_FIELDS, set(), f"§2 key file {name} kdf")
        if kdf["algorithm"] != "argon2id":
            raise FormatError(f"§2: key file {name} uses KDF {kdf['algorithm']!r}")
        salt = b64(kdf["salt"], f"§2 {name} kdf.salt", 32)
        wrapping = hash_secret_raw(
            secret=password,
            salt=salt,
            time_cost=kdf["iterations"],
            memory_cost=kdf["memory_kib"],
            parallelism=kdf["parallelism"],
            hash_len=32,
            type=Type.ID,
            version=0x13,
        )
        try:
            plain = AESGCM(wrapping).decrypt(
                b64(kf["nonce"], f"§2 {name} nonce", 12),
                b64(kf["data"], f"§2 {name} data"),
                KEYFILE_AAD,
            )
        except InvalidTag:
            return None
        master = json.loads(plain.decode("utf-8"))
        check_fields(master, MASTER_FIELDS, set(), f"§2 master keys in {name}")
        seed = master["chunker_seed"]
        if not isinstance(seed, int) or not 1 <= seed < 2**63:
            raise FormatError(f"§2: chunker_seed {seed!r} out of range")
        return MasterKeys(
            encryption=b64(master["encryption"], "§2 encryption key", 32),
            chunk_id=b64(master["chunk_id"], "§2 chunk_id key", 32),
            chunker_seed=seed,
        )

    def open(self, password: bytes) -> None:
        """Config (version check first), keys, sealed settings, index."""
        self.read_config()
        self.open_keys(password)
        self.read_settings()
        self.load_index()

    def read_settings(self) -> dict[str, Any]:
        sealed = b64(self.config["settings"], "§3 settings")
        aad = SETTINGS_AAD + self.config["id"].encode("ascii")
        settings = json.loads(self.unseal(sealed, aad, "§3 settings").decode("utf-8"))
        check_fields(settings, SETTINGS_FIELDS, SETTINGS_OPTIONAL, "§3 settings")
        for k, v in settings.items():
            if k == "object_lock_mode":
                if v not in ("", "GOVERNANCE", "COMPLIANCE"):
                    raise FormatError(f"§3: object_lock_mode {v!r} is not a lock mode")
            elif not isinstance(v, int) or isinstance(v, bool):
                raise FormatError(f"§3: setting {k} = {v!r} is not an integer")
        if not settings["chunker_min"] <= settings["chunker_avg"] <= settings["chunker_max"]:
            raise FormatError(f"§3: chunker sizes out of order: {settings}")
        self.settings = settings
        return settings

    # ---- §4 encryption --------------------------------------------------------------------

    def subkey(self, salt: bytes) -> bytes:
        assert self.keys is not None
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=OBJECT_KEY_INFO).derive(
            self.keys.encryption
        )

    def unseal(self, data: bytes, aad: bytes, what: str) -> bytes:
        """§4.2: "DRE\\x01" || salt || AES-256-GCM(subkey, nonce(2, 0), plaintext, aad)."""
        if data[:4] != SEALED_MAGIC:
            raise FormatError(f"§4.2: {what} starts with {data[:4]!r}, not {SEALED_MAGIC!r}")
        if len(data) < 4 + SALT_LEN + TAG_LEN:
            raise FormatError(f"§4.2: {what} is too short")
        salt = data[4 : 4 + SALT_LEN]
        try:
            return AESGCM(self.subkey(salt)).decrypt(
                nonce(DOMAIN_SEALED, 0), data[4 + SALT_LEN :], aad
            )
        except InvalidTag:
            raise FormatError(f"§4.2: {what} fails authentication") from None

    # ---- §5 packs, §6 index -----------------------------------------------------------------

    def read_pack_trailer(self, pack_id: bytes) -> list[tuple[int, bytes, int, int, int]]:
        """§5.2: the pack's own list of blobs; also checks the layout around the blobs."""
        name = f"data/{pack_id.hex()[:2]}/{pack_id.hex()}"
        data = self.get(name)
        if data[:4] != PACK_MAGIC:
            raise FormatError(f"§5.2: pack {name} starts with {data[:4]!r}")
        (tlen,) = struct.unpack("<I", data[-4:])
        tstart = len(data) - 4 - tlen
        if tstart < 4 + SALT_LEN:
            raise FormatError(f"§5.2: pack {name}: trailer length {tlen} too large")
        salt = data[4 : 4 + SALT_LEN]
        try:
            plain = AESGCM(self.subkey(salt)).decrypt(
                nonce(DOMAIN_TRAILER, 0), data[tstart : tstart + tlen], AAD_TRAILER
            )
        except InvalidTag:
            raise FormatError(f"§5.2: trailer of pack {name} fails authentication") from None
        (count,) = struct.unpack_from("<I", plain, 0)
        if len(plain) != 4 + count * RECORD.size:
            raise FormatError(
                f"§5.2: trailer of {name}: {len(plain)} bytes for {count} records of {RECORD.size}"
            )
        records = [RECORD.unpack_from(plain, 4 + i * RECORD.size) for i in range(count)]
        # §5.2: "blob ciphertexts, back to back" from offset 36 up to the trailer.
        pos = 4 + SALT_LEN
        for btype, _bid, off, length, _plen in records:
            if btype not in (BLOB_DATA, BLOB_TREE):
                raise FormatError(f"§5.2: pack {name}: blob type {btype}")
            if off != pos:
                raise FormatError(
                    f"§5.2: pack {name}: blob at offset {off}, expected {pos} (back to back)"
                )
            pos = off + length
        if pos != tstart:
            raise FormatError(f"§5.2: pack {name}: blobs end at {pos}, trailer at {tstart}")
        if len({r[0] for r in records}) > 1:
            raise FormatError(f"§5.2: pack {name} mixes data and tree blobs")
        return records

    def load_index(self) -> None:
        """§6: every index object, minus the superseded ones."""
        parsed: dict[bytes, tuple[list[bytes], dict[bytes, list[tuple[Any, ...]]]]] = {}
        for name in self.list_names("index/"):
            plain = self.unseal(self.get(name), AAD_INDEX, f"index {name}")
            body = zstd_one_frame(plain, f"§6 index {name}", need_content_size=False)
            parsed[bytes.fromhex(name.split("/")[1])] = self._parse_index(body, name)
        self.superseded = {s for sup, _ in parsed.values() for s in sup}
        self.index.clear()
        for idx_id, (_sup, packs) in parsed.items():
            if idx_id in self.superseded:
                continue
            for pack_id, records in packs.items():
                for btype, bid, off, length, plen in records:
                    loc = BlobLocation(pack_id, btype, off, length, plen)
                    self.index.setdefault((btype, bid), []).append(loc)
                self.pack_contents[pack_id] = records

    def _parse_index(
        self, body: bytes, name: str
    ) -> tuple[list[bytes], dict[bytes, list[tuple[Any, ...]]]]:
        if body[:4] != INDEX_MAGIC:
            raise FormatError(f"§6: index {name} starts with {body[:4]!r}")
        npacks, nsup = struct.unpack_from("<II", body, 4)
        pos = 12
        superseded = [body[pos + i * 32 : pos + (i + 1) * 32] for i in range(nsup)]
        pos += 32 * nsup
        packs: dict[bytes, list[tuple[Any, ...]]] = {}
        for _ in range(npacks):
            pack_id = body[pos : pos + 32]
            (nblobs,) = struct.unpack_from("<I", body, pos + 32)
            pos += 36
            records = [RECORD.unpack_from(body, pos + i * RECORD.size) for i in range(nblobs)]
            pos += nblobs * RECORD.size
            if pack_id in packs:
                raise FormatError(f"§6: index {name} lists pack {pack_id.hex()} twice")
            packs[pack_id] = records
        if pos != len(body):
            raise FormatError(f"§6: index {name}: {len(body) - pos} trailing bytes")
        return superseded, packs

    def read_blob(self, btype: int, blob_id: bytes) -> bytes:
        """A blob by type and ID, through the first index entry that lists it (§6).

        Spec ambiguity: blob IDs do not depend on the type (§5.1), but the spec does not say
        whether the index is keyed by ID or by (type, ID). This reader uses (type, ID), because
        the type is part of the blob's AAD (§5.2) and of every index record.
        """
        locs = self.index.get((btype, blob_id))
        if not locs:
            raise FormatError(f"§6: blob {blob_id.hex()} (type {btype}) is in no index")
        return self.read_blob_at(blob_id, locs[0])

    def read_blob_at(self, blob_id: bytes, loc: BlobLocation) -> bytes:
        """§5.2 "To read a blob": decrypt, decompress, check length and keyed BLAKE3."""
        assert self.keys is not None
        name = f"data/{loc.pack.hex()[:2]}/{loc.pack.hex()}"
        pack = self.get(name)
        if pack[:4] != PACK_MAGIC:
            raise FormatError(f"§5.2: pack {name} starts with {pack[:4]!r}")
        salt = pack[4 : 4 + SALT_LEN]
        ct = pack[loc.offset : loc.offset + loc.length]
        try:
            payload = AESGCM(self.subkey(salt)).decrypt(
                nonce(DOMAIN_BLOB, loc.offset), ct, bytes([loc.type]) + blob_id
            )
        except InvalidTag:
            raise FormatError(f"§5.2: blob {blob_id.hex()} fails authentication") from None
        if payload[:1] == b"\x00":
            plain = payload[1:]
        elif payload[:1] == b"\x01":
            plain = zstd_one_frame(payload[1:], f"§5.1 blob {blob_id.hex()}", True)
        else:
            raise FormatError(f"§5.1: blob {blob_id.hex()} has compression byte {payload[:1]!r}")
        if len(plain) != loc.plain_length:
            raise FormatError(
                f"§5.2: blob {blob_id.hex()}: {len(plain)} bytes, index says {loc.plain_length}"
            )
        key = self.keys.chunk_id
        if loc.type == 1:  # §5.1: tree blobs use their own key
            key = blake3.blake3(b"drengine v1 tree blob id", key=self.keys.chunk_id).digest()
        if blake3.blake3(plain, key=key).digest() != blob_id:
            raise FormatError(f"§5.1: blob {blob_id.hex()}: keyed BLAKE3 does not match its ID")
        return plain

    # ---- §8 snapshots, §7 trees -------------------------------------------------------------

    def snapshots(self) -> list[Snapshot]:
        """All snapshots, oldest first (by their ``time``)."""
        out = []
        for name in self.list_names("snapshots/"):
            plain = self.unseal(self.get(name), AAD_SNAPSHOT, f"snapshot {name}")
            snap = json.loads(plain.decode("utf-8"))
            check_fields(snap, SNAPSHOT_FIELDS, set(), f"§8 snapshot {name}")
            check_fields(snap["summary"], SUMMARY_FIELDS, set(), f"§8 summary of {name}")
            if snap["version"] != 1:
                raise FormatError(f"§8: snapshot {name} has version {snap['version']!r}")
            unhex(snap["tree"], f"§8 tree of {name}")
            out.append(Snapshot(name.split("/")[1], snap))
        for snap in out:
            t = datetime.fromisoformat(snap.data["time"])
            if t.tzinfo is None:
                raise FormatError(f"§8: snapshot {snap.id} time has no offset")
        out.sort(key=lambda s: (datetime.fromisoformat(s.data["time"]), s.id))
        return out

    def read_tree(self, tree_id: bytes) -> list[dict[str, Any]]:
        raw = self.read_blob(BLOB_TREE, tree_id)
        tree = json.loads(raw.decode("utf-8"))
        # §7: canonical serialization, so unchanged directories deduplicate.
        canonical = json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()
        if canonical != raw:
            raise FormatError(f"§7: tree {tree_id.hex()} is not canonical JSON")
        check_fields(tree, {"nodes"}, set(), f"§7 tree {tree_id.hex()}")
        nodes = tree["nodes"]
        names = [b64(n.get("name"), "§7 node name") for n in nodes]
        if names != sorted(names) or len(set(names)) != len(names):
            raise FormatError(f"§7: nodes of tree {tree_id.hex()} not sorted by raw name")
        for n in nodes:
            t = n.get("type")
            if t not in NODE_TYPES:
                raise FormatError(f"§7: node type {t!r}")
            check_fields(
                n,
                NODE_COMMON | NODE_BY_TYPE[t],
                NODE_OPTIONAL.get(t, set()) | NODE_OPTIONAL_ALL,
                f"§7 {t} node {n['name']} in tree {tree_id.hex()}",
            )
        return nodes

    def walk(self, tree_id: bytes, prefix: bytes = b"") -> Iterator[Entry]:
        """Every node below a tree, depth first, with absolute paths inside the snapshot."""
        for node in self.read_tree(tree_id):
            path = prefix + b"/" + b64(node["name"], "§7 name")
            yield Entry(path, node)
            if node["type"] == "dir":
                yield from self.walk(unhex(node["subtree"], "§7 subtree"), path)

    def lookup(self, tree_id: bytes, path: bytes) -> dict[str, Any]:
        """The node at an absolute path inside a snapshot's root tree (§7)."""
        node: dict[str, Any] = {"type": "dir", "subtree": tree_id.hex()}
        for part in [p for p in path.split(b"/") if p]:
            if node["type"] != "dir":
                raise FormatError(f"§7: {path!r}: a parent is a {node['type']}, not a dir")
            children = {
                b64(n["name"], "§7 name"): n for n in self.read_tree(bytes.fromhex(node["subtree"]))
            }
            if part not in children:
                raise FormatError(f"§7: {path!r} is not in the tree")
            node = children[part]
        return node

    def read_file(self, node: dict[str, Any]) -> bytes:
        """Concatenate a file node's blobs and check size and content_hash (§7)."""
        parts = [self.read_blob(BLOB_DATA, unhex(h, "§7 content")) for h in node["content"]]
        data = b"".join(parts)
        if len(data) != node["size"]:
            raise FormatError(f"§7: file {node['name']}: {len(data)} bytes, size {node['size']}")
        if blake3.blake3(data).hexdigest() != node["content_hash"]:
            raise FormatError(f"§7: file {node['name']}: content_hash mismatch")
        return data

    # ---- whole-repository checks ---------------------------------------------------------

    def verify_packs(self) -> dict[str, int]:
        """Every pack on storage: trailer, index agreement, every blob decrypts and hashes."""
        stats = {"packs": 0, "blobs": 0}
        on_storage = {bytes.fromhex(n.rsplit("/", 1)[1]) for n in self.list_names("data/")}
        indexed = set(self.pack_contents)
        if indexed - on_storage:
            raise FormatError(f"§6: indexed packs missing: {sorted(p.hex() for p in indexed)}")
        for pack_id in sorted(on_storage):
            records = self.read_pack_trailer(pack_id)
            if pack_id in self.pack_contents and sorted(self.pack_contents[pack_id]) != sorted(
                records
            ):
                raise FormatError(f"§5.2/§6: index and trailer of pack {pack_id.hex()} differ")
            for btype, bid, off, length, plen in records:
                self.read_blob_at(bid, BlobLocation(pack_id, btype, off, length, plen))
                stats["blobs"] += 1
            stats["packs"] += 1
        return stats
