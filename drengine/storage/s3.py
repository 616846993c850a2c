"""Amazon S3 and S3-compatible servers (SeaweedFS, MinIO, Ceph RGW, ...) through boto3.

Objects live under ``s3://BUCKET/PREFIX``: object ``data/ab/ab12..`` is key
``PREFIX/data/ab/ab12..``. How each contract point is kept (``docs/storage.md``):

- ``put``: a single PUT is atomic on S3; larger objects go up as a multipart upload, which
  also becomes visible only when completed.
- ``put_if_absent``: a conditional write (``If-None-Match: *``); the server answers 412
  (or 409 for a concurrent conditional write) if the key exists. A server that ignores the
  header would silently break locks, so the first exclusive write on a non-AWS endpoint
  checks that the server honours it, and refuses to go on if not.
- ``get``: ``Range: bytes=a-b``; fewer bytes than asked is a short read.

Optional S3 Object Lock (``set_retention``): every later object, but names the repository
exempts (its locks, which must stay deletable), is written with a retention date. Prune asks
``retained_until`` before deleting.

Credentials come from boto3's standard chain; the endpoint from ``endpoint_url``, else
boto3's own configuration (``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3``, the config file).
Failures that may pass are raised as ``TransientStorageError`` for ``RetryingBackend``;
botocore's own retries are off so that one layer decides, with one time budget. Every
library failure becomes a ``StorageError`` naming the object and the endpoint
(``s3_errors``), never "unexpected".
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from drengine.storage import options
from drengine.storage.base import BackendDefaults, Buffer, Capabilities, ObjectInfo, check_name
from drengine.storage.options import S3Options
from drengine.storage.retry import TransientStorageError
from drengine.storage.s3_errors import EXISTS_CODES, LIBRARY_ERRORS, S3ErrorMapper

if TYPE_CHECKING:
    from types_boto3_s3.client import S3Client

log = logging.getLogger(__name__)

MiB = 1024 * 1024
MULTIPART_THRESHOLD = 64 * MiB  # packs are ~16 MiB: nearly every put is one PUT
PART_SIZE = 16 * MiB
_MIN_PART_SIZE = 5 * MiB  # S3's minimum for every part but the last

_PROBE_PREFIX = ".drengine-conditional-write-probe-"  # no repository object has this name
OBJECT_LOCK_MODES = ("GOVERNANCE", "COMPLIANCE")

# Named in a message below (the options are ``options.py``'s).
ENV_UNSAFE_NO_CONDITIONAL = options.ENV_UNSAFE_NO_CONDITIONAL


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` → (bucket, prefix without surrounding slashes)."""
    if not url.startswith("s3://"):
        raise UsageError(f"not an s3:// URL: {url}")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not bucket or any(c in bucket for c in "?#:@ "):
        raise UsageError(f"invalid S3 bucket name in {url}: use s3://BUCKET/PREFIX")
    if prefix:
        try:
            check_name(prefix)
        except ValueError:
            raise UsageError(f"invalid S3 prefix in {url}: no empty, '.' or '..' parts") from None
    return bucket, prefix


def _is_aws(endpoint: str) -> bool:
    host = urlsplit(endpoint).hostname or ""
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn"))


