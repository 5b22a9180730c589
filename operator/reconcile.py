"""One reconcile of one LocalModel: observe the children, apply the desired ones, report status.

Level-triggered and idempotent: every handler (create, update, resume, a child's
event, the resync timer) calls the same function, so a restarted operator simply
converges again. Decisions come from the pure modules; I/O goes through `Kube`.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from localmodel_operator import meta
from localmodel_operator.children import current_weights, desired_children, stale_jobs
from localmodel_operator.kube import Kube, KubeError
from localmodel_operator.observed import deployment_state, job_state
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel
from localmodel_operator.status import (
    Event, Observed, condition_events, derive_status, progress, status_patch,
)


class ModelLocks:
    """Serializes reconciles of one LocalModel: its own handlers and its children's events run concurrently."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def __call__(self, namespace: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((namespace, name), asyncio.Lock())


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(kube: Kube, settings: OperatorSettings, body: Mapping[str, Any]) -> None:
    if body["metadata"].get("deletionTimestamp"):
        return  # the garbage collector removes the owned children
    model = LocalModel.from_body(body)
    source = model.spec.source
    listed = await kube.list("batch/v1", "Job", model.namespace, meta.labels(model.name, meta.PULLER_COMPONENT))
    # A Job on its way out does not count; its deletion event brings us back to create a new one.
    jobs = [job for job in listed if not job["metadata"].get("deletionTimestamp")]
    current_job = next((job for job in jobs if job["metadata"]["name"] == meta.job_name(model.name, source.digest)), None)
    job = job_state(current_job) if current_job else None
    weights = current_weights(model, job)
    children = desired_children(model, weights, settings)

    events: list[Event] = []
    apply_error = None
    deployment = None
    try:
        for child in children.applied:
            applied = await kube.apply(child)
            if child["kind"] == "Deployment":
                deployment = deployment_state(applied)
        if children.job is not None and current_job is None:
            created = await kube.create(children.job)
            if created is not None:
                job = job_state(created)
                events.append(Event("Normal", "PullStarted", f"Job {created['metadata']['name']} pulls {source.summary()}"))
        for name in stale_jobs(model, (j["metadata"]["name"] for j in jobs)):
            await kube.delete("batch/v1", "Job", model.namespace, name)
            events.append(Event("Normal", "PullSuperseded", f"deleted Job {name}: spec.source changed"))
    except KubeError as exc:
        if not exc.is_invalid:
            raise
        apply_error = exc.message  # the spec cannot be realised as is; say why in status

    observed = Observed(weights=weights, job=job, deployment=deployment, apply_error=apply_error)
    desired = derive_status(model, observed, settings.router_url, _now())
    patch = status_patch(model.status, desired)
    if patch:
        await kube.patch_model_status(model.namespace, model.name, patch)
    events += condition_events(model.status.get("conditions") or (), desired["conditions"])
    for event in events:
        await kube.post_event(model.namespace, model.name, model.uid, event.type, event.reason, event.message)


async def refresh_progress(kube: Kube, body: Mapping[str, Any]) -> None:
    """Keeps the PROGRESS column in step with what the puller reports, between full reconciles."""
    status = body.get("status") or {}
    if not status.get("phase") or body["metadata"].get("deletionTimestamp"):
        return
    model = LocalModel.from_body(body)
    text = progress(model, status.get("phase"), model.weights)
    if text != status.get("progress"):
        await kube.patch_model_status(model.namespace, model.name, {"progress": text})
