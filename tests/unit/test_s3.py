"""``S3Backend`` beyond the shared contract: URLs, options, multipart, errors, conditional writes.

Runs on moto's in-process fake S3 (``mock_aws``); nothing leaves the process except the
dead-endpoint test, which connects to a closed port on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.exceptions
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    FlexibleChecksumError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
    TokenRetrievalError,
)
from moto import mock_aws

from drengine.core.errors import ObjectExists, ObjectNotFound, StorageError, UsageError
from drengine.storage.base import Capabilities
from drengine.storage.retry import RetryingBackend, TransientStorageError
from drengine.storage.s3 import S3Backend, parse_s3_url
from drengine.storage.url import open_backend

MiB = 1024 * 1024
BUCKET = "unit-bucket"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith(("DRENGINE_S3_", "AWS_ENDPOINT_URL")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def moto() -> Iterator[None]:
    with mock_aws():
        yield


def _backend(**kwargs: Any) -> S3Backend:
    b = S3Backend(BUCKET, "repo", region="us-east-1", **kwargs)
    b.client.create_bucket(Bucket=BUCKET)
    return b


def _count_calls(b: S3Backend, operation: str) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    b.client.meta.events.register(
        f"provide-client-params.s3.{operation}", lambda params, **_: calls.append(params)
    )
    return calls


# ---- URLs and configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://bkt", "bkt", ""),
        ("s3://bkt/", "bkt", ""),
        ("s3://bkt/repo", "bkt", "repo"),
        ("s3://bkt/a/b/c/", "bkt", "a/b/c"),
        ("s3://my.bucket-1/host/2026", "my.bucket-1", "host/2026"),
    ],
)
def test_parse_url(url: str, bucket: str, prefix: str) -> None:
    assert parse_s3_url(url) == (bucket, prefix)


@pytest.mark.parametrize("url", ["s3://", "s3:///prefix", "s3://bkt/a//b", "s3://bkt/../x"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError):
        open_backend(url)


def test_open_backend_wraps_s3_in_retries(moto: None) -> None:
    b = open_backend("s3://bkt/some/prefix/")
    assert isinstance(b, RetryingBackend)
    assert isinstance(b.inner, S3Backend)
    assert b.location == "s3://bkt/some/prefix"
    assert (b.inner.bucket, b.inner.prefix) == ("bkt", "some/prefix")


def test_endpoint_from_aws_endpoint_url_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # boto3 reads AWS_ENDPOINT_URL itself (since 1.28.57); the backend does not need to.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9999")
    assert S3Backend("bkt").endpoint == "http://127.0.0.1:9999"
    explicit = S3Backend("bkt", endpoint_url="http://127.0.0.2:8333")
    assert explicit.endpoint == "http://127.0.0.2:8333"


def test_client_config_timeouts_no_botocore_retries_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRENGINE_S3_READ_TIMEOUT", "7.5")
    b = S3Backend.from_url("s3://bkt/p", max_connections=24)
    config = b.client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (10.0, 7.5)
    assert config.max_pool_connections == 24
    assert config.retries is not None and config.retries["total_max_attempts"] == 1


def test_options_given_as_an_object_win_over_the_environment(
    monkeypatch: pytest.MonkeyPatch, moto: None
) -> None:
    from drengine.storage.options import S3Options

    monkeypatch.setenv("DRENGINE_S3_STORAGE_CLASS", "GLACIER_IR")
    monkeypatch.setenv("DRENGINE_S3_READ_TIMEOUT", "7.5")
    from_env = open_backend("s3://bkt/p")
    assert isinstance(from_env, RetryingBackend) and isinstance(from_env.inner, S3Backend)
    assert from_env.inner.write_args == {"StorageClass": "GLACIER_IR"}
    # Two policies in one process, each with its own settings: no environment involved.
    opts = S3Options(storage_class="STANDARD_IA", read_timeout=3.0, retry_budget=5.0)
    given = open_backend("s3://bkt/p", opts)
    assert isinstance(given, RetryingBackend) and isinstance(given.inner, S3Backend)
    assert given.inner.write_args == {"StorageClass": "STANDARD_IA"}
    assert given.inner.client.meta.config.read_timeout == 3.0
    assert given.policy.budget == 5.0
    layered = S3Options.from_env({"DRENGINE_S3_SSE": "AES256"}).with_given(
        storage_class="ONEZONE_IA", region=None, sse=""
    )
    assert (layered.sse, layered.storage_class, layered.region) == ("AES256", "ONEZONE_IA", None)


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_bad_timeout_env_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("DRENGINE_S3_CONNECT_TIMEOUT", value)
    with pytest.raises(UsageError, match="DRENGINE_S3_CONNECT_TIMEOUT"):
        open_backend("s3://bkt/p")


# ---- storage class and server-side encryption -------------------------------------------------


def test_storage_class_and_sse_from_env(moto: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DRENGINE_S3_STORAGE_CLASS", "STANDARD_IA")
    monkeypatch.setenv("DRENGINE_S3_SSE", "AES256")
    b = S3Backend.from_url("s3://unit-bucket/repo")
    b.client.create_bucket(Bucket=BUCKET)
    b.put("data/ab/abcd", b"x" * 100)
    b.put_if_absent("locks/l1", b"lock")
    for key in ("repo/data/ab/abcd", "repo/locks/l1"):
        head = b.client.head_object(Bucket=BUCKET, Key=key)
        assert head["StorageClass"] == "STANDARD_IA"
        assert head["ServerSideEncryption"] == "AES256"


def test_kms_key_implies_sse_kms(moto: None) -> None:
    b = _backend(sse_kms_key_id="arn:aws:kms:us-east-1:123456789012:key/abc")
    assert b.write_args == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "arn:aws:kms:us-east-1:123456789012:key/abc",
    }
    puts = _count_calls(b, "PutObject")
    b.put("config", b"c")
    assert puts[0]["SSEKMSKeyId"].endswith("key/abc")
    head = b.client.head_object(Bucket=BUCKET, Key="repo/config")
    assert head["ServerSideEncryption"] == "aws:kms"


def test_no_options_sends_no_extra_headers(moto: None) -> None:
    b = _backend()
    puts = _count_calls(b, "PutObject")
    b.put("config", b"c")
    assert set(puts[0]) == {"Bucket", "Key", "Body"}


# ---- multipart --------------------------------------------------------------------------------


def _multipart_backend(**kwargs: Any) -> S3Backend:
    return _backend(multipart_threshold=6 * MiB, part_size=5 * MiB, **kwargs)


def test_small_objects_are_one_put(moto: None) -> None:
    b = _multipart_backend()
    starts = _count_calls(b, "CreateMultipartUpload")
    b.put("data/aa/aa", os.urandom(6 * MiB))  # at the threshold: still one PUT
    assert starts == []


def test_large_object_goes_up_in_parts(moto: None) -> None:
    b = _multipart_backend(storage_class="STANDARD_IA", sse="AES256")
    parts = _count_calls(b, "UploadPart")
    payload = os.urandom(12 * MiB + 7)
    b.put("data/ab/abcd", memoryview(bytearray(payload)))
    assert [p["PartNumber"] for p in parts] == [1, 2, 3]
    assert b.get("data/ab/abcd") == payload
    assert b.get("data/ab/abcd", 5 * MiB - 3, 10) == payload[5 * MiB - 3 : 5 * MiB + 7]
    head = b.client.head_object(Bucket=BUCKET, Key="repo/data/ab/abcd")
    assert (head["StorageClass"], head["ServerSideEncryption"]) == ("STANDARD_IA", "AES256")


def test_large_put_if_absent_is_exclusive(moto: None) -> None:
    b = _multipart_backend()
    b.put_if_absent("locks/big", b"a" * (7 * MiB))
    with pytest.raises(ObjectExists):
        b.put_if_absent("locks/big", b"b" * (7 * MiB))
    assert b.get("locks/big", 0, 3) == b"aaa"
    assert list(b.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == []


def test_failed_multipart_upload_is_aborted(moto: None) -> None:
    b = _multipart_backend()
    n = 0

    def fail_second_part(**_: Any) -> None:
        nonlocal n
        n += 1
        if n == 2:
            raise EndpointConnectionError(endpoint_url="http://s3.test")

    b.client.meta.events.register("before-call.s3.UploadPart", fail_second_part)
    with pytest.raises(TransientStorageError, match="cannot reach s3 endpoint"):
        b.put("data/ab/abcd", os.urandom(12 * MiB))
    assert list(b.client.list_multipart_uploads(Bucket=BUCKET).get("Uploads", [])) == []
    with pytest.raises(ObjectNotFound):
        b.stat("data/ab/abcd")


# ---- listing ----------------------------------------------------------------------------------


def test_list_follows_continuation_tokens(moto: None) -> None:
    b = _backend()
    for i in range(7):
        b.put(f"index/i{i}", b"x" * i)
    b.client.meta.events.register(
        "provide-client-params.s3.ListObjectsV2", lambda params, **_: params.update(MaxKeys=2)
    )
    lists = _count_calls(b, "ListObjectsV2")
    assert {i.name: i.size for i in b.list("index/")} == {f"index/i{i}": i for i in range(7)}
    assert len(lists) == 4


def test_list_skips_folder_markers_and_other_prefixes(moto: None) -> None:
    b = _backend()
    b.put("data/ab/abcd", b"1")
    for key in ("repo/data/", "repo/data/ab/", "repo2/data/ab/abcd", "other"):
        b.client.put_object(Bucket=BUCKET, Key=key, Body=b"")
    assert [i.name for i in b.list("")] == ["data/ab/abcd"]


# ---- error mapping ----------------------------------------------------------------------------


def _client_error(status: int, code: str) -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": "msg"}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutObject",
    )


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (_client_error(503, "SlowDown"), TransientStorageError),
        (_client_error(429, "TooManyRequests"), TransientStorageError),
        (_client_error(500, "InternalError"), TransientStorageError),
        (_client_error(502, "BadGateway"), TransientStorageError),
        (_client_error(400, "RequestTimeout"), TransientStorageError),
        (_client_error(404, "NoSuchKey"), ObjectNotFound),
        (_client_error(404, "404"), ObjectNotFound),
        (_client_error(403, "AccessDenied"), StorageError),
        (_client_error(403, "SignatureDoesNotMatch"), StorageError),
        (_client_error(404, "NoSuchBucket"), StorageError),
        (_client_error(400, "InvalidArgument"), StorageError),
        (EndpointConnectionError(endpoint_url="http://x"), TransientStorageError),
        (ReadTimeoutError(endpoint_url="http://x"), TransientStorageError),
        (ConnectionResetError(104, "Connection reset by peer"), TransientStorageError),
        (NoCredentialsError(), StorageError),
    ],
)
def test_error_mapping(moto: None, error: Exception, kind: type[StorageError]) -> None:
    b = _backend()
    mapped = b._error(error, "PUT", "data/ab/abcd")
    assert type(mapped) is kind
    assert str(mapped)


def test_error_messages_name_what_and_where(moto: None) -> None:
    b = _backend()
    assert "bucket unit-bucket does not exist" in str(
        b._error(_client_error(404, "NoSuchBucket"), "GET", "config")
    )
    denied = str(b._error(_client_error(403, "AccessDenied"), "PUT", "config"))
    assert "access denied to s3://unit-bucket/repo/config" in denied
    assert "credentials" in str(b._error(NoCredentialsError(), "GET", "config"))


def test_missing_bucket_is_a_storage_error(moto: None) -> None:
    b = S3Backend("no-such-bucket", "repo", region="us-east-1")
    with pytest.raises(StorageError, match="bucket no-such-bucket does not exist") as exc:
        b.get("config")
    assert not isinstance(exc.value, ObjectNotFound | TransientStorageError)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_dead_endpoint_is_transient_and_named() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    b = S3Backend("bkt", "p", endpoint_url=url, connect_timeout=2)
    with pytest.raises(TransientStorageError, match=f"cannot reach s3 endpoint {url}"):
        b.stat("config")
    with pytest.raises(TransientStorageError):
        b.put("config", b"x")


def test_dead_endpoint_through_retries_gives_up_with_one_clear_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    sleeps: list[float] = []
    b = RetryingBackend(S3Backend("bkt", "p", endpoint_url=url), sleep=sleeps.append)
    with pytest.raises(StorageError, match=f"^cannot reach s3 endpoint {url}.*gave up") as exc:
        b.get("config")
    assert not isinstance(exc.value, TransientStorageError)
    assert len(sleeps) >= 3


# ---- conditional writes -----------------------------------------------------------------------


def test_conflict_409_is_object_exists(moto: None, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _backend(verify_conditional_writes=False)

    def conflict(**_: Any) -> None:
        raise _client_error(409, "ConditionalRequestConflict")

    monkeypatch.setattr(b.client, "put_object", conflict)
    with pytest.raises(ObjectExists):
        b.put_if_absent("locks/l", b"x")


def test_conditional_write_check_passes_on_an_honest_server(moto: None) -> None:
    b = _backend(verify_conditional_writes=True)
    puts = _count_calls(b, "PutObject")
    b.put_if_absent("locks/l1", b"one")
    b.put_if_absent("locks/l2", b"two")
    assert len(puts) == 4  # two for the one-time check, then one per lock
    assert all(p.get("IfNoneMatch") == "*" for p in puts)
    assert sorted(o["Key"] for o in b.client.list_objects_v2(Bucket=BUCKET)["Contents"]) == [
        "repo/locks/l1",
        "repo/locks/l2",
    ]


def _ignore_if_none_match(b: S3Backend) -> None:
    """Make moto behave like a server that drops the If-None-Match header."""

    def drop(params: dict[str, Any], **_: Any) -> None:  # a returned value would replace params
        params.pop("IfNoneMatch", None)

    b.client.meta.events.register("provide-client-params.s3.PutObject", drop)


def test_server_ignoring_if_none_match_is_refused(moto: None) -> None:
    b = _backend(verify_conditional_writes=True)
    _ignore_if_none_match(b)
    with pytest.raises(StorageError, match="ignores conditional writes"):
        b.put_if_absent("locks/l1", b"one")
    assert list(b.list("")) == []  # the check cleaned up after itself


def test_server_ignoring_if_none_match_accepted_explicitly(
    moto: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRENGINE_S3_UNSAFE_NO_CONDITIONAL_WRITES", "1")
    b = S3Backend.from_url(f"s3://{BUCKET}/repo", verify_conditional_writes=True)
    b.client.create_bucket(Bucket=BUCKET)
    _ignore_if_none_match(b)
    b.put_if_absent("locks/l1", b"one")
    with pytest.raises(ObjectExists):
        b.put_if_absent("locks/l1", b"two")
    assert b.get("locks/l1") == b"one"


@pytest.mark.parametrize(
    ("var", "value"), [("AWS_ENDPOINT_URL", "localhost:9000"), ("AWS_PROFILE", "no-such-profile")]
)
def test_bad_aws_configuration_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, var: str, value: str
) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(UsageError, match="cannot set up S3 access to s3://bkt/p"):
        open_backend("s3://bkt/p")


# ---- every library failure becomes one clear StorageError --------------------------------------

_WHERE = f"s3://{BUCKET}/repo/config"
_SECRET = "s3cr3t-Value-That-Must-Not-Show"


def _raising(error: BaseException) -> Any:
    def raise_it(**_: Any) -> None:
        raise error

    return raise_it


@pytest.mark.parametrize(
    ("error", "kind", "says"),
    [
        (NoCredentialsError(), StorageError, "no usable credentials"),
        (
            PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"),
            StorageError,
            "no usable credentials",
        ),
        (TokenRetrievalError(provider="sso", error_msg="expired"), StorageError, "credentials"),
        (EndpointConnectionError(endpoint_url="http://x"), TransientStorageError, "cannot reach"),
        (ConnectTimeoutError(endpoint_url="http://x"), TransientStorageError, "connect timeout"),
        (ReadTimeoutError(endpoint_url="http://x"), TransientStorageError, "read timeout"),
        (ParamValidationError(report="Invalid bucket name"), StorageError, "Invalid bucket"),
        (
            FlexibleChecksumError(error_msg="Expected checksum AAAA did not match"),
            TransientStorageError,
            "cannot reach",
        ),
        (
            SSLError(endpoint_url="https://x", error="[Errno 2] No such file or directory"),
            StorageError,
            "AWS_CA_BUNDLE",
        ),
        (
            SSLError(endpoint_url="https://x", error="EOF occurred in violation of protocol"),
            TransientStorageError,
            "cannot reach",
        ),
        (
            ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify"),
            StorageError,
            "TLS",
        ),
        (urllib3.exceptions.ProtocolError("Connection aborted."), TransientStorageError, "aborted"),
        (http.client.IncompleteRead(b"abc", 10), TransientStorageError, "cannot reach"),
        (ConnectionResetError(104, "Connection reset by peer"), TransientStorageError, "reset"),
        (_client_error(501, "NotImplemented"), StorageError, "does not implement"),
        (_client_error(403, "InvalidObjectState"), StorageError, "archive storage class"),
        (_client_error(301, "PermanentRedirect"), StorageError, "AWS_DEFAULT_REGION"),
        (_client_error(400, "AuthorizationHeaderMalformed"), StorageError, "region"),
        (_client_error(403, "RequestTimeTooSkewed"), StorageError, "clock"),
        (_client_error(403, "InvalidAccessKeyId"), StorageError, "rejected the credentials"),
        (_client_error(400, "ExpiredToken"), StorageError, "rejected the credentials"),
        (_client_error(400, "SomethingNobodyHeardOf"), StorageError, "SomethingNobodyHeardOf"),
        (ClientError({}, "HeadObject"), StorageError, "failed"),
    ],
)
def test_library_failures_map_to_one_sentence(
    moto: None,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    kind: type[StorageError],
    says: str,
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", _SECRET)
    b = _backend(verify_conditional_writes=False)
    for operation in ("HeadObject", "GetObject", "PutObject", "DeleteObject", "ListObjectsV2"):
        b.client.meta.events.register(f"before-call.s3.{operation}", _raising(error))
    calls: list[Any] = [
        lambda: b.stat("config"),
        lambda: b.get("config", 0, 4),
        lambda: b.put("config", b"c"),
        lambda: b.put_if_absent("config", b"c"),
        lambda: b.delete("config"),
        lambda: list(b.list("config")),
    ]
    for call in calls:
        with pytest.raises(StorageError) as exc:
            call()
        assert type(exc.value) is kind, (call, exc.value)
        message = str(exc.value)
        assert says in message
        assert f"s3://{BUCKET}/repo/config" in message or "does not exist" in message
        assert _SECRET not in message and "\n" not in message.strip()


class _BrokenBody:
    def __init__(self, failure: BaseException) -> None:
        self.failure = failure

    def read(self) -> bytes:
        raise self.failure


@pytest.mark.parametrize(
    "failure",
    [
        urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead"),
        urllib3.exceptions.DecodeError("bad gzip"),
        http.client.IncompleteRead(b"", 5),
        ssl.SSLError("record layer failure"),
    ],
)
def test_errors_while_reading_a_body_are_mapped(
    moto: None, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    b = _backend()
    answer = {"Body": _BrokenBody(failure), "ResponseMetadata": {"HTTPStatusCode": 206}}
    monkeypatch.setattr(b.client, "get_object", lambda **_: answer)
    with pytest.raises(TransientStorageError, match=f"GET {_WHERE}"):
        b.get("config", 0, 5)


def test_malformed_answers_are_storage_errors(moto: None, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _backend()
    monkeypatch.setattr(b.client, "head_object", lambda **_: {})
    with pytest.raises(StorageError, match=f"HEAD of {_WHERE} .*has no ContentLength"):
        b.stat("config")
    monkeypatch.setattr(
        b.client, "list_objects_v2", lambda **_: {"Contents": [{"Key": "repo/config"}]}
    )
    with pytest.raises(StorageError, match="has no Size"):
        list(b.list(""))


def test_failed_abort_does_not_hide_the_upload_failure(moto: None) -> None:
    b = _multipart_backend()
    b.client.meta.events.register(
        "before-call.s3.UploadPart", _raising(EndpointConnectionError(endpoint_url="http://x"))
    )
    b.client.meta.events.register(
        "before-call.s3.AbortMultipartUpload", _raising(urllib3.exceptions.ProtocolError("gone"))
    )
    with pytest.raises(TransientStorageError, match="cannot connect"):
        b.put("data/ab/abcd", os.urandom(7 * MiB))


def test_a_password_in_the_endpoint_url_never_shows() -> None:
    url = f"http://user:pw-{_SECRET}@127.0.0.1:{_closed_port()}"
    b = S3Backend("bkt", "p", endpoint_url=url, connect_timeout=2)
    for call in (lambda: b.stat("config"), lambda: b.put("config", b"x")):
        with pytest.raises(TransientStorageError) as exc:
            call()
        assert _SECRET not in str(exc.value)
        assert "cannot reach s3 endpoint http://127.0.0.1:" in str(exc.value)
    closed = b._error(ConnectionClosedError(endpoint_url=url + "/bkt/p/config"), "GET", "config")
    assert _SECRET not in str(closed) and type(closed) is TransientStorageError


def test_s3_capabilities(moto: None) -> None:
    b = _backend()
    assert b.capabilities == Capabilities(remote=True, object_lock=True)
    assert b.remote is True
    assert b.list_temporary() == []
    assert open_backend("s3://bkt/p").capabilities.remote is True  # through the retry wrapper