class S3Backend(BackendDefaults):
    # Reads cost a round trip (the repository caches index and snapshots); Object Lock
    # methods work (whether the bucket has it enabled is object_lock_enabled's answer).
    capabilities = Capabilities(remote=True, object_lock=True)

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        storage_class: str | None = None,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        max_connections: int = 16,
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        part_size: int = PART_SIZE,
        verify_conditional_writes: bool | None = None,
        unsafe_no_conditional_writes: bool = False,
    ) -> None:
        if part_size < _MIN_PART_SIZE or multipart_threshold < part_size:
            raise ValueError("need 5 MiB <= part_size <= multipart_threshold")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._key_prefix = f"{self.prefix}/" if self.prefix else ""
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        # Passed to every PUT and multipart start; a KMS key implies SSE-KMS.
        self.write_args: dict[str, Any] = {}
        if storage_class:
            self.write_args["StorageClass"] = storage_class
        if sse_kms_key_id:
            self.write_args["ServerSideEncryption"] = sse or "aws:kms"
            self.write_args["SSEKMSKeyId"] = sse_kms_key_id
        elif sse:
            self.write_args["ServerSideEncryption"] = sse
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"total_max_attempts": 1, "mode": "standard"},  # RetryingBackend retries
            max_pool_connections=max_connections,  # one connection per worker thread
        )
        # A private session: sessions are not thread-safe, clients are, so every thread of
        # the pipeline shares this one client and its connection pool.
        try:
            session = boto3.session.Session()
            self.client: S3Client = session.client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config
            )
        except (BotoCoreError, ValueError) as e:  # a bad AWS_PROFILE, endpoint URL, region
            raise UsageError(f"cannot set up S3 access to s3://{bucket}/{self.prefix}: {e}") from e
        self.endpoint: str = self.client.meta.endpoint_url
        self._errors = S3ErrorMapper(
            bucket, self._key_prefix, self.location, self.endpoint, self.client.meta.region_name
        )
        self._shown_endpoint = self._errors.shown_endpoint  # for messages
        if verify_conditional_writes is None:
            # AWS S3 honours If-None-Match since August 2024; other servers are checked.
            verify_conditional_writes = not _is_aws(self.endpoint)
        self._conditional_ok: bool | None = None if verify_conditional_writes else True
        self._unsafe = unsafe_no_conditional_writes
        self._probe_lock = threading.Lock()
        self._retention: tuple[str, int, tuple[str, ...]] | None = None  # set_retention
        self._bucket_locked: bool | None = None  # Object Lock enabled on the bucket, once asked
        self._heads_needed: bool | None = None  # retained_until: may any object be retained?
        # Object Lock PUTs need Content-MD5 or a checksum; boto3 sends CRC32 unless told to
        # send checksums only when required, and then we add Content-MD5 ourselves.
        checksums = getattr(self.client.meta.config, "request_checksum_calculation", None)
        self._md5 = checksums == "when_required"

    @classmethod
    def from_url(cls, url: str, opts: S3Options | None = None, **kwargs: Any) -> S3Backend:
        """The backend for ``url`` with ``opts`` (default: ``DRENGINE_S3_*`` of the process
        environment, read now); ``kwargs`` win over both."""
        bucket, prefix = parse_s3_url(url)
        given = opts if opts is not None else S3Options.from_env(os.environ)
        return cls(bucket, prefix, **{**given.backend_kwargs(), **kwargs})

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, name: str) -> str:
        check_name(name)
        return self._key_prefix + name

    # ---- errors -------------------------------------------------------------------------

    def _error(self, e: BaseException, op: str, name: str) -> StorageError:
        """``e`` as the contract's exception (``s3_errors``); transient ones are retried."""
        return self._errors(e, op, name, retention=self._retention is not None)

    def _field(self, answer: Mapping[str, Any], field: str, op: str, key: str) -> Any:
        """``answer[field]``; a server that left it out gets a clear error, not a KeyError."""
        value = answer.get(field)
        if value is None:
            raise StorageError(
                f"s3 {op} of s3://{self.bucket}/{key} at {self._shown_endpoint}: the server's "
                f"answer has no {field}"
            )
        return value

    # ---- writes -------------------------------------------------------------------------

    def put(self, name: str, data: Buffer) -> None:
        key = self._key(name)
        try:
            self._upload(key, data, conditional=False, lock=self._lock_args(name))
        except LIBRARY_ERRORS as e:
            raise self._error(e, "PUT", name) from e

    def put_if_absent(self, name: str, data: Buffer) -> None:
        key = self._key(name)
        if not self._conditional_writes_honoured():
            self._put_if_absent_unsafe(name, key, data)
            return
        try:
            self._upload(key, data, conditional=True, lock=self._lock_args(name))
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") in EXISTS_CODES:
                raise ObjectExists(f"object {name} already exists in {self.location}") from e
            raise self._error(e, "PUT", name) from e
        except LIBRARY_ERRORS as e:
            raise self._error(e, "PUT", name) from e

    def _upload(self, key: str, data: Buffer, conditional: bool, lock: dict[str, Any]) -> None:
        cond: dict[str, Any] = {"IfNoneMatch": "*"} if conditional else {}
        if len(data) <= self.multipart_threshold:
            # botocore takes bytes but no memoryview; one copy of a pack is cheap next to
            # the network, and leaves the caller's buffer free as soon as we return.
            body = data if isinstance(data, bytes) else bytes(data)
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                **cond,
                **self.write_args,
                **lock,
                **self._md5_arg(body, lock),
            )
            return
        up = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, **self.write_args, **lock
        )
        upload_id = self._field(up, "UploadId", "CreateMultipartUpload", key)
        try:
            view = memoryview(data)
            parts: list[dict[str, Any]] = []
            for number, start in enumerate(range(0, len(view), self.part_size), start=1):
                chunk = bytes(view[start : start + self.part_size])
                part = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=chunk,
                    **self._md5_arg(chunk, lock),
                )
                etag = self._field(part, "ETag", "UploadPart", key)
                parts.append({"PartNumber": number, "ETag": etag})
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},  # type: ignore[typeddict-item]
                **cond,
            )
        except BaseException:
            try:  # never leave billed, invisible parts behind
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except LIBRARY_ERRORS as e:  # the original failure is the one to report
                log.warning("cannot abort multipart upload of %s: %s", key, e)
            raise

    # ---- object lock --------------------------------------------------------------------

    def set_retention(self, mode: str, days: int, exempt: tuple[str, ...] = ()) -> None:
        """Write every later object whose name does not start with one of ``exempt`` with
        Object Lock ``mode`` until ``days`` after its write (the bucket must have Object Lock
        enabled; check with ``object_lock_enabled``)."""
        if mode not in OBJECT_LOCK_MODES or days < 1:
            raise ValueError(f"invalid object lock retention {mode!r}, {days} days")
        self._retention = (mode, days, exempt)

    def _lock_args(self, name: str) -> dict[str, Any]:
        if self._retention is None or name.startswith(self._retention[2]):
            return {}
        mode, days, _ = self._retention
        until = datetime.now(UTC) + timedelta(days=days)
        return {"ObjectLockMode": mode, "ObjectLockRetainUntilDate": until}

    def _md5_arg(self, body: bytes, lock: dict[str, Any]) -> dict[str, Any]:
        if not (lock and self._md5):
            return {}
        digest = hashlib.md5(body, usedforsecurity=False).digest()
        return {"ContentMD5": base64.b64encode(digest).decode("ascii")}

    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock enabled (asked once per backend)."""
        if self._bucket_locked is None:
            try:
                conf = self.client.get_object_lock_configuration(Bucket=self.bucket)
                state = conf.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled")
                self._bucket_locked = state == "Enabled"
            except ClientError as e:
                code = e.response.get("Error", {}).get("Code")
                if code not in ("ObjectLockConfigurationNotFoundError", "NotImplemented"):
                    raise self._error(e, "GET object lock configuration", "") from e
                self._bucket_locked = False  # none set, or a server without Object Lock
            except LIBRARY_ERRORS as e:
                raise self._error(e, "GET object lock configuration", "") from e
        return self._bucket_locked

    def retained_until(self, name: str) -> datetime | None:
        """The end of ``name``'s Object Lock retention (possibly past), None if it has none.

        HEAD shows the date only to callers allowed ``s3:GetObjectRetention``.
        """
        if self._heads_needed is None:
            try:
                self._heads_needed = self.object_lock_enabled()
            except TransientStorageError:
                raise
            except StorageError as e:  # not allowed to ask, say: look at each object instead
                log.debug("cannot read the object lock configuration: %s", e)
                self._heads_needed = True
        if not self._heads_needed:
            return None  # no object in this bucket can be retained: save the HEADs
        key = self._key(name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except LIBRARY_ERRORS as e:
            err = self._error(e, "HEAD", name)
            if isinstance(err, ObjectNotFound):
                return None
            raise err from e
        until = head.get("ObjectLockRetainUntilDate")
        return until.astimezone(UTC) if until is not None else None

    def _conditional_writes_honoured(self) -> bool:
        """Once per backend: does a second ``If-None-Match: *`` PUT of one key fail?"""
        with self._probe_lock:
            if self._conditional_ok is None:
                name = _PROBE_PREFIX + secrets.token_hex(8)
                key = self._key_prefix + name
                try:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=b"1", IfNoneMatch="*")
                    try:
                        self.client.put_object(
                            Bucket=self.bucket, Key=key, Body=b"2", IfNoneMatch="*"
                        )
                        honoured = False
                    except ClientError as e:
                        if e.response.get("Error", {}).get("Code") not in EXISTS_CODES:
                            raise
                        honoured = True
                    finally:
                        self.client.delete_object(Bucket=self.bucket, Key=key)
                except LIBRARY_ERRORS as e:
                    raise self._error(e, "conditional-write check", name) from e
                if not honoured:
                    log.warning("s3 endpoint %s ignores If-None-Match", self._shown_endpoint)
                self._conditional_ok = honoured
            return self._conditional_ok

    def _put_if_absent_unsafe(self, name: str, key: str, data: Buffer) -> None:
        if not self._unsafe:
            raise StorageError(
                f"the S3 server at {self._shown_endpoint} ignores conditional writes "
                "(If-None-Match), so drengine cannot create locks safely there; upgrade the "
                f"server, or set {ENV_UNSAFE_NO_CONDITIONAL}=1 to accept racy locks"
            )
        # Explicitly accepted by the user: check, then write. Two writers can both win.
        try:
            self.stat(name)
        except ObjectNotFound:
            self.put(name, data)
            return
        raise ObjectExists(f"object {name} already exists in {self.location}")

    # ---- reads --------------------------------------------------------------------------

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        key = self._key(name)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("negative offset or length")
        if length == 0 or (length is None and offset > 0):
            return self._get_via_stat(name, offset, length)
        args: dict[str, Any] = {}
        if length is not None:
            args["Range"] = f"bytes={offset}-{offset + length - 1}"
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, **args)
            data = resp["Body"].read()
            status = resp["ResponseMetadata"]["HTTPStatusCode"]
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "InvalidRange":  # offset >= size
                raise self._short(name, offset, length, 0) from e
            raise self._error(e, "GET", name) from e
        except LIBRARY_ERRORS as e:
            raise self._error(e, "GET", name) from e
        if length is None:
            return data
        if status == 200:  # a server that ignored Range sent the whole object
            data = data[offset : offset + length]
        if len(data) != length:
            raise self._short(name, offset, length, len(data))
        return data

    def _get_via_stat(self, name: str, offset: int, length: int | None) -> bytes:
        # S3 answers 416 for any range on an empty object and for ranges starting at the end,
        # so zero-length reads and open-ended reads past the start ask for the size first.
        size = self.stat(name).size
        if length == 0:
            if offset > size:
                raise self._short(name, offset, 0, 0)
            return b""
        if offset >= size:
            return b""  # like reading a file at or past its end
        return self.get(name, offset, size - offset)

    def _short(self, name: str, offset: int, length: int | None, got: int) -> StorageError:
        return StorageError(
            f"short read of {name} in {self.location}: wanted {length} bytes at {offset}, got {got}"
        )

    def stat(self, name: str) -> ObjectInfo:
        key = self._key(name)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except LIBRARY_ERRORS as e:
            raise self._error(e, "HEAD", name) from e
        return ObjectInfo(name, int(self._field(head, "ContentLength", "HEAD", key)))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        token: str | None = None
        cut = len(self._key_prefix)
        full = self._key_prefix + prefix
        while True:
            args: dict[str, Any] = {"ContinuationToken": token} if token else {}
            try:
                page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=full, **args)
            except LIBRARY_ERRORS as e:
                raise self._error(e, "LIST", prefix) from e
            for obj in page.get("Contents", []):
                key = str(self._field(obj, "Key", "LIST", full))
                # Servers that store keys as file paths (SeaweedFS) match "p//" like "p/".
                if not key.startswith(full):
                    continue
                name = key[cut:]
                try:
                    check_name(name)  # skip "folder" markers ("data/") that consoles create
                except ValueError:
                    continue
                if not name.startswith(_PROBE_PREFIX):
                    yield ObjectInfo(name, int(self._field(obj, "Size", "LIST", key)))
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageError(f"s3 LIST of {self.location} was truncated without a token")

    def delete(self, name: str) -> None:
        key = self._key(name)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=key)
        except ClientError as e:
            err = self._error(e, "DELETE", name)
            if not isinstance(err, ObjectNotFound):  # deleting a missing object is fine
                raise err from e
        except LIBRARY_ERRORS as e:
            raise self._error(e, "DELETE", name) from e

    def close(self) -> None:
        self.client.close()
