"""`localmodel-pull --probe`: the source's size, learned as a pull resolves it, without downloading it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from support.fake_hub import FakeHub
from support.http_faults import FaultyHTTPServer, Faults
from support.puller_gguf import write_gguf
from support.s3_moto import REGION, MotoS3
from support.status_capture import StatusCaptureServer

from localmodel_server.contract import PULL_REPORTED_FAILURE_EXIT_CODE
from localmodel_server.puller import PullError, Reason, RetryPolicy, parse_source, probe
from localmodel_server.puller.progress import probe_status

PULL = str(Path(sys.executable).with_name("localmodel-pull"))
FAST = RetryPolicy(attempts=2, backoff_initial=0.01, backoff_max=0.05, stall_timeout=2, connect_timeout=2)


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PULL, "--probe", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ))


def test_a_probe_reports_the_size_without_downloading(
    http_faults: FaultyHTTPServer, status_capture: StatusCaptureServer, tmp_path: Path
) -> None:
    model = write_gguf(tmp_path / "served.gguf", extra_bytes=4 << 20)
    served = http_faults.add_file("/m.gguf", model)
    log = tmp_path / "termination-log"
    proc = run_probe("--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}),
                     "--report-to", "team-a/llama3", "--termination-log", str(log))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    size = model.stat().st_size
    assert json.loads(log.read_text()) == json.loads(proc.stdout) == {"result": "Probed", "bytesTotal": size}
    assert served.requests[-1]["range"] == "bytes=0-0" and served.bytes_served <= 1
    final = status_capture.patches[-1].body["status"]["download"]
    assert final["bytesTotal"] == size and final["bytesDone"] == 0
    assert final["result"] is None and final["sha256"] is None  # a probe is no finished pull


def test_a_missing_file_fails_the_probe_like_a_pull(
    http_faults: FaultyHTTPServer, status_capture: StatusCaptureServer, tmp_path: Path
) -> None:
    http_faults.add_file("/m.gguf", write_gguf(tmp_path / "served.gguf"), Faults(status=404))
    log = tmp_path / "termination-log"
    proc = run_probe("--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}),
                     "--report-to", "team-a/llama3", "--termination-log", str(log))  # fmt: skip
    assert proc.returncode == PULL_REPORTED_FAILURE_EXIT_CODE and "Traceback" not in proc.stderr
    outcome = json.loads(log.read_text())
    assert outcome["result"] == "Failed" and outcome["reason"] == "SourceNotFound" and "HTTP 404" in outcome["message"]
    final = status_capture.patches[-1].body["status"]["download"]
    assert final["result"] == "Failed" and final["reason"] == "SourceNotFound"


@pytest.mark.parametrize("args", [
    ["--source", '{"url": "https://h/m.gguf"}', "--dest", "/tmp/x"],  # both
    ["--source", '{"pvc": {"claimName": "c", "path": "m.gguf"}}'],  # used in place, nothing to probe
])  # fmt: skip
def test_probe_usage_errors(args: list[str]) -> None:
    proc = run_probe(*args)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_hf_probe_uses_the_hub_metadata(fake_hub: FakeHub, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "q4.gguf", extra_bytes=1 << 20)
    fake_hub.add_repo("acme/tiny-GGUF", {"tiny-Q4_K_M.gguf": model})
    assert probe(parse_source({"hf": {"repo": "acme/tiny-GGUF", "quant": "Q4_K_M"}}), policy=FAST) == model.stat().st_size
    assert not [path for method, path, _ in fake_hub.requests if method == "GET" and "/resolve/" in path]
    with pytest.raises(PullError) as caught:
        probe(parse_source({"hf": {"repo": "acme/tiny-GGUF", "file": "absent.gguf"}}), policy=FAST)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND


def test_s3_probe_uses_the_object_metadata(moto_s3: MotoS3, tmp_path: Path) -> None:
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    moto_s3.client().create_bucket(Bucket=bucket)
    model = write_gguf(tmp_path / "m.gguf")
    moto_s3.client().upload_file(str(model), bucket, "m.gguf")

    def s3(key: str) -> dict[str, object]:
        return {"s3": {"bucket": bucket, "key": key, "endpoint": moto_s3.endpoint, "region": REGION}}

    assert probe(parse_source(s3("m.gguf")), policy=FAST) == model.stat().st_size
    with pytest.raises(PullError) as caught:
        probe(parse_source(s3("absent.gguf")), policy=FAST)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND


def test_probe_status_carries_no_result() -> None:
    assert probe_status(None)["download"] == {
        "bytesDone": 0, "bytesTotal": None, "percent": None,
        "sha256": None, "result": None, "reason": None, "message": None,
    }  # fmt: skip
