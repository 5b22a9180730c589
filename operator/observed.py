"""What the children report: pure parsers of Job, Deployment and claim objects as the apiserver returns them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class JobPhase(StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


@dataclass(frozen=True)
class JobState:
    name: str
    phase: JobPhase
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class DeploymentState:
    desired: int
    replicas: int = 0
    ready: int = 0
    available: int = 0
    updated: int = 0
    observed_current: bool = False
    stuck_reason: str | None = None
    stuck_message: str | None = None

    @property
    def rolled_out(self) -> bool:
        """Every pod runs the current template and is available (`kubectl rollout status` semantics)."""
        return (
            self.observed_current
            and self.updated >= self.desired
            and self.replicas == self.updated
            and self.available >= self.desired
        )


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (obj.get("status") or {}).get("conditions") or ():
        if condition.get("type") == kind:
            return condition
    return None


def job_state(job: Mapping[str, Any]) -> JobState:
    name = job["metadata"]["name"]
    for kind, phase in (("Complete", JobPhase.SUCCEEDED), ("Failed", JobPhase.FAILED)):
        condition = _condition(job, kind)
        if condition is not None and condition.get("status") == "True":
            return JobState(name, phase, condition.get("reason"), condition.get("message"))
    status = job.get("status") or {}
    if status.get("active") or status.get("failed"):
        return JobState(name, JobPhase.RUNNING)
    return JobState(name, JobPhase.PENDING)


def deployment_state(deployment: Mapping[str, Any]) -> DeploymentState:
    status = deployment.get("status") or {}
    progressing = _condition(deployment, "Progressing")
    stuck = progressing is not None and progressing.get("status") == "False"
    return DeploymentState(
        desired=int((deployment.get("spec") or {}).get("replicas", 1)),
        replicas=int(status.get("replicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        observed_current=int(status.get("observedGeneration") or 0) >= int(deployment["metadata"].get("generation") or 0),
        stuck_reason=progressing.get("reason") if stuck and progressing else None,
        stuck_message=progressing.get("message") if stuck and progressing else None,
    )


def requested_storage(claim: Mapping[str, Any]) -> str | None:
    """spec.resources.requests.storage of a PersistentVolumeClaim."""
    requests = ((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}
    return requests.get("storage")
