"""Resumable HTTP(S) transfer into a PartialDownload: the one transfer engine for every source.

URL sources use it directly, Hugging Face after resolving the file through
huggingface_hub, S3 through a presigned GET made by boto3. Behaviour:
- resume with `Range: bytes=N-` and `If-Range`, also after a process restart
  (the partial file and its state survive on the volume);
- a 200 to a ranged request (server ignores Range, or the remote changed)
  restarts the partial cleanly; a 206 whose range or ETag does not match too;
- connection errors, truncated bodies, 408/429/5xx and stalls (no byte for
  `stall_timeout` seconds) are retried with exponential backoff; the failure
  count resets whenever an attempt made progress;
- credentials never leave the origin on redirect (http_client.py) and never
  reach a log: URLs are redacted.
"""

from __future__ import annotations

import http.client
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from .errors import PullError, Reason
from .source import redact_url
from .store import ModelDir, PartialDownload, RemoteVersion, storage_error
from .http_client import TransportError, open_get
from .writer import DiskWriteError, HashingWriter

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
ProgressCallback = Callable[[int, int | None], None]


@dataclass(frozen=True)
class HttpRequest:
    url: str
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may carry a token


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 6  # consecutive failed attempts (without progress) before NetworkError
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    stall_timeout: float = 30.0
    connect_timeout: float = 15.0

    def backoff(self, failures: int) -> float:
        return min(self.backoff_max, self.backoff_initial * 2 ** (failures - 1))


@dataclass(frozen=True)
class Fetched:
    sha256: str
    size: int
    received: int  # bytes this process downloaded (less than size after a resume)


class _Retry(Exception):
    """A transient failure: the next attempt resumes from what is on disk."""


def fetch(
    request_for_attempt: Callable[[], HttpRequest],
    partial: PartialDownload,
    store: ModelDir,
    on_progress: ProgressCallback,
    policy: RetryPolicy,
) -> Fetched:
    """Download into `partial` until the server says the body is complete."""
    writer = HashingWriter(partial.path, partial.size)
    failures = 0
    try:
        while True:
            request = request_for_attempt()
            before = writer.offset
            try:
                _attempt(request, partial, writer, store, on_progress, policy)
                return Fetched(writer.hexdigest(), writer.offset, writer.received)
            except _Retry as err:
                failures = 1 if writer.drain() > before else failures + 1
                if failures >= policy.attempts:
                    raise PullError(
                        Reason.NETWORK_ERROR,
                        f"{redact_url(request.url)}: {err} (gave up after {failures} attempts)",
                    ) from None
                delay = policy.backoff(failures)
                log.warning("%s: %s; retrying in %.1fs", redact_url(request.url), err, delay)
                time.sleep(delay)
    except DiskWriteError as err:
        raise storage_error(err.error, store.dest) or err.error from None
    finally:
        writer.close()


def remote_size(request_for_attempt: Callable[[], HttpRequest], policy: RetryPolicy) -> int | None:
    """The file's size from a one-byte ranged GET, the body left unread; retried like a fetch.

    None when the server announces no length. Failures carry the same reasons as a download.
    """
    failures = 0
    while True:
        request = request_for_attempt()
        try:
            return _size_attempt(request, policy)
        except _Retry as err:
            failures += 1
            if failures >= policy.attempts:
                raise PullError(
                    Reason.NETWORK_ERROR, f"{redact_url(request.url)}: {err} (gave up after {failures} attempts)"
                ) from None
            time.sleep(policy.backoff(failures))


def _size_attempt(request: HttpRequest, policy: RetryPolicy) -> int | None:
    try:
        response = open_get(request.url, {**request.headers, "Range": "bytes=0-0"}, policy.connect_timeout,
                            policy.stall_timeout)
    except TransportError as err:
        if not err.retryable:
            raise PullError(Reason.NETWORK_ERROR, f"{redact_url(request.url)}: {err}") from None
        raise _Retry(str(err)) from None
    try:
        if response.status in (200, 206):
            return _total_size(response)
        _raise_for_status(response.status, request.url)
    finally:
        response.close()


