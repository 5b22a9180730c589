"""Status derivation: phase, conditions with reasons, PROGRESS, READY and the endpoint; no cluster."""

from __future__ import annotations

from typing import Any

import pytest

from localmodel_operator import meta
from localmodel_operator.observed import deployment_state, job_state
from localmodel_operator.spec import Download, Weights
from localmodel_operator.status import (
    Observed, condition_events, derive_status, download_progress, endpoint, status_patch,
)

from .factories import SETTINGS, deployment_body, finished_job, job_body, model

NOW = "2030-01-01T00:00:00Z"


def derive(lm: Any, job: dict | None = None, deployment: dict | None = None, weights: Weights | None = None,
           apply_error: str | None = None) -> dict:
    observed = Observed(weights=weights, job=job_state(job) if job else None,
                        deployment=deployment_state(deployment) if deployment else None, apply_error=apply_error)
    return derive_status(lm, observed, SETTINGS.router_url, NOW)


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def current_weights(lm: Any) -> Weights:
    return Weights(lm.spec.source.digest, lm.spec.source, "c" * 64, lm.gguf)


def job_name(lm: Any) -> str:
    return meta.job_name(lm.name, lm.spec.source.digest)


def test_new_model_is_pending() -> None:
    lm = model()
    status = derive(lm)
    assert status["phase"] == "Pending"
    assert status["progress"] == "waiting"
    assert conditions(status) == {"WeightsReady": ("False", "Pending"), "Available": ("False", "WaitingForWeights"),
                                  "Loaded": ("True", "Loaded"), "Degraded": ("False", "AsExpected")}
    assert status["state"] == "Loaded"
    assert status["endpoint"] is None
    assert status["ready"] == "0/1"
    assert status["source"] == "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert status["servedName"] == "qwen"
    assert status["observedGeneration"] == 3
    assert status["selector"] == "app.kubernetes.io/name=localmodel-server,localmodel.dev/model=qwen"


def test_running_job_is_downloading_with_progress_from_the_puller() -> None:
    lm = model(status={"download": {"bytesDone": 1_073_741_824, "bytesTotal": 4_294_967_296, "percent": 25}})
    status = derive(lm, job_body(job_name(lm), active=1))
    assert status["phase"] == "Downloading"
    assert status["progress"] == "25% of 4.0 GiB"
    weights_ready = next(c for c in status["conditions"] if c["type"] == "WeightsReady")
    assert weights_ready["reason"] == "Downloading"
    assert "25% of 4.0 GiB" in weights_ready["message"]


@pytest.mark.parametrize(("download", "text"), [
    (Download(), "0%"),
    (Download(bytes_done=5 * 2**20), "5.0 MiB"),
    (Download(bytes_done=50, bytes_total=200), "25% of 200 B"),
    (Download(bytes_done=3 * 2**30, bytes_total=6 * 2**30, percent=50), "50% of 6.0 GiB"),
])
def test_download_progress_text(download: Download, text: str) -> None:
    assert download_progress(download) == text


def test_failed_pull_carries_the_pullers_reason() -> None:
    lm = model(status={"download": {"result": "Failed", "reason": "ChecksumMismatch",
                                    "message": "sha256 of the file is 00ff…, expected aaaa…"}})
    status = derive(lm, finished_job(job_name(lm), "Failed", "PodFailurePolicy", "container pull exited 3"))
    assert status["phase"] == "Failed"
    assert status["progress"] == "failed"
    assert conditions(status)["WeightsReady"] == ("False", "ChecksumMismatch")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ChecksumMismatch")
    assert "expected aaaa" in degraded["message"]


def test_failed_pull_without_a_report_uses_the_job_controllers_reason() -> None:
    lm = model()
    status = derive(lm, finished_job(job_name(lm), "Failed", "BackoffLimitExceeded", "Job has reached the limit"))
    assert conditions(status)["Degraded"] == ("True", "BackoffLimitExceeded")


def test_weights_in_place_and_server_loading() -> None:
    lm = model(status={"gguf": {"sizeBytes": 400 * 2**20}})
    weights = current_weights(lm)
    status = derive(lm, deployment=deployment_body(1, replicas=1, updatedReplicas=1, observedGeneration=1),
                    weights=weights)
    assert status["phase"] == "Loading"
    assert status["progress"] == "100%"
    assert conditions(status)["WeightsReady"] == ("True", "Pulled")
    assert "(400.0 MiB)" in next(c for c in status["conditions"] if c["type"] == "WeightsReady")["message"]
    assert conditions(status)["Available"] == ("False", "Loading")
    assert status["weights"] == weights.to_status()


def test_ready_once_the_rollout_is_complete() -> None:
    lm = model()
    status = derive(lm, deployment=deployment_body(1, replicas=1, updatedReplicas=1, readyReplicas=1,
                                                   availableReplicas=1, observedGeneration=1),
                    weights=current_weights(lm))
    assert status["phase"] == "Ready"
    assert conditions(status) == {"WeightsReady": ("True", "Pulled"), "Available": ("True", "MinimumReplicasAvailable"),
                                  "Loaded": ("True", "Loaded"), "Degraded": ("False", "AsExpected")}
    assert status["endpoint"] == "http://router.lm:8000/v1"
    assert status["ready"] == "1/1"
    assert (status["replicas"], status["readyReplicas"]) == (1, 1)


