"""Sizing the weights claim from the source's content length: the size Job, the decision, the status; no cluster."""

from __future__ import annotations

import pytest

from localmodel_operator import build_puller, meta
from localmodel_operator.build_storage import GIB, claim_size, size_for_content
from localmodel_operator.children import desired_children, stale_jobs
from localmodel_operator.observed import JobPhase, JobState, job_state, requested_storage
from localmodel_operator.status import Observed, derive_status

from .factories import HF_SOURCE, SETTINGS, finished_job, job_body, model

PROBED = {"download": {"bytesDone": 0, "bytesTotal": 5 * GIB, "percent": 0}}


@pytest.mark.parametrize(("size", "claim"), [
    (0, "1Gi"),
    (491_400_032, "1Gi"),
    (GIB * 10 // 11, "1Gi"),  # x 1.1 still fits in 1 GiB
    (GIB * 10 // 11 + 1, "2Gi"),  # one byte more does not
    (GIB, "2Gi"),
    (5 * GIB, "6Gi"),  # 5.5 rounded up
    (10 * GIB, "11Gi"),
])  # fmt: skip
def test_claim_is_the_content_length_plus_ten_percent_in_whole_gib(size: int, claim: str) -> None:
    assert size_for_content(size) == claim


def probe(phase: JobPhase) -> JobState:
    return JobState(meta.probe_job_name("qwen", model().spec.source.digest), phase)


def test_claim_size_decisions() -> None:
    explicit = model({"source": HF_SOURCE, "storage": {"size": "3Gi"}}, PROBED)
    assert claim_size(explicit, "9Gi", None, SETTINGS) == "3Gi"  # the user's size, as before: no probe
    assert claim_size(model(status=PROBED), "7Gi", None, SETTINGS) == "7Gi"  # an existing claim keeps its size
    assert claim_size(model(status=PROBED), None, None, SETTINGS) is None  # no size Job yet
    assert claim_size(model(status=PROBED), None, probe(JobPhase.RUNNING), SETTINGS) is None
    assert claim_size(model(status=PROBED), None, probe(JobPhase.FAILED), SETTINGS) is None
    assert claim_size(model(status=PROBED), None, probe(JobPhase.SUCCEEDED), SETTINGS) == "6Gi"
    unsized = model(status={"download": {"bytesDone": 0, "bytesTotal": None}})
    assert claim_size(unsized, None, probe(JobPhase.SUCCEEDED), SETTINGS) == SETTINGS.default_storage_size
    # A finished pull's report is not a probe's answer.
    pulled = model(status={"download": {"bytesTotal": 5 * GIB, "result": "Succeeded"}})
    assert claim_size(pulled, None, probe(JobPhase.SUCCEEDED), SETTINGS) == SETTINGS.default_storage_size


def test_an_unsized_new_model_gets_the_size_job_and_no_claim_or_pull_yet() -> None:
    lm = model({"source": {**HF_SOURCE, "secretRef": {"name": "hf-token"}}})
    children = desired_children(lm, None, SETTINGS, None)
    assert children.sizing and "PersistentVolumeClaim" not in [c["kind"] for c in children.applied]
    job = children.job
    assert job is not None and job["metadata"]["name"] == f"lm-qwen-size-{lm.spec.source.digest}"
    pull = build_puller.job(lm, SETTINGS)
    pod, pull_pod = job["spec"]["template"]["spec"], pull["spec"]["template"]["spec"]
    # No weights claim (it does not exist yet), only the scratch /tmp huggingface_hub and boto3 may write to.
    assert [v["name"] for v in pod["volumes"]] == ["tmp"] and "emptyDir" in pod["volumes"][0]
    assert pod["containers"][0]["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    for key in ("serviceAccountName", "securityContext", "restartPolicy"):
        assert pod[key] == pull_pod[key]
    container, pull_container = pod["containers"][0], pull_pod["containers"][0]
    assert container["securityContext"] == pull_container["securityContext"]
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert container["args"][0] == "--probe" and "--dest" not in container["args"]
    assert job["metadata"]["labels"] == pull["metadata"]["labels"]
    assert job["spec"]["ttlSecondsAfterFinished"] == pull["spec"]["ttlSecondsAfterFinished"]
    assert job["spec"]["podFailurePolicy"] == pull["spec"]["podFailurePolicy"]

    sized = desired_children(lm, None, SETTINGS, "6Gi")
    claim = sized.applied[0]
    assert claim["kind"] == "PersistentVolumeClaim" and claim["spec"]["resources"]["requests"]["storage"] == "6Gi"
    assert not sized.sizing and sized.job is not None and sized.job["metadata"]["name"] == meta.job_name(
        "qwen", lm.spec.source.digest)


def test_the_current_size_job_is_kept_and_an_old_sources_one_removed() -> None:
    lm = model()
    digest = lm.spec.source.digest
    current = [meta.probe_job_name("qwen", digest), meta.job_name("qwen", digest)]
    assert stale_jobs(lm, [*current, "lm-qwen-size-00000000"]) == ["lm-qwen-size-00000000"]


def test_requested_storage_of_a_claim() -> None:
    assert requested_storage({"spec": {"resources": {"requests": {"storage": "6Gi"}}}}) == "6Gi"
    assert requested_storage({"spec": {}}) is None


def conditions(status: dict) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_status_while_measuring_and_after_a_failed_probe() -> None:
    lm = model()
    name = meta.probe_job_name("qwen", lm.spec.source.digest)
    status = derive_status(lm, Observed(None, None, None, probe=job_state(job_body(name, active=1))), "", "now")
    assert status["phase"] == "Pending" and status["progress"] == "waiting"
    assert conditions(status)["WeightsReady"] == ("False", "Pending")
    assert name in status["conditions"][0]["message"]

    failed = model(status={"download": {"result": "Failed", "reason": "SourceNotFound", "message": "HTTP 404"}})
    probe_failed = job_state(finished_job(name, "Failed", "PodFailurePolicy"))
    status = derive_status(failed, Observed(None, None, None, probe=probe_failed), "", "now")
    assert status["phase"] == "Failed" and status["progress"] == "failed"
    assert conditions(status)["WeightsReady"] == ("False", "SourceNotFound")
    assert conditions(status)["Degraded"] == ("True", "SourceNotFound")
