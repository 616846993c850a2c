"""How ``S3Backend`` turns library failures into the contract's exceptions.

Every failure a call into boto3 can raise (botocore, urllib3, http.client, ssl, sockets)
becomes a ``StorageError``: one sentence naming the object and the endpoint, never
"unexpected", never a secret. Failures that may pass (throttling, 5xx, timeouts, lost
connections, damaged bodies) are ``TransientStorageError`` for ``RetryingBackend``; answers
that asking again cannot change (403, 404, bad credentials, a 501) are not.
"""

from __future__ import annotations

import http.client
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3.exceptions
from botocore.exceptions import (
    BotoCoreError,
    ChecksumError,
    ClientError,
    ConnectionClosedError,
    ConnectionError,
    ConnectTimeoutError,
    CredentialRetrievalError,
    EndpointConnectionError,
    FlexibleChecksumError,
    HTTPClientError,
    IncompleteReadError,
    InvalidConfigError,
    MetadataRetrievalError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
    SSOError,
    TokenRetrievalError,
    UnknownCredentialError,
)

from drengine.core.errors import ObjectNotFound, StorageError
from drengine.storage.retry import TransientStorageError

# Error codes that mean "try again later", whatever the HTTP status (RequestTimeout is a 400).
_TRANSIENT_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "BandwidthLimitExceeded",
        "RequestTimeout",
        "InternalError",
        "ServiceUnavailable",
    }
)
# Why put_if_absent lost: the key exists (412), or another conditional write to it is in
# flight (409); either way another writer got there first.
EXISTS_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
# What a call into boto3 may raise: botocore wraps most failures, but urllib3 and http.client
# errors can still surface from a response body, and sockets and ssl raise OSError.
LIBRARY_ERRORS = (
    BotoCoreError,
    ClientError,
    OSError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
)
# Asking again cannot help: the credentials are missing, expired or refused.
_CREDENTIAL_ERRORS = (
    NoCredentialsError,
    PartialCredentialsError,
    CredentialRetrievalError,
    TokenRetrievalError,
    SSOError,
    UnknownCredentialError,
    MetadataRetrievalError,
    InvalidConfigError,
)
_CREDENTIAL_CODES = frozenset(
    {
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "TokenRefreshRequired",
        "InvalidSecurity",
    }
)
_REGION_CODES = frozenset(
    {"PermanentRedirect", "AuthorizationHeaderMalformed", "IllegalLocationConstraintException"}
)
# TLS failures that are configuration, not luck: an untrusted or misnamed certificate, a
# missing AWS_CA_BUNDLE, TLS spoken to a plain-HTTP port.
_TLS_CONFIG_MARKS = ("CERTIFICATE_VERIFY_FAILED", "WRONG_VERSION_NUMBER", "No such file")


def redact(url: str) -> str:
    """``url`` without a user:password part, should an endpoint carry one."""
    parts = urlsplit(url)
    if parts.hostname is None or "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]).geturl()


def why(e: Exception) -> str:
    """A short reason for a network failure; botocore's own messages repeat the whole URL."""
    if isinstance(e, ReadTimeoutError):
        return "no answer (read timeout)"
    if isinstance(e, ConnectTimeoutError):
        return "no connection (connect timeout)"
    if isinstance(e, EndpointConnectionError):
        cause = str(e.kwargs.get("error", ""))
        return "cannot connect" + (f" ({cause.rsplit(': ', 1)[-1]})" if cause else "")
    if isinstance(e, ConnectionClosedError):
        return "connection closed by the server"
    return str(e)


