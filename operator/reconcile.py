"""One reconcile of one LocalModel: observe the children, apply the desired ones, report status.

Level-triggered and idempotent: every handler (create, update, resume, a child's
event, the resync timer) calls the same function, so a restarted operator simply
converges again. Decisions come from the pure modules; I/O goes through `Kube`.
The model's pull Jobs come from kopf's index of them (handlers.py), kept by the
watch, so a reconcile does not LIST them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from localmodel_operator import meta
from localmodel_operator.autoscale import rescale
from localmodel_operator.build_storage import claim_size
from localmodel_operator.children import current_weights, desired_children, stale_jobs
from localmodel_operator.kube import Kube, KubeError
from localmodel_operator.observed import JobPhase, deployment_state, job_state, requested_storage
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel
from localmodel_operator.status import (
    Event, Observed, condition_events, derive_status, human_bytes, progress, status_patch,
)


class ModelLocks:
    """Serializes reconciles of one LocalModel: its own handlers and its children's events run concurrently.

    A lock lives only while someone holds or awaits it, so the table holds the
    models being reconciled right now, not every model ever seen.
    """

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def __call__(self, namespace: str, name: str) -> AsyncIterator[None]:
        key = (namespace, name)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(
    kube: Kube, settings: OperatorSettings, body: Mapping[str, Any], pull_jobs: Iterable[Mapping[str, Any]]
) -> float | None:
    """`pull_jobs`: the model's pull and size Jobs as the watch last saw them.

    Returns the seconds after which the scale decision (keepAlive, autoscaling) is due again, if any."""
    if body["metadata"].get("deletionTimestamp"):
        return None  # the garbage collector removes the owned children
    rescaled = await rescale(kube, body)
    model = LocalModel.from_body(rescaled.body)
    source = model.spec.source
    # A Job on its way out does not count; its deletion event brings us back to create a new one.
    jobs = {job["metadata"]["name"]: job for job in pull_jobs if not job["metadata"].get("deletionTimestamp")}
    current_job = jobs.get(meta.job_name(model.name, source.digest))
    probe_job = jobs.get(meta.probe_job_name(model.name, source.digest))
    job = job_state(current_job) if current_job else None
    probe = job_state(probe_job) if probe_job else None
    weights = current_weights(model, job)
    claimed = await _claimed_size(kube, model)
    if claimed is None and probe is not None and probe.phase == JobPhase.SUCCEEDED:
        model = await _with_fresh_download(kube, model)
    size = claim_size(model, claimed, probe, settings)
    children = desired_children(model, weights, settings, size)

    events: list[Event] = []
    if probe is not None and size is not None and claimed is None and not model.spec.storage.size:
        total = model.download.bytes_total
        measured = f"the source holds {human_bytes(total)}" if total else "the source announced no size"
        events.append(Event("Normal", "ClaimSized", f"{meta.pvc_name(model.name)} requests {size}: {measured}"))
    apply_error = None
    deployment = None
    try:
        for child in children.applied:
            applied = await kube.apply(child)
            if child["kind"] == "Deployment":
                deployment = deployment_state(applied)
        if children.job is not None and children.job["metadata"]["name"] not in jobs:
            created = await kube.create(children.job)
            if created is not None:
                name = created["metadata"]["name"]
                if children.sizing:
                    probe = job_state(created)
                    events.append(Event("Normal", "SizeProbeStarted", f"Job {name} measures {source.summary()}"))
                else:
                    job = job_state(created)
                    events.append(Event("Normal", "PullStarted", f"Job {name} pulls {source.summary()}"))
        for name in stale_jobs(model, jobs):
            await kube.delete("batch/v1", "Job", model.namespace, name)
            events.append(Event("Normal", "PullSuperseded", f"deleted Job {name}: spec.source changed"))
    except KubeError as exc:
        if not exc.is_invalid:
            raise
        apply_error = exc.message  # the spec cannot be realised as is; say why in status

    observed = Observed(weights=weights, job=job, deployment=deployment, apply_error=apply_error,
                        probe=probe if children.sizing else None)
    desired = derive_status(model, observed, settings.router_url, _now())
    patch = status_patch(model.status, desired)
    if patch:
        await kube.patch_model_status(model.namespace, model.name, patch)
    events += condition_events(model.status.get("conditions") or (), desired["conditions"])
    for event in events:
        await kube.post_event(model.namespace, model.name, model.uid, event.type, event.reason, event.message)
    return rescaled.recheck_after_s


async def _claimed_size(kube: Kube, model: LocalModel) -> str | None:
    """What the existing weights claim requests (None without one): a reconcile must never resize it."""
    if model.spec.source.claim_name is not None or model.spec.storage.size:
        return None  # no claim of ours, or the size is the user's to change
    claim = await kube.get("v1", "PersistentVolumeClaim", model.namespace, meta.pvc_name(model.name))
    return requested_storage(claim) if claim else None


async def _with_fresh_download(kube: Kube, model: LocalModel) -> LocalModel:
    """The body may predate the probe's report; the probe patched status before its pod ended,
    so a read made after seeing its Job complete holds the report."""
    body = await kube.get(meta.API_VERSION, meta.KIND, model.namespace, model.name)
    return dataclasses.replace(model, download=LocalModel.from_body(body).download) if body else model


async def refresh_progress(kube: Kube, body: Mapping[str, Any]) -> None:
    """Keeps the PROGRESS column in step with what the puller reports, between full reconciles."""
    status = body.get("status") or {}
    if not status.get("phase") or body["metadata"].get("deletionTimestamp"):
        return
    model = LocalModel.from_body(body)
    text = progress(model, status.get("phase"), model.weights)
    if text != status.get("progress"):
        await kube.patch_model_status(model.namespace, model.name, {"progress": text})
