"""Open, create and read a repository: config, keys, index, snapshots, blobs and trees."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, NoReturn

import blake3

from drengine.core.cache_dir import repo_cache_dir
from drengine.core.errors import (
    DrengineError,
    IntegrityError,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    SnapshotNotFound,
    StorageError,
    UsageError,
    WrongPassword,
)
from drengine.core.model import Node, Snapshot
from drengine.core.phases import NO_PHASES, Phases
from drengine.crypto.aead import seal, unseal
from drengine.crypto.keys import (
    KdfParams,
    MasterKeys,
    kdf_cost,
    key_file_meta,
    make_key_file,
    open_key_file,
)
from drengine.repository import blobcodec, layout
from drengine.repository.config import (
    FORMAT_VERSION,
    Config,
    Settings,
    open_settings,
    read_header,
)
from drengine.repository.layout import BlobType
from drengine.repository.listing import Strays, list_objects, list_packs
from drengine.repository.pack import (
    HEADER_SIZE,
    PACK_MAGIC,
    BlobRecord,
    decrypt_blob,
    parse_trailer_parts,
    trailer_length,
)
from drengine.storage.base import Backend, TemporaryFile
from drengine.storage.cache import CachingBackend

if TYPE_CHECKING:
    from drengine.repository.index import Index
    from drengine.repository.index_entry import IndexEntry
    from drengine.repository.pack_spool import SpooledPack

log = logging.getLogger(__name__)

TREE_KEY_CONTEXT = b"drengine v1 tree blob id"
_INDEX_AAD = b"drengine index"
_SNAPSHOT_AAD = b"drengine snapshot"
# Format limit (§11) on a sealed index or snapshot object: a larger one is damage, refused
# before it is read into memory.
MAX_SEALED_OBJECT = 256 << 20
_MAX_KEY_FILE = 64 << 10  # a key file is about 600 bytes
# Read this much of a pack's end to find its trailer in one request (16 blobs need 740 bytes).
_TRAILER_PROBE = 64 << 10
_TRAILER_MIN = 16 + 4 + 4  # tag, count, length


class Repository:
    def __init__(self, backend: Backend, keys: MasterKeys, config: Config) -> None:
        self.backend = backend
        self.keys = keys
        self.config = config
        self.key_name = ""  # the key file that opened this repository
        self.lock_wait = 0.0  # seconds to wait for a conflicting lock (--retry-lock)
        self._index: Index | None = None  # built on first use: numpy loads only then
        self._salts: dict[bytes, bytes] = {}
        self._salt_lock = threading.Lock()
        self.strays = Strays()  # names in storage that are not objects of the format
        # Objects that exist but cannot be read (damaged, garbage): name -> why. Each is
        # reported once; commands go on with the rest, check reports them as errors.
        self.damaged: dict[str, str] = {}
        self._report_lock = threading.Lock()
        self._tree_key = blake3.blake3(TREE_KEY_CONTEXT, key=keys.chunk_id).digest()

    @property
    def index(self) -> Index:
        if self._index is None:
            from drengine.repository.index import Index

            self._index = Index()
        return self._index

    @index.setter
    def index(self, index: Index) -> None:
        self._index = index

    @property
    def id(self) -> str:
        return self.config.repo_id

    @property
    def settings(self) -> Settings:
        return self.config.settings

    @property
    def remote(self) -> bool:
        """Whether storage is across a network (more uploads in flight pay off)."""
        return self.backend.capabilities.remote

    @property
    def location(self) -> str:
        return self.backend.location

    # ---- creating and opening -------------------------------------------------------------

    @classmethod
    def init(
        cls,
        backend: Backend,
        password: bytes,
        settings: Settings | None = None,
        kdf: KdfParams | None = None,
    ) -> Repository:
        try:
            backend.stat(layout.CONFIG)
            raise RepositoryExists(f"a repository already exists at {backend.location}")
        except ObjectNotFound:
            pass
        keys = MasterKeys.generate()
        config = Config(FORMAT_VERSION, os.urandom(32).hex(), settings or Settings())
        _enable_retention(backend, config.settings, creating=True)  # before the first write
        key_data = make_key_file(keys, password, kdf or KdfParams(), _key_meta())
        key_name = layout.KEYS + layout.object_id(key_data)
        backend.put(key_name, key_data)
        # The config goes last: until it exists, nothing claims a repository is here.
        backend.put_if_absent(layout.CONFIG, config.to_bytes(keys.encryption))
        repo = cls(backend, keys, config)
        repo.key_name = key_name
        return repo

    @staticmethod
    def probe(backend: Backend) -> tuple[int, str, bytes]:
        """Read the plain config: is there a repository, and can we read its version?

        Called before asking for a password, so a wrong location or a newer format is
        reported without a prompt.
        """
        try:
            raw_config = backend.get(layout.CONFIG)
        except ObjectNotFound:
            raise RepositoryNotFound(f"there is no repository at {backend.location}") from None
        return read_header(raw_config, backend.location)

    @classmethod
    def open(cls, backend: Backend, password: bytes) -> Repository:
        version, repo_id, sealed = cls.probe(backend)
        listed = list(backend.list(layout.KEYS))
        key_names = [o.name for o in listed]
        if not key_names:
            raise IntegrityError(f"the repository at {backend.location} has no key files")
        damaged: list[str] = []
        # The cheapest key files first (a planted one cannot slow every open), then by name.
        files: list[tuple[int, str, bytes]] = []
        for info in listed:
            if info.size > _MAX_KEY_FILE:
                damaged.append(f"key file {info.name} is {info.size} bytes: not a key file")
                continue
            try:
                data = backend.get(info.name)
            except ObjectNotFound:
                continue
            files.append((kdf_cost(data), info.name, data))
        for _cost, name, data in sorted(files, key=lambda f: (f[0], f[1])):
            try:
                if layout.object_id(data) != name[len(layout.KEYS) :]:
                    raise IntegrityError(f"key file {name} does not match its name (damaged)")
                keys = open_key_file(data, password, name)
            except WrongPassword:
                continue
            except IntegrityError as e:
                damaged.append(str(e))  # another key file may still open
                continue
            settings = open_settings(sealed, repo_id, keys.encryption)
            _enable_retention(backend, settings, creating=False)
            if backend.capabilities.remote:
                # Index and snapshots are read by nearly every command: keep local copies.
                backend = CachingBackend(
                    backend, repo_cache_dir(repo_id) / "objects", (layout.INDEX, layout.SNAPSHOTS)
                )
            repo = cls(backend, keys, Config(version, repo_id, settings))
            repo.key_name = name
            return repo
        if damaged and len(damaged) == len(key_names):
            raise IntegrityError(damaged[0])
        also = ""
        if damaged:
            also = f" ({len(damaged)} damaged key files could not be tried: {damaged[0]})"
        raise WrongPassword(f"wrong password for the repository at {backend.location}{also}")

    def add_key(self, password: bytes, kdf: KdfParams | None = None) -> str:
        """Wrap the master keys under another password; returns the new key file's ID."""
        data = make_key_file(self.keys, password, kdf or KdfParams(), _key_meta())
        oid = layout.object_id(data)
        self.backend.put(layout.KEYS + oid, data)
        return oid

    def damaged_key_files(self) -> dict[str, str]:
        """Key file name -> what is wrong, for ``check`` (``open`` skips them already)."""
        bad = {}
        for item in list_objects(self.backend, layout.KEYS, self.strays):
            name = layout.KEYS + item.oid
            try:
                data = self.backend.get(name)
                if layout.object_id(data) != item.oid:
                    raise ValueError("it does not match its name (damaged)")
                key_file_meta(data)
            except ObjectNotFound:
                continue
            except (ValueError, TypeError) as e:
                bad[name] = str(e)
        return bad

    def key_files(self) -> list[tuple[str, dict[str, object]]]:
        """(ID, plain metadata) of every key file."""
        out = []
        for info in self.backend.list(layout.KEYS):
            try:
                meta = key_file_meta(self.backend.get(info.name))
            except (ValueError, TypeError):
                meta = {"damaged": True}
            out.append((info.name[len(layout.KEYS) :], meta))
        return sorted(out, key=lambda kv: str(kv[1].get("created", "")))

    def replace_key(self, password: bytes, kdf: KdfParams | None = None) -> tuple[str, str]:
        """Change the password: a key file for the new one first, then the one in use goes.
        Returns (new ID, old ID)."""
        new = self.add_key(password, kdf)
        old = self.key_name[len(layout.KEYS) :]
        self.backend.delete(self.key_name)
        self.key_name = layout.KEYS + new
        return new, old

    def remove_key(self, oid: str) -> None:
        """Remove a key file; never the one in use, so a repository cannot lock itself out."""
        if layout.KEYS + oid == self.key_name:
            raise UsageError(
                "refusing to remove the key file this command opened the repository with"
            )
        self.backend.stat(layout.KEYS + oid)
        self.backend.delete(layout.KEYS + oid)

    # ---- sealed objects -------------------------------------------------------------------

    def save_sealed(self, prefix: str, plaintext: bytes, aad: bytes) -> str:
        data = seal(self.keys.encryption, plaintext, aad)
        oid = layout.object_id(data)
        self.backend.put(prefix + oid, data)
        return oid

    def load_sealed(self, prefix: str, oid: str, aad: bytes, what: str) -> bytes:
        data = self.backend.get(prefix + oid)
        if layout.object_id(data) != oid:
            raise IntegrityError(f"{what} {oid} does not match its name (damaged in storage)")
        return unseal(self.keys.encryption, data, aad, f"{what} {oid}")

    # ---- reporting ------------------------------------------------------------------------

    def report_damaged(self, name: str, why: str) -> None:
        """Record an object that cannot be read; warn once per name."""
        with self._report_lock:
            first = name not in self.damaged
            self.damaged[name] = why
        if first:
            log.warning("skipping %s: %s", name, why)

    # ---- index ----------------------------------------------------------------------------

    def index_ids(self) -> list[str]:
        return list(self.index_sizes())

    def index_sizes(self) -> dict[str, int]:
        """Index object ID -> stored size."""
        return {o.oid: o.size for o in list_objects(self.backend, layout.INDEX, self.strays)}

    def load_index(self, present: Mapping[bytes, int] | None = None) -> None:
        """Read every index object into a fresh in-memory index: a second call replaces the
        first, it never adds to it. Superseded objects are skipped; damaged ones are
        reported and skipped (``repair index`` rebuilds the index from the packs). With
        ``present`` (pack ID -> stored size, from ``list_packs``), entries of any other pack,
        and entries beyond the end of a truncated pack, are left out, so a backup stores
        their blobs again instead of deduplicating against lost data."""
        import numpy as np

        from drengine.repository.index import Index
        from drengine.repository.index_format import decode_index

        loaded = {}
        for item in list_objects(self.backend, layout.INDEX, self.strays):
            name = layout.INDEX + item.oid
            try:
                if item.size > MAX_SEALED_OBJECT:
                    raise IntegrityError(f"index {item.oid} is {item.size} bytes, over the limit")
                plain = self.load_sealed(layout.INDEX, item.oid, _INDEX_AAD, "index")
                loaded[item.oid] = decode_index(plain, f"index {item.oid}")
            except ObjectNotFound:
                continue  # removed since the listing (a prune before our lock)
            except IntegrityError as e:
                self.report_damaged(name, str(e))
        superseded = {s.hex() for packs, sup in loaded.values() for s in sup}
        index = Index()
        for oid, (packs, _) in loaded.items():
            if oid in superseded:
                continue
            for pack_id, records in packs:
                if present is None:
                    index.stage_pack_array(pack_id, records)
                elif pack_id in present:
                    ends = records["offset"].astype(np.uint64) + records["length"]
                    index.stage_pack_array(pack_id, records[ends <= present[pack_id]])
        index.build()
        self.index = index

    def damaged_index_objects(self) -> list[str]:
        return sorted(n for n in self.damaged if n.startswith(layout.INDEX))

    def save_index(
        self,
        packs: list[tuple[bytes, list[BlobRecord]]],
        supersedes: list[bytes] | None = None,
    ) -> str:
        from drengine.repository.index_format import encode_index

        return self.save_sealed(layout.INDEX, encode_index(packs, supersedes), _INDEX_AAD)

    def delete_index(self, oid: str) -> None:
        self.backend.delete(layout.INDEX + oid)

    # ---- packs and blobs ------------------------------------------------------------------

    def blob_id(self, data: bytes | memoryview, blob_type: BlobType = BlobType.DATA) -> bytes:
        """Keyed BLAKE3; tree blobs use a key of their own, so a file whose bytes equal a
        serialized tree can never be mistaken for that tree (or the reverse)."""
        key = self.keys.chunk_id if blob_type == BlobType.DATA else self._tree_key
        return blake3.blake3(data, key=key).digest()

    def save_spooled(self, pack: SpooledPack) -> bytes:
        """Store a pack from its temporary file (``pack_spool``); its ID."""
        self.backend.put_file(layout.pack_name(pack.object_id), pack.fileno(), len(pack))
        return bytes.fromhex(pack.object_id)

    def save_pack(self, data: bytes | bytearray | memoryview) -> bytes:
        pack_id = layout.object_id(data)
        self.backend.put(layout.pack_name(pack_id), data)
        return bytes.fromhex(pack_id)

    def list_packs(self) -> dict[bytes, int]:
        """Pack ID -> stored size of every pack in its place; strays are reported."""
        return list_packs(self.backend, self.strays)

    def relocate_pack(self, pack_id: bytes, name: str) -> int:
        """Move a pack found under a wrong name into its place (verified against its ID);
        returns its size. The misplaced copy is removed once the pack is in place."""
        data = self.backend.get(name)
        if layout.object_id(data) != pack_id.hex():
            raise IntegrityError("it does not match its name (damaged)")
        self.backend.put(layout.pack_name(pack_id.hex()), data)
        self.backend.delete(name)
        self.strays.misplaced.pop(pack_id, None)
        return len(data)

    def delete_pack(self, pack_id: bytes) -> None:
        self.backend.delete(layout.pack_name(pack_id.hex()))

    def read_pack_trailer(self, pack_id: bytes, size: int) -> list[BlobRecord]:
        """The blob list a pack carries (its trailer), from two or three ranged reads."""
        what = f"pack {pack_id.hex()}"
        if size < HEADER_SIZE + _TRAILER_MIN:
            raise IntegrityError(f"{what} is truncated ({size} bytes)")
        head = self.read_pack(pack_id, 0, HEADER_SIZE)
        tail_len = min(size, _TRAILER_PROBE)
        tail = self.read_pack(pack_id, size - tail_len, tail_len)
        need = trailer_length(tail) + 4
        if tail_len < need <= size - HEADER_SIZE:
            tail = self.read_pack(pack_id, size - need, need)
        salt, records = parse_trailer_parts(self.keys.encryption, head, tail, size, what)
        with self._salt_lock:
            self._salts[pack_id] = salt
        return records

    def retained_until(self, name: str) -> datetime | None:
        """The end of an object's S3 Object Lock retention; None where there is none."""
        if not self.backend.capabilities.object_lock:
            return None
        return self.backend.retained_until(name)

    # ---- leftovers of killed or failed writes (the local backend's temporary files) --------

    def leftovers(self) -> list[TemporaryFile]:
        if not self.backend.capabilities.temporary_files:
            return []
        return list(self.backend.list_temporary())

    def remove_leftovers(self, older_than: dict[str, float], now: float) -> list[TemporaryFile]:
        """Remove temporary files whose directory (``data``, ``locks``, ...) maps to an age in
        seconds they are older than; directories not named are left alone. Returns what was
        removed."""
        removed = []
        for tmp in self.leftovers():
            top = tmp.name.split("/", 1)[0] if "/" in tmp.name else ""
            limit = older_than.get(top)
            if limit is not None and now - tmp.mtime > limit:
                self.backend.remove_temporary(tmp.name)
                removed.append(tmp)
        return removed

    def pack_missing(self, pack_id: bytes) -> None:
        """A read found the pack gone: use other copies of its blobs from now on."""
        if self.index.mark_missing(pack_id):
            self.report_damaged(layout.pack_name(pack_id.hex()), "the pack is missing from storage")

    def pack_salt(self, pack_id: bytes) -> bytes:
        with self._salt_lock:
            salt = self._salts.get(pack_id)
        if salt is None:
            head = self.read_pack(pack_id, 0, HEADER_SIZE)
            if not head.startswith(PACK_MAGIC):
                raise IntegrityError(f"pack {pack_id.hex()} has a damaged header")
            salt = head[len(PACK_MAGIC) :]
            with self._salt_lock:
                self._salts[pack_id] = salt
        return salt

    def read_pack(self, pack_id: bytes, offset: int = 0, length: int | None = None) -> bytes:
        name = layout.pack_name(pack_id.hex())
        try:
            return self.backend.get(name, offset, length)
        except ObjectNotFound:
            raise ObjectNotFound(
                f"pack {pack_id.hex()} is missing from {self.backend.location}"
            ) from None
        except StorageError as e:
            raise StorageError(f"pack {pack_id.hex()}: {e}") from None

    def open_blob(self, blob_id: bytes, entry: IndexEntry, ciphertext: bytes | memoryview) -> bytes:
        """Decrypt, decompress and verify one blob's stored bytes against its ID."""
        what = f"blob {blob_id.hex()} in pack {entry.pack_id.hex()}"
        rec = BlobRecord(entry.type, blob_id, entry.offset, entry.length, entry.raw_length)
        payload = decrypt_blob(
            self.keys.encryption, self.pack_salt(entry.pack_id), rec, ciphertext, what
        )
        data = blobcodec.decode(payload, entry.raw_length, what, entry.type == BlobType.TREE)
        if self.blob_id(data, entry.type) != blob_id:
            raise IntegrityError(f"{what} does not match its ID")
        return data

    def lookup(self, blob_id: bytes) -> IndexEntry:
        entry = self.index.lookup(blob_id)
        if entry is None:
            self._not_indexed(blob_id)
        return entry

    def _not_indexed(self, blob_id: bytes) -> NoReturn:
        """Raise why a blob has no usable index entry: the pack that held it is missing
        (found by an earlier read), or it is not indexed at all."""
        lost = self.index.missing_pack_of(blob_id)
        if lost is not None:
            raise ObjectNotFound(f"blob {blob_id.hex()}: pack {lost.hex()} is missing from storage")
        raise IntegrityError(f"blob {blob_id.hex()} is not in the index")

    def read_blob(self, blob_id: bytes, phases: Phases = NO_PHASES) -> bytes:
        """The verified plaintext of a blob. A copy in a missing or damaged pack is passed
        over for another copy (two hosts may have stored it); the first failure is raised
        when no copy reads. ``phases`` times the read (fetch) and the rest (decrypt)."""
        tried: set[bytes] = set()
        failures: list[DrengineError] = []
        while True:
            entry = self.index.lookup(blob_id, skip=frozenset(tried))
            if entry is None:
                if failures:
                    raise failures[0]
                self._not_indexed(blob_id)
            try:
                with phases.span("fetch"):
                    data = self.read_pack(entry.pack_id, entry.offset, entry.length)
                with phases.span("decrypt"):
                    return self.open_blob(blob_id, entry, data)
            except ObjectNotFound as e:
                self.pack_missing(entry.pack_id)
                failures.append(e)
            except (IntegrityError, StorageError) as e:
                tried.add(entry.pack_id)
                failures.append(e)
                with self._salt_lock:  # a header read damaged in transit must not stick
                    self._salts.pop(entry.pack_id, None)

    def load_tree(self, tree_id: bytes) -> list[Node]:
        entry = self.lookup(tree_id)
        if entry.type != BlobType.TREE:
            raise IntegrityError(f"blob {tree_id.hex()} is not a tree")
        return self.decode_tree_blob(tree_id, self.read_blob(tree_id))

    def decode_tree_blob(self, tree_id: bytes, data: bytes) -> list[Node]:
        """The nodes of a tree blob's verified plaintext (``TreeCache`` reads trees in runs)."""
        # Imported here: msgspec (~3 MiB) loads after the key is derived (test_key_before_numpy).
        from drengine.core.tree_decode import decode_tree

        try:
            return decode_tree(data)
        except (ValueError, KeyError, TypeError) as e:
            raise IntegrityError(f"tree {tree_id.hex()} is malformed: {e}") from None

    # ---- snapshots ------------------------------------------------------------------------

    def save_snapshot(self, snap: Snapshot) -> str:
        snap.id = self.save_sealed(layout.SNAPSHOTS, snap.to_bytes(), _SNAPSHOT_AAD)
        return snap.id

    def snapshot_ids(self) -> list[str]:
        return [o.oid for o in list_objects(self.backend, layout.SNAPSHOTS, self.strays)]

    def load_snapshot(self, oid: str) -> Snapshot:
        plain = self.load_sealed(layout.SNAPSHOTS, oid, _SNAPSHOT_AAD, "snapshot")
        try:
            return Snapshot.from_bytes(plain, oid)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise IntegrityError(f"snapshot {oid} is malformed: {e}") from None

    def snapshots(self) -> list[Snapshot]:
        """Every readable snapshot, oldest first. A damaged one is reported once and left
        out, so one bad object never stops backup, forget or ``restore latest``."""
        snaps = []
        for item in list_objects(self.backend, layout.SNAPSHOTS, self.strays):
            try:
                if item.size > MAX_SEALED_OBJECT:
                    raise IntegrityError(
                        f"snapshot {item.oid} is {item.size} bytes, over the limit"
                    )
                snaps.append(self.load_snapshot(item.oid))
            except ObjectNotFound:
                continue  # forgotten since the listing
            except IntegrityError as e:
                self.report_damaged(layout.SNAPSHOTS + item.oid, str(e))
        return sorted(snaps, key=lambda s: (s.sort_time(), s.id))

    def delete_snapshot(self, oid: str) -> None:
        self.backend.delete(layout.SNAPSHOTS + oid)

    def find_snapshot(self, ref: str) -> Snapshot:
        """An ID, a unique prefix of one, or ``latest`` (the newest readable snapshot)."""
        if ref == "latest":
            snaps = self.snapshots()
            if not snaps:
                damaged = [n for n in self.damaged if n.startswith(layout.SNAPSHOTS)]
                also = f" that can be read ({len(damaged)} are damaged)" if damaged else ""
                raise SnapshotNotFound(
                    f"the repository at {self.backend.location} has no snapshots{also}"
                )
            return snaps[-1]
        return self.load_snapshot(self.resolve_snapshot_id(ref))

    def resolve_snapshot_id(self, ref: str) -> str:
        """The full ID an ID or unique prefix names, without reading the snapshot (so a
        damaged one can still be named, to forget it)."""
        if not ref or any(c not in "0123456789abcdef" for c in ref):
            raise UsageError(f"{ref!r} is not a snapshot ID (hex digits) or 'latest'")
        matches = [oid for oid in self.snapshot_ids() if oid.startswith(ref)]
        if not matches:
            raise SnapshotNotFound(f"no snapshot {ref} in {self.backend.location}")
        if len(matches) > 1:
            raise SnapshotNotFound(f"snapshot prefix {ref} is ambiguous ({len(matches)} match)")
        return matches[0]


def _enable_retention(backend: Backend, settings: Settings, *, creating: bool) -> None:
    """Have the backend write every new object but locks (which must stay deletable) under
    the repository's S3 Object Lock retention (docs/storage.md)."""
    if not settings.object_lock_mode:
        return
    where = backend.location
    if not backend.capabilities.object_lock:
        if creating:
            raise UsageError(f"S3 Object Lock needs an s3:// repository, not {where}")
        # A copy of the repository on other storage (3-2-1) must still open and restore.
        log.warning(
            "the repository at %s asks for S3 Object Lock, which this storage cannot do: "
            "objects written now are not protected",
            where,
        )
        return
    if creating and not backend.object_lock_enabled():
        raise StorageError(
            f"the bucket of {where} does not have S3 Object Lock enabled: create the bucket "
            "with Object Lock, or enable it on a versioned bucket (docs/storage.md)"
        )
    backend.set_retention(settings.object_lock_mode, settings.object_lock_days, (layout.LOCKS,))


def _key_meta() -> dict[str, str]:
    # Only the creation time: host and user names would tell an observer of the storage
    # who runs backups, and the principles say storage reveals nothing of the sort.
    return {"created": datetime.now(UTC).isoformat()}