def _attempt(
    request: HttpRequest,
    partial: PartialDownload,
    writer: HashingWriter,
    store: ModelDir,
    on_progress: ProgressCallback,
    policy: RetryPolicy,
) -> None:
    offset = writer.drain()
    headers = dict(request.headers)
    if offset > 0 and partial.version is not None:
        headers["Range"] = f"bytes={offset}-"
        if validator := partial.version.if_range():
            headers["If-Range"] = validator
    try:
        response = open_get(request.url, headers, policy.connect_timeout, policy.stall_timeout)
    except TransportError as err:
        if not err.retryable:
            raise PullError(Reason.NETWORK_ERROR, f"{redact_url(request.url)}: {err}") from None
        raise _Retry(str(err)) from None
    try:
        total = _accept(response, partial, writer, offset, request.url)
        if total is not None:
            store.ensure_free_space(total - writer.offset)
        _stream(response, writer, total, on_progress)
    finally:
        response.close()


def _accept(
    response: http.client.HTTPResponse, partial: PartialDownload, writer: HashingWriter, offset: int, url: str
) -> int | None:
    """Check the status and the range; returns the total size, restarting the partial if needed."""
    status = response.status
    version = RemoteVersion(
        etag=response.getheader("ETag"),
        last_modified=response.getheader("Last-Modified"),
        size=_total_size(response),
    )
    if status == 200:
        if offset > 0:
            log.info("%s: the server sent the whole file; restarting the partial download", redact_url(url))
        _restart(partial, writer, version)
        return version.size
    if status == 206:
        match = _CONTENT_RANGE.match(response.getheader("Content-Range", ""))
        stored = partial.version
        changed = stored is not None and (
            bool(stored.etag and version.etag and stored.etag != version.etag)
            or bool(stored.size and version.size and stored.size != version.size)
        )
        if match is None or int(match.group(1)) != offset or changed:
            _restart(partial, writer, None)
            raise _Retry("the server answered with a different range or version; starting over")
        return version.size
    if status == 416:
        if partial.version is not None and partial.version.size == offset:
            return offset  # the range starts at the end: every byte is already here
        _restart(partial, writer, None)
        raise _Retry("the saved partial download does not fit the remote file; starting over")
    _raise_for_status(status, url)


def _raise_for_status(status: int, url: str) -> NoReturn:
    """An answer that carries no file: retryable, or a PullError with its reason."""
    if status in (401, 403):
        raise PullError(Reason.UNAUTHORIZED, f"{redact_url(url)}: HTTP {status}; check the credentials in secretRef")
    if status in _RETRYABLE_STATUS:
        raise _Retry(f"HTTP {status}")
    raise PullError(Reason.SOURCE_NOT_FOUND, f"{redact_url(url)}: HTTP {status}")


def _stream(
    response: http.client.HTTPResponse, writer: HashingWriter, total: int | None, on_progress: ProgressCallback
) -> None:
    try:
        while writer.fill(response.readinto):
            on_progress(writer.offset, total)
    except TimeoutError:
        raise _Retry("the transfer stalled") from None
    except (OSError, http.client.HTTPException) as err:
        raise _Retry(f"the connection broke mid-transfer ({type(err).__name__})") from None
    done = writer.drain()
    on_progress(done, total)
    if total is not None and done != total:
        raise _Retry(f"the body ended at byte {done} of {total}")


def _restart(partial: PartialDownload, writer: HashingWriter, version: RemoteVersion | None) -> None:
    writer.drain()
    partial.restart(version)
    writer.reset()


def _total_size(response: http.client.HTTPResponse) -> int | None:
    if response.status == 206:
        match = _CONTENT_RANGE.match(response.getheader("Content-Range", ""))
        return int(match.group(3)) if match and match.group(3) != "*" else None
    length = response.getheader("Content-Length")
    return int(length) if length and length.isdigit() else None
