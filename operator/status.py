"""LocalModel status as a pure function of the spec, the recorded weights and what the children report.

The operator writes every status field except `download` and `gguf`, which
belong to the pull Job (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from localmodel_operator import meta
from localmodel_server.contract import Phase, human_bytes  # noqa: F401  (human_bytes is re-exported)
from localmodel_operator.observed import DeploymentState, JobPhase, JobState
from localmodel_operator.spec import Download, LocalModel, Weights


WEIGHTS_READY, AVAILABLE, LOADED, DEGRADED = "WeightsReady", "Available", "Loaded", "Degraded"
# False conditions with these reasons are on their way, not failures.
IN_PROGRESS_REASONS = frozenset({"Pending", "Downloading", "Loading", "WaitingForWeights", "ScaledToZero", "Idle"})
# status.state: the STATE column.
STATE_LOADED, STATE_IDLE = "Loaded", "Idle"
# Status fields this module owns; everything else in status belongs to the puller.
OPERATOR_FIELDS = (
    "phase", "progress", "source", "ready", "endpoint", "servedName", "observedGeneration",
    "replicas", "readyReplicas", "selector", "weights", "conditions", "state",
)


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """The children's state at reconcile time."""

    weights: Weights | None
    job: JobState | None  # the pull Job for the current spec.source, if any
    deployment: DeploymentState | None
    apply_error: str | None = None  # the apiserver refused a child built from this spec
    probe: JobState | None = None  # the size Job, while the claim and the pull wait for it


def download_progress(download: Download) -> str:
    """'42% of 4.9 GiB' from what the puller reported so far."""
    if download.bytes_total:
        percent = download.percent if download.percent is not None else 100 * (download.bytes_done or 0) // download.bytes_total
        return f"{percent}% of {human_bytes(download.bytes_total)}"
    if download.bytes_done:
        return human_bytes(download.bytes_done)
    return "0%"


def needs_pull(model: LocalModel, weights: Weights | None) -> bool:
    return weights is None or weights.digest != model.spec.source.digest


def _pull_failure(model: LocalModel, job: JobState) -> tuple[str, str]:
    """The puller's own reason when it reported one, else the Job controller's."""
    download = model.download
    if download.result == "Failed" and download.reason:
        return download.reason, download.message or download.reason
    reason = job.reason or "PullFailed"
    return reason, job.message or f"Job {job.name} failed ({reason})"


def _weights_condition(model: LocalModel, observed: Observed) -> Condition:
    weights = observed.weights
    if weights is not None and not needs_pull(model, weights):
        detail = f", sha256 {weights.sha256}" if weights.sha256 else ""
        size = f" ({human_bytes(weights.gguf.size_bytes)})" if weights.gguf.size_bytes else ""
        return Condition(WEIGHTS_READY, True, "Pulled", f"{weights.source.model_path}{size} is in place{detail}")
    job = observed.job
    replacing = " (the previous weights keep serving meanwhile)" if weights else ""
    if job is None and observed.probe is not None:
        probe = observed.probe
        if probe.phase == JobPhase.FAILED:
            return Condition(WEIGHTS_READY, False, *_pull_failure(model, probe))
        return Condition(WEIGHTS_READY, False, "Pending",
                         f"Job {probe.name} measures {model.spec.source.summary()} to size the claim{replacing}")
    if job is None or job.phase == JobPhase.PENDING:
        name = job.name if job else meta.job_name(model.name, model.spec.source.digest)
        return Condition(WEIGHTS_READY, False, "Pending", f"waiting for pull Job {name} to start{replacing}")
    if job.phase == JobPhase.FAILED:
        reason, message = _pull_failure(model, job)
        return Condition(WEIGHTS_READY, False, reason, message)
    return Condition(WEIGHTS_READY, False, "Downloading",
                     f"pulling {model.spec.source.summary()}: {download_progress(model.download)}{replacing}")


def _available_condition(model: LocalModel, observed: Observed) -> Condition:
    deployment = observed.deployment
    if deployment is None:
        return Condition(AVAILABLE, False, "WaitingForWeights", "the server starts once the weights are in place")
    if deployment.desired == 0:
        return Condition(AVAILABLE, False, "ScaledToZero", "spec.replicas is 0")
    counts = f"{deployment.ready}/{deployment.desired} replicas ready"
    if deployment.available > 0:
        return Condition(AVAILABLE, True, "MinimumReplicasAvailable", counts)
    return Condition(AVAILABLE, False, "Loading", f"waiting for the server to load the model ({counts})")


def _loaded_condition(model: LocalModel) -> Condition:
    """Loaded while replicas are asked for; its lastTransitionTime starts the keepAlive clock."""
    replicas, keep_alive = model.spec.replicas, model.spec.keep_alive
    if replicas > 0:
        until = f"; keepAlive {keep_alive}: scaled to zero after that long without a request" if keep_alive else ""
        return Condition(LOADED, True, STATE_LOADED, f"spec.replicas is {replicas}{until}")
    wake = "; the next request through the router loads it again" if keep_alive else ""
    return Condition(LOADED, False, STATE_IDLE, f"scaled to zero, the weights stay in place{wake}")