def test_endpoint_is_the_service_without_a_router() -> None:
    assert endpoint(model(), "") == "http://lm-qwen.ml.svc:8000/v1"


def test_a_rollout_in_progress_is_loading_but_still_available() -> None:
    lm = model({"source": model().spec.source.raw, "replicas": 2})
    status = derive(lm, deployment=deployment_body(2, generation=2, replicas=3, updatedReplicas=1, readyReplicas=2,
                                                   availableReplicas=2, observedGeneration=2),
                    weights=current_weights(lm))
    assert status["phase"] == "Loading"
    assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
    stale_observation = derive(lm, deployment=deployment_body(2, generation=3, replicas=2, updatedReplicas=2,
                                                               readyReplicas=2, availableReplicas=2, observedGeneration=2),
                               weights=current_weights(lm))
    assert stale_observation["phase"] == "Loading"


def test_scaled_to_zero_is_ready_but_not_available() -> None:
    lm = model({"source": model().spec.source.raw, "replicas": 0})
    status = derive(lm, deployment=deployment_body(0, observedGeneration=1), weights=current_weights(lm))
    assert status["phase"] == "Ready"
    assert conditions(status)["Available"] == ("False", "ScaledToZero")
    assert conditions(status)["Loaded"] == ("False", "Idle")
    assert status["state"] == "Idle"
    assert status["ready"] == "0/0"


def test_keep_alive_is_explained_in_the_loaded_condition() -> None:
    loaded = derive(model({"source": model().spec.source.raw, "keepAlive": "30s"}))
    message = next(c for c in loaded["conditions"] if c["type"] == "Loaded")["message"]
    assert message == "spec.replicas is 1; keepAlive 30s: scaled to zero after that long without a request"
    idle = derive(model({"source": model().spec.source.raw, "keepAlive": "30s", "replicas": 0}))
    message = next(c for c in idle["conditions"] if c["type"] == "Loaded")["message"]
    assert message.endswith("the next request through the router loads it again")
    forever = derive(model({"source": model().spec.source.raw, "keepAlive": "-1"}))
    assert "keepAlive" not in next(c for c in forever["conditions"] if c["type"] == "Loaded")["message"]


def test_a_stuck_rollout_is_degraded() -> None:
    lm = model()
    stuck = deployment_body(1, replicas=1, observedGeneration=1, conditions=[
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": "timed out"}])
    status = derive(lm, deployment=stuck, weights=current_weights(lm))
    assert status["phase"] == "Failed"
    assert conditions(status)["Degraded"] == ("True", "ProgressDeadlineExceeded")


def test_a_refused_child_is_reported() -> None:
    status = derive(model(), apply_error='Deployment "lm-qwen" is invalid: affinity: bad')
    assert status["phase"] == "Failed"
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (degraded["reason"], degraded["message"]) == ("ApplyFailed", 'Deployment "lm-qwen" is invalid: affinity: bad')


def test_repull_while_serving_says_so() -> None:
    old = model({"source": {"url": "https://h.example/old.gguf"}})
    lm = model({"source": {"url": "https://h.example/new.gguf"}})
    serving = deployment_body(1, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1,
                              observedGeneration=1)
    status = derive(lm, job_body(job_name(lm), active=1), serving, weights=current_weights(old))
    assert status["phase"] == "Downloading"
    assert conditions(status)["Available"] == ("True", "MinimumReplicasAvailable")
    assert "previous weights keep serving" in next(c for c in status["conditions"] if c["type"] == "WeightsReady")["message"]


def test_transition_time_moves_only_when_the_status_flips() -> None:
    first = derive(model())
    later_model = model(status=first)
    again = derive_status(later_model, Observed(None, None, None), "", "2030-01-02T00:00:00Z")
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [NOW, NOW, NOW, NOW]
    assert status_patch(first, {**first, "conditions": again["conditions"]}) == {}
    flipped = derive_status(later_model, Observed(None, None, None, apply_error="nope"), "", "2030-01-02T00:00:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in flipped["conditions"]}
    assert times == {"WeightsReady": NOW, "Available": NOW, "Loaded": NOW, "Degraded": "2030-01-02T00:00:00Z"}


def test_status_patch_holds_only_changes_and_nulls_for_removals() -> None:
    assert status_patch({"phase": "Ready", "endpoint": "x"}, {"phase": "Ready", "endpoint": None}) == {"endpoint": None}
    assert status_patch({}, {"endpoint": None}) == {}


def test_events_on_condition_changes_warn_on_failures_only() -> None:
    pending = derive(model())["conditions"]
    events = condition_events([], pending)
    assert [(e.type, e.reason) for e in events] == [("Normal", "Pending"), ("Normal", "WaitingForWeights")]
    lm = model(status={"download": {"result": "Failed", "reason": "Unauthorized", "message": "401 from the Hub"}})
    failed = derive(lm, finished_job(job_name(lm), "Failed"))["conditions"]
    events = condition_events(pending, failed)
    assert [(e.type, e.reason, e.message) for e in events] == [
        ("Warning", "Unauthorized", "401 from the Hub")]
    assert condition_events(failed, failed) == []
