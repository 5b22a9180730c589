"""Progress into the LocalModel status: the patches the reporter sends, and the pure payloads."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from support.puller_gguf import write_gguf
from support.status_capture import StatusCaptureServer

from localmodel_server.puller import PullError, Reason
from localmodel_server.puller.gguf_info import read_gguf_info
from localmodel_server.puller.k8s_status import KubernetesStatusReporter, api_from_environment, parse_target
from localmodel_server.puller.progress import download_status, failure_status, percent, success_status
from localmodel_server.puller.result import PullResult

STATUS_PATH = "/apis/localmodel.dev/v1alpha1/namespaces/team-a/localmodels/llama3/status"


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def result_for(tmp_path: Path) -> PullResult:
    path = write_gguf(tmp_path / "model.gguf")
    return PullResult(str(path), path.stat().st_size, "ab" * 32, read_gguf_info(path), path.stat().st_size, "downloaded")


def test_percent_is_floored_and_unknown_without_a_total() -> None:
    assert percent(999, 1000) == 99 and percent(1000, 1000) == 100 and percent(5, None) is None
    assert download_status(10, 40) == {
        "bytesDone": 10, "bytesTotal": 40, "percent": 25,
        "sha256": None, "result": None, "reason": None, "message": None,
    }  # fmt: skip


def test_final_payloads(tmp_path: Path) -> None:
    result = result_for(tmp_path)
    done = success_status(result)
    assert done["download"]["result"] == "Succeeded" and done["download"]["percent"] == 100
    assert done["download"]["sha256"] == "ab" * 32 and done["gguf"]["quantization"] == "Q8_0"
    failed = failure_status(PullError(Reason.NETWORK_ERROR, "gave up"), 5, 10)
    assert failed["download"] | {} == {
        "bytesDone": 5, "bytesTotal": 10, "percent": 50, "sha256": None,
        "result": "Failed", "reason": "NetworkError", "message": "gave up",
    }  # fmt: skip
    assert failed["gguf"] is None


def test_reporter_merge_patches_the_status_subresource(status_capture: StatusCaptureServer, tmp_path: Path) -> None:
    reporter = KubernetesStatusReporter(api_from_environment(), *parse_target("team-a/llama3"), interval=0.05)
    wait_for(lambda: len(status_capture.patches) >= 1)
    reporter.progress(512, 2048)
    wait_for(lambda: any(p.body["status"]["download"]["bytesDone"] == 512 for p in status_capture.patches))
    reporter.succeeded(result_for(tmp_path))
    patches = status_capture.patches
    assert {p.path for p in patches} == {STATUS_PATH}
    assert {p.content_type for p in patches} == {"application/merge-patch+json"}
    assert set(patches[0].body["status"]) == {"download", "gguf"} and patches[0].body["status"]["gguf"] is None
    progress = next(p.body["status"]["download"] for p in patches if p.body["status"]["download"]["bytesDone"] == 512)
    assert progress["percent"] == 25 and progress["result"] is None
    final = patches[-1].body["status"]
    assert final["download"]["result"] == "Succeeded" and final["gguf"]["architecture"] == "llama"


def test_unchanged_progress_is_not_patched_again(status_capture: StatusCaptureServer) -> None:
    reporter = KubernetesStatusReporter(api_from_environment(), "team-a", "llama3", interval=0.01)
    reporter.progress(7, 10)
    wait_for(lambda: any(p.body["status"]["download"]["bytesDone"] == 7 for p in status_capture.patches))
    time.sleep(0.2)  # many heartbeats pass
    reporter.failed(PullError(Reason.UNAUTHORIZED, "HTTP 401"))
    assert len(status_capture.patches) <= 3  # first, 7/10, final: no patch per heartbeat
    assert status_capture.patches[-1].body["status"]["download"]["reason"] == "Unauthorized"


def test_an_apiserver_error_never_fails_the_pull(status_capture: StatusCaptureServer, caplog: pytest.LogCaptureFixture) -> None:
    status_capture.fail_with = 403
    reporter = KubernetesStatusReporter(api_from_environment(), "team-a", "llama3", interval=0.01)
    reporter.progress(1, 2)
    reporter.failed(PullError(Reason.NETWORK_ERROR, "x"))
    assert len(status_capture.patches) >= 2
    assert "cannot update team-a/llama3 status: Forbidden" in caplog.text
    assert "not-a-secret" not in caplog.text


@pytest.mark.parametrize("target", ["llama3", "/llama3", "ns/", "a/b/c"])
def test_report_target_must_be_namespace_slash_name(target: str) -> None:
    with pytest.raises(ValueError, match="<namespace>/<name>"):
        parse_target(target)
