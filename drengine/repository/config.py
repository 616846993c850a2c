"""The repository config: a plain header (format version, ID) and sealed settings."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass

from drengine.core.errors import IntegrityError, UnsupportedFormat
from drengine.core.model import load_json
from drengine.crypto.aead import seal, unseal
from drengine.crypto.keys import b64d
from drengine.repository.listing import is_object_id

FORMAT_NAME = "drengine"
FORMAT_VERSION = 1
_SETTINGS_AAD = b"drengine config settings"
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")  # S3 Object Lock retention modes
MAX_CHUNK = 16 << 20  # = blobcodec.MAX_DATA_BLOB
MAX_PACK_SIZE = 512 << 20
MAX_OBJECT_LOCK_DAYS = 36500
# Settings every repository has; the object lock ones came later and are optional (§3).
_REQUIRED = ("chunker_min", "chunker_avg", "chunker_max", "compression_level", "pack_size")


@dataclass(frozen=True)
class Settings:
    """Chosen at ``init``; fixed for the life of the repository (chunker) or a default."""

    chunker_min: int = 256 * 1024
    chunker_avg: int = 1024 * 1024
    chunker_max: int = 4 * 1024 * 1024
    compression_level: int = 3
    pack_size: int = 16 * 1024 * 1024
    object_lock_mode: str = ""  # "" (none) or one of OBJECT_LOCK_MODES
    object_lock_days: int = 0  # retention of every new object but locks, from its write

    def __post_init__(self) -> None:
        # FastCDC's own ranges, a data blob's limit (format §11), zstd's levels: settings
        # beyond them would only fail later, in the middle of a backup or a restore.
        lo, avg, hi = self.chunker_min, self.chunker_avg, self.chunker_max
        if not (64 <= lo <= 1 << 20 and 256 <= avg <= 4 << 20 and 1024 <= hi <= MAX_CHUNK):
            raise ValueError(f"chunk sizes {lo}/{avg}/{hi} are out of range")
        if not lo <= avg <= hi:
            raise ValueError(f"chunk sizes {lo}/{avg}/{hi} are not in order")
        if not 0 <= self.compression_level <= 22:
            raise ValueError(f"compression level {self.compression_level} is out of range")
        if not 4096 <= self.pack_size <= MAX_PACK_SIZE:
            raise ValueError(f"pack size {self.pack_size} is out of range")
        mode, days = self.object_lock_mode, self.object_lock_days
        if mode not in ("", *OBJECT_LOCK_MODES):
            raise ValueError(f"object lock mode {mode!r} is not GOVERNANCE or COMPLIANCE")
        if (mode == "") != (days == 0) or not 0 <= days <= MAX_OBJECT_LOCK_DAYS:
            raise ValueError(
                f"object lock needs a mode and 1 to {MAX_OBJECT_LOCK_DAYS} days together, "
                f"not {mode!r} and {days}"
            )

    def to_json(self) -> dict[str, int | str]:
        fields = asdict(self)
        if not self.object_lock_mode:
            # Left out, so repositories without object lock stay readable by releases that
            # predate the fields (they refuse unknown settings).
            del fields["object_lock_mode"], fields["object_lock_days"]
        return fields


@dataclass(frozen=True)
class Config:
    version: int
    repo_id: str
    settings: Settings

    def to_bytes(self, encryption_key: bytes) -> bytes:
        sealed = seal(
            encryption_key,
            json.dumps(self.settings.to_json(), sort_keys=True).encode(),
            _SETTINGS_AAD + self.repo_id.encode(),
        )
        doc = {
            "format": FORMAT_NAME,
            "version": self.version,
            "id": self.repo_id,
            "settings": base64.b64encode(sealed).decode("ascii"),
        }
        return json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"


def read_header(data: bytes, location: str) -> tuple[int, str, bytes]:
    """Check the plain part before asking for a password: (version, repo_id, sealed)."""
    try:
        doc = load_json(data)
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise ValueError("not a drengine config")
        version, repo_id = int(doc["version"]), str(doc["id"])
        if version < 1:
            raise ValueError(f"version {version} does not exist")
        if not is_object_id(repo_id):
            # It names the local cache directory: "../x" or "/x" would lead it elsewhere.
            raise ValueError("the repository ID is not 64 hex digits")
        sealed = b64d(doc["settings"])
    except (ValueError, KeyError, TypeError, OverflowError) as e:
        raise IntegrityError(
            f"the config of the repository at {location} is damaged: {e}"
        ) from None
    if version > FORMAT_VERSION:
        raise UnsupportedFormat(
            f"the repository at {location} has format version {version}; this drengine reads "
            f"up to version {FORMAT_VERSION}: upgrade drengine"
        )
    return version, repo_id, sealed


def open_settings(sealed: bytes, repo_id: str, encryption_key: bytes) -> Settings:
    plain = unseal(encryption_key, sealed, _SETTINGS_AAD + repo_id.encode(), "repository config")
    try:
        fields = load_json(plain)
    except ValueError as e:
        raise IntegrityError(f"the repository config's settings are not JSON: {e}") from None
    if not isinstance(fields, dict):
        raise IntegrityError("the repository config's settings are not a JSON object")
    unknown = set(fields) - set(Settings.__dataclass_fields__)
    if unknown:
        # A setting this version does not know may change how data is cut or stored.
        raise UnsupportedFormat(
            "the repository uses settings this drengine does not know "
            f"({', '.join(sorted(unknown))}): upgrade drengine"
        )
    missing = set(_REQUIRED) - set(fields)
    if missing:
        raise IntegrityError(f"the repository config lacks {', '.join(sorted(missing))}")
    try:
        return Settings(
            **{k: int(fields[k]) for k in _REQUIRED},
            object_lock_mode=str(fields.get("object_lock_mode", "")),
            object_lock_days=int(fields.get("object_lock_days", 0)),
        )
    except (TypeError, ValueError, OverflowError) as e:  # OverflowError: int(Infinity)
        raise IntegrityError(f"the repository config's settings are invalid: {e}") from None
