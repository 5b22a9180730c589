"""URL sources against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from support.http_faults import FaultyHTTPServer, Faults
from support.puller_gguf import write_gguf

from localmodel_server.puller import PullError, Reason, RetryPolicy, parse_source, pull
from localmodel_server.puller.progress import NullSink
from localmodel_server.puller.result import PullResult
from localmodel_server.puller.store import MARKER_FILE, MODEL_FILE, PARTIAL_FILE
from localmodel_server.puller.writer import BLOCK_SIZE

FAST = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.05, stall_timeout=0.5, connect_timeout=2)
SIZE = 8 << 20


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "served.gguf", extra_bytes=SIZE)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def url_source(server: FaultyHTTPServer, path: str, **extra: str) -> object:
    return parse_source({"url": f"{server.base_url}{path}", **extra})


def pull_url(server: FaultyHTTPServer, dest: Path, path: str = "/m.gguf", **extra: str) -> PullResult:
    return pull(url_source(server, path, **extra), dest, policy=FAST)  # type: ignore[arg-type]


def expect_failure(reason: Reason, server: FaultyHTTPServer, dest: Path, **extra: str) -> PullError:
    with pytest.raises(PullError) as caught:
        pull_url(server, dest, **extra)
    assert caught.value.reason is reason, caught.value
    assert not (dest / MODEL_FILE).exists()
    assert not (dest / MARKER_FILE).exists()
    return caught.value


def test_pull_verifies_installs_and_writes_the_marker(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    served = http_faults.add_file("/m.gguf", model)
    dest = tmp_path / "models"
    result = pull_url(http_faults, dest, sha256=sha256(model))
    assert (dest / MODEL_FILE).read_bytes() == model.read_bytes()
    assert result.sha256 == sha256(model) and result.size_bytes == model.stat().st_size
    assert result.gguf.quantization == "Q8_0" and not result.skipped
    assert sorted(p.name for p in dest.iterdir()) == [MODEL_FILE, MARKER_FILE]
    assert served.bytes_served == model.stat().st_size


def test_second_pull_of_the_same_source_transfers_nothing(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path
) -> None:
    served = http_faults.add_file("/m.gguf", model)
    dest = tmp_path / "models"
    first = pull_url(http_faults, dest)
    requests = len(served.requests)
    second = pull_url(http_faults, dest)
    assert second.skipped and second.bytes_fetched == 0 and second.sha256 == first.sha256
    assert len(served.requests) == requests


def test_a_changed_source_pulls_again(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    other = write_gguf(tmp_path / "other.gguf", arch="qwen2", extra_bytes=1 << 16, seed=1)
    http_faults.add_file("/m.gguf", model)
    http_faults.add_file("/other.gguf", other)
    dest = tmp_path / "models"
    pull_url(http_faults, dest)
    result = pull_url(http_faults, dest, path="/other.gguf")
    assert not result.skipped and result.gguf.architecture == "qwen2"
    assert (dest / MODEL_FILE).read_bytes() == other.read_bytes()
    assert f"{http_faults.base_url}/other.gguf" in (dest / MARKER_FILE).read_text()


def test_connection_dropped_mid_body_is_resumed(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    served = http_faults.add_file("/m.gguf", model, Faults(drop_after=3 << 20, drop_times=2))
    result = pull_url(http_faults, tmp_path / "models", sha256=sha256(model))
    assert result.sha256 == sha256(model)
    assert served.bytes_served == model.stat().st_size  # every byte exactly once
    assert [r.get("range") for r in served.requests] == [None, "bytes=3145728-", "bytes=6291456-"]
    assert served.requests[1]["if-range"] == served.etag


@pytest.mark.parametrize(("status", "reason"), [(404, Reason.SOURCE_NOT_FOUND), (401, Reason.UNAUTHORIZED), (403, Reason.UNAUTHORIZED)])
def test_http_errors_map_to_reasons(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, status: int, reason: Reason
) -> None:
    http_faults.add_file("/m.gguf", model, Faults(status=status))
    error = expect_failure(reason, http_faults, tmp_path / "models")
    assert f"HTTP {status}" in error.message


def test_missing_file_is_source_not_found(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    expect_failure(Reason.SOURCE_NOT_FOUND, http_faults, tmp_path / "models")


def test_bearer_token_comes_from_the_environment(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_faults.add_file("/m.gguf", model, Faults(bearer_token="s3cret"))
    expect_failure(Reason.UNAUTHORIZED, http_faults, tmp_path / "a")
    monkeypatch.setenv("BEARER_TOKEN", "s3cret")
    assert pull_url(http_faults, tmp_path / "b").size_bytes == model.stat().st_size


def test_wrong_sha256_leaves_nothing_to_load(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    http_faults.add_file("/m.gguf", model)
    dest = tmp_path / "models"
    error = expect_failure(Reason.CHECKSUM_MISMATCH, http_faults, dest, sha256="0" * 64)
    assert sha256(model) in error.message
    assert list(dest.iterdir()) == []  # the mismatched bytes are gone, not kept for a resume


def test_drops_on_every_response_still_complete(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    """Each attempt makes progress, so the failure count never reaches the limit."""
    served = http_faults.add_file("/m.gguf", model, Faults(drop_after=1 << 20, drop_times=100))
    assert pull_url(http_faults, tmp_path / "models").sha256 == sha256(model)
    assert len(served.requests) == 9


def test_body_truncated_at_the_same_byte_is_a_network_error(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path
) -> None:
    http_faults.add_file("/m.gguf", model, Faults(truncate_at=5 << 20))
    dest = tmp_path / "models"
    error = expect_failure(Reason.NETWORK_ERROR, http_faults, dest)
    assert "gave up after 3 attempts" in error.message
    assert (dest / PARTIAL_FILE).stat().st_size > 0  # kept: a later run resumes it


def test_stall_is_retried(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    stall_at = 5 * BLOCK_SIZE + BLOCK_SIZE // 2
    served = http_faults.add_file("/m.gguf", model, Faults(stall_after=stall_at, stall_seconds=2.0))
    assert pull_url(http_faults, tmp_path / "models").sha256 == sha256(model)
    # A read that times out loses its unfinished block; whole blocks before it are kept.
    assert served.requests[-1]["range"] == f"bytes={5 * BLOCK_SIZE}-"


def test_endless_stall_is_a_network_error(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    # Each response stalls within its first block, so no attempt makes progress.
    faults = Faults(stall_after=BLOCK_SIZE // 2, stall_seconds=1.5, stall_times=100)
    http_faults.add_file("/m.gguf", model, faults)
    error = expect_failure(Reason.NETWORK_ERROR, http_faults, tmp_path / "models")
    assert "stalled" in error.message


def test_server_ignoring_range_restarts_cleanly(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path) -> None:
    served = http_faults.add_file("/m.gguf", model, Faults(drop_after=3 << 20, ignore_range=True))
    result = pull_url(http_faults, tmp_path / "models", sha256=sha256(model))
    assert result.sha256 == sha256(model)
    assert served.bytes_served == (3 << 20) + model.stat().st_size


def test_unreachable_server_is_a_network_error(tmp_path: Path) -> None:
    with pytest.raises(PullError) as caught:
        pull(parse_source({"url": "http://127.0.0.1:9/m.gguf"}), tmp_path / "models", policy=FAST)
    assert caught.value.reason is Reason.NETWORK_ERROR and "cannot connect" in caught.value.message


def test_a_file_that_is_not_gguf_is_never_installed(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    page = tmp_path / "page.html"
    page.write_bytes(b"<html>login required</html>")
    http_faults.add_file("/m.gguf", page)
    dest = tmp_path / "models"
    expect_failure(Reason.INVALID_MODEL, http_faults, dest)
    assert list(dest.iterdir()) == []


def test_not_enough_space_is_insufficient_storage(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1 << 20))
    http_faults.add_file("/m.gguf", model)
    error = expect_failure(Reason.INSUFFICIENT_STORAGE, http_faults, tmp_path / "models")
    assert str(model.stat().st_size) in error.message


class CrashAt(NullSink):
    """A progress sink that kills the pull (like a lost pod) once `fraction` of the bytes are in."""

    def __init__(self, fraction: float) -> None:
        self.fraction = fraction

    def progress(self, done: int, total: int | None) -> None:
        if total and done >= total * self.fraction:
            raise KeyboardInterrupt


@pytest.fixture
def big_model(tmp_path: Path) -> Path:
    """Large enough that the blocks in flight when a pull dies cannot cover the whole file."""
    return write_gguf(tmp_path / "big.gguf", extra_bytes=32 << 20)


def test_resume_after_an_interrupted_process_fetches_only_the_rest(
    http_faults: FaultyHTTPServer, big_model: Path, tmp_path: Path
) -> None:
    model = big_model
    served = http_faults.add_file("/m.gguf", model)
    source, dest = url_source(http_faults, "/m.gguf"), tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        pull(source, dest, CrashAt(0.25), policy=FAST)  # type: ignore[arg-type]
    kept = (dest / PARTIAL_FILE).stat().st_size
    assert 0 < kept < model.stat().st_size
    result = pull(source, dest, policy=FAST)  # type: ignore[arg-type]
    assert result.sha256 == sha256(model)
    assert served.body_bytes[-1] == model.stat().st_size - kept == result.bytes_fetched


def test_a_remote_that_changed_between_runs_is_fetched_from_scratch(
    http_faults: FaultyHTTPServer, big_model: Path, tmp_path: Path
) -> None:
    http_faults.add_file("/m.gguf", big_model)
    source, dest = url_source(http_faults, "/m.gguf"), tmp_path / "models"
    with pytest.raises(KeyboardInterrupt):
        pull(source, dest, CrashAt(0.25), policy=FAST)  # type: ignore[arg-type]
    assert (dest / PARTIAL_FILE).stat().st_size > 0
    replacement = write_gguf(tmp_path / "v2.gguf", extra_bytes=SIZE, seed=7)
    os.utime(replacement, ns=(1, 1))  # a different ETag
    http_faults.add_file("/m.gguf", replacement)
    result = pull(source, dest, policy=FAST)  # type: ignore[arg-type]
    assert result.sha256 == sha256(replacement)
    assert (dest / MODEL_FILE).read_bytes() == replacement.read_bytes()


def test_redirects_keep_the_token_on_the_origin_only(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cdn = FaultyHTTPServer().start()
    try:
        on_cdn = cdn.add_file("/blob", model)
        moved = http_faults.add_file("/m.gguf", model, Faults(redirect_to="/moved.gguf"))
        http_faults.add_file("/moved.gguf", model, Faults(redirect_to=f"{cdn.base_url}/blob"))
        monkeypatch.setenv("BEARER_TOKEN", "origin-only")
        assert pull_url(http_faults, tmp_path / "models").sha256 == sha256(model)
        assert moved.requests[0]["authorization"] == "Bearer origin-only"
        assert http_faults.files["/moved.gguf"].requests[0]["authorization"] == "Bearer origin-only"
        assert "authorization" not in on_cdn.requests[0]
    finally:
        cdn.stop()


@pytest.mark.parametrize("target", ["/m.gguf", "ftp://127.0.0.1/m.gguf"])
def test_bad_redirects_fail_at_once(http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, target: str) -> None:
    served = http_faults.add_file("/m.gguf", model, Faults(redirect_to=target))
    expect_failure(Reason.NETWORK_ERROR, http_faults, tmp_path / "models")
    assert len(served.requests) <= 6  # not retried: trying again cannot help


def test_a_second_pull_into_the_same_directory_waits_and_reuses_the_first(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path
) -> None:
    served = http_faults.add_file("/m.gguf", model, Faults(rate_bytes_per_s=16 << 20))
    dest = tmp_path / "models"
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(pull_url, http_faults, dest)
        while not (dest / PARTIAL_FILE).exists():
            assert not first.done(), first.result()
            time.sleep(0.005)
        second = pool.submit(pull_url, http_faults, dest)
        results = [first.result(timeout=60), second.result(timeout=60)]
    assert [r.skipped for r in results] == [False, True]
    assert served.bytes_served == model.stat().st_size


def test_http_proxy_from_the_environment(
    http_faults: FaultyHTTPServer, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = http_faults.add_file("/m.gguf", model)
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, http_faults.base_url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    result = pull(parse_source({"url": "http://models.example.invalid/m.gguf"}), tmp_path / "models", policy=FAST)
    assert result.sha256 == sha256(model)
    assert served.requests[0][":target"] == "http://models.example.invalid/m.gguf"  # absolute form: a proxy request
