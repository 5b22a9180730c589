"""`localmodel-pull` as the Job runs it: a subprocess, killed and restarted, reporting its outcome."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.http_faults import FaultyHTTPServer, Faults
from support.puller_gguf import write_gguf
from support.status_capture import StatusCaptureServer

from localmodel_server.puller.store import MARKER_FILE, MODEL_FILE, PARTIAL_FILE

PULL = str(Path(sys.executable).with_name("localmodel-pull"))


def run_pull(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PULL, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_killed_at_half_then_restarted_fetches_only_the_rest(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "served.gguf", extra_bytes=24 << 20)
    size = model.stat().st_size
    served = http_faults.add_file("/m.gguf", model, Faults(rate_bytes_per_s=16 << 20))
    dest = tmp_path / "models"
    source = json.dumps({"url": f"{http_faults.base_url}/m.gguf", "sha256": hashlib.sha256(model.read_bytes()).hexdigest()})

    first = subprocess.Popen([PULL, "--source", source, "--dest", str(dest)], stderr=subprocess.DEVNULL)
    partial = dest / PARTIAL_FILE
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size >= size // 2):
        assert first.poll() is None and time.monotonic() < deadline, "the pull ended before reaching half"
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    first.wait()
    kept = partial.stat().st_size
    assert size // 2 <= kept < size and not (dest / MODEL_FILE).exists()

    served.faults.rate_bytes_per_s = None
    second = run_pull("--source", source, "--dest", str(dest))
    assert second.returncode == 0, second.stderr
    assert len(served.body_bytes) == 2 and served.body_bytes[-1] == size - kept  # only the rest crossed the network
    assert served.requests[-1]["range"] == f"bytes={kept}-"
    assert (dest / MODEL_FILE).read_bytes() == model.read_bytes()
    summary = json.loads(second.stdout)
    assert summary["bytesFetched"] == size - kept and summary["gguf"]["quantization"] == "Q8_0"


def test_success_writes_the_outcome_and_a_rerun_is_a_no_op(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    model = write_gguf(tmp_path / "served.gguf")
    served = http_faults.add_file("/m.gguf", model)
    args = ["--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}), "--dest", str(tmp_path / "models")]
    log = tmp_path / "termination-log"
    assert run_pull(*args, "--termination-log", str(log)).returncode == 0
    outcome = json.loads(log.read_text())
    assert outcome["result"] == "Succeeded" and outcome["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert json.loads((tmp_path / "models" / MARKER_FILE).read_text())["sha256"] == outcome["sha256"]
    requests = len(served.requests)
    again = run_pull(*args)
    assert again.returncode == 0 and json.loads(again.stdout)["bytesFetched"] == 0
    assert json.loads(again.stdout)["outcome"] == "present"
    assert len(served.requests) == requests


def test_failure_writes_reason_without_traceback_or_secret(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    http_faults.add_file("/m.gguf", write_gguf(tmp_path / "served.gguf"), Faults(bearer_token="right"))
    log = tmp_path / "termination-log"
    proc = run_pull(
        "--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}),
        "--dest", str(tmp_path / "models"),
        "--termination-log", str(log),
        env={"BEARER_TOKEN": "wrong-token-value"},
    )  # fmt: skip
    assert proc.returncode == 3
    outcome = json.loads(log.read_text())
    assert outcome["result"] == "Failed" and outcome["reason"] == "Unauthorized" and "HTTP 401" in outcome["message"]
    assert "Traceback" not in proc.stderr and "Unauthorized" in proc.stderr
    assert "wrong-token-value" not in proc.stderr + proc.stdout + log.read_text()


def test_a_malformed_source_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_pull("--source", '{"url": "ftp://x/m.gguf"}', "--dest", str(tmp_path))
    assert proc.returncode == 2 and "http:// or https://" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("text", ["{not json", '{"hf": {"repo": "a/b", "file": "../../etc/passwd"}}'])
def test_unparseable_or_escaping_sources_are_refused(tmp_path: Path, text: str) -> None:
    proc = run_pull("--source", text, "--dest", str(tmp_path))
    assert proc.returncode == 2 and "invalid source" in proc.stderr


def test_a_pvc_source_is_checked_in_place(tmp_path: Path) -> None:
    volume = tmp_path / "volume"
    (volume / "llama").mkdir(parents=True)
    model = write_gguf(volume / "llama" / "m.gguf")
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    ok = run_pull("--source", json.dumps({"pvc": {"claimName": "c", "path": "llama/m.gguf"}, "sha256": digest}),
                  "--dest", str(volume))  # fmt: skip
    assert ok.returncode == 0 and json.loads(ok.stdout)["path"] == str(model)
    assert "file on the claim used in place; sha256 verified" in ok.stderr
    assert sorted(p.name for p in volume.iterdir()) == ["llama"]  # nothing written to the user's volume
    (volume / "escape.gguf").symlink_to(tmp_path / "outside.gguf")
    escaped = run_pull("--source", json.dumps({"pvc": {"claimName": "c", "path": "escape.gguf"}}), "--dest", str(volume))
    assert escaped.returncode == 3 and "outside the volume" in escaped.stderr


def test_report_to_patches_the_localmodel_status(
    http_faults: FaultyHTTPServer, status_capture: StatusCaptureServer, tmp_path: Path
) -> None:
    model = write_gguf(tmp_path / "served.gguf", arch="qwen2", context_length=32768)
    http_faults.add_file("/m.gguf", model)
    proc = run_pull(
        "--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}),
        "--dest", str(tmp_path / "models"),
        "--report-to", "team-a/qwen",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert status_capture.patches[0].body["status"]["gguf"] is None
    final = status_capture.patches[-1]
    assert final.path.endswith("/namespaces/team-a/localmodels/qwen/status")
    assert final.body["status"]["download"]["result"] == "Succeeded"
    assert final.body["status"]["download"]["bytesDone"] == model.stat().st_size
    assert final.body["status"]["gguf"] == {
        "architecture": "qwen2",
        "parameters": 32 * 64 + 64,
        "quantization": "Q8_0",
        "contextLength": 32768,
        "sizeBytes": model.stat().st_size,
    }


def test_an_unwritable_volume_is_reported_not_crashed(http_faults: FaultyHTTPServer, tmp_path: Path) -> None:
    http_faults.add_file("/m.gguf", write_gguf(tmp_path / "served.gguf"))
    if os.geteuid() == 0:  # root ignores directory permissions; sysfs refuses new directories even to root
        volume = Path("/sys/localmodel-test-volume")
    else:
        volume = tmp_path / "volume"
        volume.mkdir(mode=0o555)
    log = tmp_path / "termination-log"
    proc = run_pull("--source", json.dumps({"url": f"{http_faults.base_url}/m.gguf"}), "--dest", str(volume),
                    "--termination-log", str(log))  # fmt: skip
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert json.loads(log.read_text())["reason"] == "InsufficientStorage"


def test_a_crash_exits_apart_from_a_reported_failure_so_the_job_retries_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """ESTALE on NFS is no reason to give up: the Job's podFailurePolicy fails only reported failures."""
    import errno

    from localmodel_server.contract import PULL_CRASHED_EXIT_CODE, PULL_REPORTED_FAILURE_EXIT_CODE
    from localmodel_server.puller import cli

    def stale(*_: object) -> None:
        raise OSError(errno.ESTALE, "Stale file handle")

    monkeypatch.setattr(cli, "pull", stale)
    log = tmp_path / "termination-log"
    code = cli.main(["--source", json.dumps({"url": "https://models.test/m.gguf"}), "--dest", str(tmp_path / "m"),
                     "--termination-log", str(log)])  # fmt: skip
    assert code == PULL_CRASHED_EXIT_CODE != PULL_REPORTED_FAILURE_EXIT_CODE
    outcome = json.loads(log.read_text())
    assert outcome == {"result": "Crashed", "message": "OSError: [Errno 116] Stale file handle"}
    assert "crashed; the Job retries it" in caplog.text
