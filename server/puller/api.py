"""`pull(source, dest, sink)`: the puller as a function (the Job's CLI and `localmodel up` call it);
`probe(source, sink)`: the size a pull would download, without downloading it."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import PullError, Reason
from .gguf_info import read_gguf_info
from .progress import NullSink, ProgressSink
from .remote import RemoteFile
from .result import PullResult
from .source import ModelSource, PvcSource
from .store import Marker, ModelDir, PartialDownload, sha256_of_prefix, storage_error
from .transfer import RetryPolicy, fetch, remote_size

log = logging.getLogger(__name__)


def pull(
    source: ModelSource,
    dest: Path,
    sink: ProgressSink | None = None,
    policy: RetryPolicy | None = None,
) -> PullResult:
    """Make `dest/model.gguf` hold the verified bytes of `source` (or check a pvc file in place).

    Raises PullError with a specific reason; the sink hears about success or failure too.
    """
    sink = sink or NullSink()
    try:
        if source.pvc is not None:
            result = _check_in_place(source.pvc, source.sha256, dest, sink)
        else:
            result = _download_locked(source, ModelDir(dest), sink, policy or RetryPolicy())
    except PullError as err:
        sink.failed(err)
        raise
    sink.succeeded(result)
    return result


def probe(source: ModelSource, sink: ProgressSink | None = None, policy: RetryPolicy | None = None) -> int | None:
    """The byte size of `source`, or None when the remote announces none; nothing is written.

    The source is resolved exactly as `pull` resolves it (same credentials, same failure
    reasons); a URL, which resolves without a request, is asked with a one-byte ranged GET.
    """
    if source.pvc is not None:
        raise ValueError("a pvc source is used in place: there is nothing to probe")
    sink = sink or NullSink()
    try:
        remote = _resolve(source, policy or RetryPolicy())
        _expected_sha256(source.sha256, remote.sha256)
        size = remote.size if remote.size is not None else remote_size(remote.request, policy or RetryPolicy())
    except PullError as err:
        sink.failed(err)
        raise
    sink.probed(size)
    return size


def _download_locked(source: ModelSource, store: ModelDir, sink: ProgressSink, policy: RetryPolicy) -> PullResult:
    try:
        with store.locked():
            return _download(source, store, sink, policy)
    except OSError as err:
        raise storage_error(err, store.dest) or err from None


def _download(source: ModelSource, store: ModelDir, sink: ProgressSink, policy: RetryPolicy) -> PullResult:
    identity = source.identity()
    if (marker := store.current(identity)) is not None:
        log.info("%s is already in %s (marker matches); nothing to do", source.describe(), store.dest)
        gguf = read_gguf_info(store.model_path)
        return PullResult(str(store.model_path), marker.size_bytes, marker.sha256, gguf, 0, "present")

    remote = _resolve(source, policy)
    expected = _expected_sha256(source.sha256, remote.sha256)
    store.forget_marker()
    partial = store.partial({"source": identity, "remote": remote.version})
    if remote.size is not None:
        store.ensure_free_space(remote.size - partial.size)
    log.info("pulling %s into %s", source.describe(), store.dest)
    fetched = fetch(remote.request, partial, store, sink.progress, policy)
    _verify(partial, fetched.size, fetched.sha256, remote.size, expected)
    try:
        gguf = read_gguf_info(partial.path)
    except PullError:
        partial.discard()
        raise
    store.install(partial, Marker(identity, fetched.size, fetched.sha256, gguf.to_status(), remote.defaults))
    log.info("installed %s (%d bytes, sha256 %s)", store.model_path, fetched.size, fetched.sha256)
    return PullResult(str(store.model_path), fetched.size, fetched.sha256, gguf, fetched.received, "downloaded")


def _resolve(source: ModelSource, policy: RetryPolicy) -> RemoteFile:
    # Imported here so that a URL pull does not load boto3 or huggingface_hub.
    if source.hf is not None:
        from .hf import resolve_hf

        return resolve_hf(source.hf)
    if source.s3 is not None:
        from .s3 import resolve_s3

        return resolve_s3(source.s3)
    if source.ollama is not None or source.oci is not None:
        from .oci import resolve_oci

        return resolve_oci(source.registry_reference(), policy)
    from .url import resolve_url

    assert source.url is not None
    return resolve_url(source.url)


def _expected_sha256(given: str | None, remote: str | None) -> str | None:
    if given and remote and given != remote:
        raise PullError(
            Reason.CHECKSUM_MISMATCH, f"spec sha256 {given} differs from the sha256 {remote} the source publishes"
        )
    return given or remote


def _verify(partial: PartialDownload, size: int, digest: str, expected_size: int | None, expected: str | None) -> None:
    """A mismatch discards the bytes: resuming them could never produce the right file."""
    if expected_size is not None and size != expected_size:
        partial.discard()
        raise PullError(Reason.CHECKSUM_MISMATCH, f"downloaded {size} bytes, the source announced {expected_size}")
    if expected is not None and digest != expected:
        partial.discard()
        raise PullError(Reason.CHECKSUM_MISMATCH, f"sha256 of the download is {digest}, expected {expected}")


def _check_in_place(spec: PvcSource, expected: str | None, dest: Path, sink: ProgressSink) -> PullResult:
    """A pvc source is used where it lies: confirm it is inside the volume, intact and a GGUF model."""
    root = dest.resolve()
    path = (dest / spec.path).resolve()
    if not path.is_relative_to(root):
        raise PullError(Reason.SOURCE_NOT_FOUND, f"{spec.path} resolves outside the volume")
    if not path.is_file():
        raise PullError(Reason.SOURCE_NOT_FOUND, f"{spec.path} does not exist in claim {spec.claim_name}")
    size = path.stat().st_size
    digest = None
    if expected is not None:
        digest = sha256_of_prefix(path, size).hexdigest()
        if digest != expected:
            raise PullError(Reason.CHECKSUM_MISMATCH, f"sha256 of {spec.path} is {digest}, expected {expected}")
    sink.progress(size, size)
    return PullResult(str(path), size, digest, read_gguf_info(path), 0, "in-place")
