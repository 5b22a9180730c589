"""The model directory's bookkeeping: validators, the marker, the partial's resume state."""

from __future__ import annotations

import errno
from pathlib import Path

from localmodel_server.puller.errors import Reason
from localmodel_server.puller.store import Marker, ModelDir, PartialDownload, RemoteVersion, storage_error
from localmodel_server.puller.transfer import HttpRequest

KEY = {"source": {"url": "https://example.com/m.gguf"}, "remote": None}


def test_if_range_prefers_a_strong_etag() -> None:
    assert RemoteVersion(etag='"abc"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT").if_range() == '"abc"'
    weak = RemoteVersion(etag='W/"abc"', last_modified="Mon, 01 Jan 2024 00:00:00 GMT")
    assert weak.if_range() == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert RemoteVersion(etag='W/"abc"').if_range() is None


def test_partial_bytes_survive_only_for_the_same_key(tmp_path: Path) -> None:
    partial = PartialDownload(tmp_path, KEY)
    partial.record(RemoteVersion(etag='"v1"', size=10))
    partial.path.write_bytes(b"12345")
    again = PartialDownload(tmp_path, KEY)
    assert again.size == 5 and again.version == RemoteVersion(etag='"v1"', size=10)
    other = PartialDownload(tmp_path, {**KEY, "remote": "another-commit"})
    assert other.size == 0 and other.version is None


def test_marker_must_match_source_and_file_size(tmp_path: Path) -> None:
    store = ModelDir(tmp_path)
    store.model_path.write_bytes(b"GGUF" + b"\0" * 12)
    marker = Marker(KEY["source"], 16, "ab" * 32, {"architecture": "llama"})
    store.marker_path.write_text(marker.to_json())
    assert store.current(KEY["source"]) == marker
    assert store.current({"url": "https://example.com/other.gguf"}) is None
    store.model_path.write_bytes(b"GGUF")
    assert store.current(KEY["source"]) is None
    store.marker_path.write_text("{not json")
    assert store.current(KEY["source"]) is None


def test_a_full_or_unwritable_volume_is_insufficient_storage(tmp_path: Path) -> None:
    for code in (errno.ENOSPC, errno.EDQUOT):
        error = storage_error(OSError(code, "No space left on device"), tmp_path)
        assert error is not None and error.reason is Reason.INSUFFICIENT_STORAGE
    unwritable = storage_error(OSError(errno.EROFS, "Read-only file system"), tmp_path)
    assert unwritable is not None and "Read-only file system" in unwritable.message
    assert storage_error(OSError(errno.EIO, "Input/output error"), tmp_path) is None


def test_request_repr_never_shows_the_token() -> None:
    assert "s3cret" not in repr(HttpRequest("https://x/m.gguf", {"Authorization": "Bearer s3cret"}))