@dataclass(frozen=True, slots=True)
class S3ErrorMapper:
    """Where a backend's objects live, for the messages; called with each failure."""

    bucket: str
    key_prefix: str  # "PREFIX/" or ""
    location: str  # s3://BUCKET/PREFIX
    endpoint: str  # as configured: may carry a password
    region: str | None

    @property
    def shown_endpoint(self) -> str:
        return redact(self.endpoint)

    def __call__(
        self, e: BaseException, op: str, name: str, *, retention: bool = False
    ) -> StorageError:
        """``e`` as the contract's exception; ``retention``: the put carried Object Lock."""
        error = self._map(e, op, name, retention)
        # One line (botocore's messages may have several), and botocore's URLs without a
        # password should the endpoint carry one.
        message = " ".join(str(error).replace(self.endpoint, self.shown_endpoint).split())
        return error if message == str(error) else type(error)(message)

    def _map(self, e: BaseException, op: str, name: str, retention: bool) -> StorageError:
        where = f"s3://{self.bucket}/{self.key_prefix}{name}"
        endpoint = self.shown_endpoint
        if isinstance(e, ClientError):
            return self._client_error(e, op, name, where, retention)
        if isinstance(e, SSLError | urllib3.exceptions.SSLError | ssl.SSLError) and any(
            mark in str(e) for mark in _TLS_CONFIG_MARKS
        ):
            return StorageError(
                f"TLS with s3 endpoint {endpoint} failed for {op} {where}: {e} (check the "
                "endpoint URL's scheme and AWS_CA_BUNDLE)"
            )
        if isinstance(e, _CREDENTIAL_ERRORS):
            return StorageError(
                f"no usable credentials for {op} {where} at {endpoint}: {e} (set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or use an instance "
                "role)"
            )
        if isinstance(
            e,
            ConnectionError
            | HTTPClientError
            | IncompleteReadError
            | ChecksumError
            | FlexibleChecksumError  # a body damaged on the way: fetch it again
            | OSError
            | urllib3.exceptions.HTTPError
            | http.client.HTTPException,
        ):
            return TransientStorageError(
                f"cannot reach s3 endpoint {endpoint}: {why(e)} ({op} {where})"
            )
        return StorageError(f"s3 {op} of {where} at {endpoint} failed: {e}")

    def _client_error(
        self, e: ClientError, op: str, name: str, where: str, retention: bool
    ) -> StorageError:
        err = e.response.get("Error", {})
        code = str(err.get("Code", ""))
        try:
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        except (TypeError, ValueError):
            status = 0
        detail = f"{status} {code}: {err.get('Message', '')}".rstrip(": ")
        endpoint = self.shown_endpoint
        if code == "NoSuchBucket":
            return StorageError(f"bucket {self.bucket} does not exist at {endpoint}")
        if code == "NotImplemented" or status == 501:  # a 5xx that asking again cannot fix
            return StorageError(
                f"the S3 server at {endpoint} does not implement {op} (of {where}): {detail}"
            )
        # NoSuchUpload (404): a multipart upload vanished, say to a lifecycle rule; a retry
        # of the put starts a new one.
        if (
            code in _TRANSIENT_CODES
            or code == "NoSuchUpload"
            or status in (408, 429)
            or status >= 500
        ):
            return TransientStorageError(f"s3 endpoint {endpoint}: {op} {where}: {detail}")
        if code in ("NoSuchKey", "NotFound", "404") or status == 404:
            return ObjectNotFound(f"object {name} not found in {self.location}")
        if retention and op == "PUT" and code == "InvalidRequest":
            return StorageError(
                f"s3 PUT of {where} with Object Lock retention failed ({detail}): is Object "
                f"Lock enabled on bucket {self.bucket}?"
            )
        if code == "InvalidObjectState":
            return StorageError(
                f"cannot read {where}: it is in an archive storage class ({detail}); drengine "
                "needs objects it can read directly (docs/storage.md)"
            )
        if code in _REGION_CODES or status == 301:
            return StorageError(
                f"bucket {self.bucket} is not in region {self.region} at "
                f"{endpoint} ({op} {where}: {detail}): set AWS_DEFAULT_REGION to its region"
            )
        if code == "RequestTimeTooSkewed":
            return StorageError(
                f"s3 endpoint {endpoint} refused {op} {where}: this host's clock is off "
                f"({detail}); synchronise it (NTP)"
            )
        if code in _CREDENTIAL_CODES:
            return StorageError(
                f"s3 endpoint {endpoint} rejected the credentials for {op} {where} ({detail}): "
                "check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or the "
                "profile"
            )
        if status == 403:
            return StorageError(
                f"access denied to {where} ({op}, {detail}): check the credentials and "
                "the bucket policy"
            )
        return StorageError(f"s3 {op} of {where} at {endpoint} failed: {detail}")