def _degraded_condition(model: LocalModel, observed: Observed) -> Condition:
    if observed.apply_error:
        return Condition(DEGRADED, True, "ApplyFailed", observed.apply_error)
    for job in (observed.job, observed.probe):
        if needs_pull(model, observed.weights) and job is not None and job.phase == JobPhase.FAILED:
            reason, message = _pull_failure(model, job)
            return Condition(DEGRADED, True, reason, message)
    deployment = observed.deployment
    if deployment is not None and deployment.stuck_reason:
        return Condition(DEGRADED, True, deployment.stuck_reason, deployment.stuck_message or deployment.stuck_reason)
    return Condition(DEGRADED, False, "AsExpected", "no problem observed")


def _phase(model: LocalModel, observed: Observed, degraded: Condition) -> Phase:
    if degraded.status:
        return Phase.FAILED
    if needs_pull(model, observed.weights):
        job = observed.job
        return Phase.DOWNLOADING if job is not None and job.phase == JobPhase.RUNNING else Phase.PENDING
    deployment = observed.deployment
    if deployment is not None and deployment.rolled_out:
        return Phase.READY
    return Phase.LOADING


def progress(model: LocalModel, phase: str | None, weights: Weights | None) -> str:
    """The PROGRESS column: the download while one runs, 100% once the weights are in place."""
    if not needs_pull(model, weights):
        return "100%"
    if phase == Phase.DOWNLOADING:
        return download_progress(model.download)
    if phase == Phase.FAILED:
        return "failed"
    return "waiting"


def endpoint(model: LocalModel, router_url: str) -> str:
    if router_url:
        return f"{router_url.rstrip('/')}/v1"
    return f"http://{meta.service_name(model.name)}.{model.namespace}.svc:{meta.SERVER_PORT}/v1"


def conditions_to_status(
    conditions: Sequence[Condition], previous: Sequence[Mapping[str, Any]], generation: int, now: str
) -> list[dict[str, Any]]:
    """metav1.Condition shape; lastTransitionTime moves only when the status flips."""
    before = {condition.get("type"): condition for condition in previous}
    result = []
    for condition in conditions:
        status = "True" if condition.status else "False"
        old = before.get(condition.type) or {}
        since = old.get("lastTransitionTime") if old.get("status") == status else None
        result.append({
            "type": condition.type,
            "status": status,
            "reason": condition.reason,
            "message": condition.message,
            "lastTransitionTime": since or now,
            "observedGeneration": generation,
        })
    return result


def derive_status(model: LocalModel, observed: Observed, router_url: str, now: str) -> dict[str, Any]:
    """The operator's status fields (OPERATOR_FIELDS), ready for a merge patch."""
    weights_ready = _weights_condition(model, observed)
    available = _available_condition(model, observed)
    degraded = _degraded_condition(model, observed)
    loaded = _loaded_condition(model)
    phase = _phase(model, observed, degraded)
    deployment = observed.deployment
    status: dict[str, Any] = {
        "phase": phase.value,
        "progress": progress(model, phase, observed.weights),
        "source": model.spec.source.summary(),
        "ready": f"{deployment.ready if deployment else 0}/{model.spec.replicas}",
        "endpoint": endpoint(model, router_url) if available.status else None,
        "servedName": model.spec.served_name,
        "observedGeneration": model.generation,
        "replicas": deployment.replicas if deployment else 0,
        "readyReplicas": deployment.ready if deployment else 0,
        "selector": meta.selector_string(meta.server_selector(model.name)),
        "weights": observed.weights.to_status() if observed.weights else None,
        "conditions": conditions_to_status(
            (weights_ready, available, loaded, degraded), model.status.get("conditions") or (), model.generation, now
        ),
        "state": STATE_LOADED if loaded.status else STATE_IDLE,
    }
    return status


def status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that differ (None deletes in a merge patch); empty when status is already right."""
    return {key: value for key, value in desired.items() if current.get(key) != value}


@dataclass(frozen=True)
class Event:
    type: str  # Normal or Warning
    reason: str
    message: str


def condition_events(previous: Sequence[Mapping[str, Any]], current: Sequence[Mapping[str, Any]]) -> list[Event]:
    """An Event per condition whose status or reason changed, Warning when something went wrong."""
    before = {condition.get("type"): condition for condition in previous}
    events = []
    for condition in current:
        old = before.get(condition["type"]) or {}
        if (old.get("status"), old.get("reason")) == (condition["status"], condition["reason"]):
            continue
        if not old and condition["type"] == DEGRADED and condition["status"] == "False":
            continue  # "nothing is wrong" is not news on a new object
        if not old and condition["type"] == LOADED and condition["status"] == "True":
            continue  # neither is "it runs the replicas it was created with"
        event = Event("Warning" if _is_warning(condition) else "Normal", condition["reason"], condition["message"])
        if event not in events:  # a failed pull flips WeightsReady and Degraded with the same words
            events.append(event)
    return events


def _is_warning(condition: Mapping[str, Any]) -> bool:
    if condition["type"] == DEGRADED:
        return condition["status"] == "True"
    return condition["status"] == "False" and condition["reason"] not in IN_PROGRESS_REASONS
