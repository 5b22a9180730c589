"""The desired set of children, and which weights the server runs: pure decisions for one reconcile."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from localmodel_operator import build_puller, build_server, build_storage, meta
from localmodel_operator.observed import JobPhase, JobState
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel, Weights
from localmodel_operator.status import needs_pull


@dataclass(frozen=True)
class Children:
    applied: tuple[dict[str, Any], ...]  # server-side applied on every reconcile, in this order
    job: dict[str, Any] | None  # created when missing, never patched: a Job's template is immutable
    sizing: bool = False  # `job` is the size probe: the claim and the pull wait for its answer


def current_weights(model: LocalModel, job: JobState | None) -> Weights | None:
    """The recorded weights, replaced by spec.source once its pull Job has succeeded."""
    source = model.spec.source
    if job is not None and job.phase == JobPhase.SUCCEEDED and needs_pull(model, model.weights):
        return Weights(digest=source.digest, source=source, sha256=model.download.sha256 or source.sha256,
                       gguf=model.gguf)
    return model.weights


def desired_children(
    model: LocalModel, weights: Weights | None, settings: OperatorSettings, claim_size: str | None = None
) -> Children:
    """`claim_size` from build_storage.claim_size; None (not yet known) makes the size probe the Job."""
    source = model.spec.source
    sizing = source.claim_name is None and claim_size is None
    claim = build_storage.weights_claim(model, settings, claim_size) if claim_size is not None else None
    applied = [
        *([claim] if claim else []),
        build_puller.service_account(model),
        build_puller.role(model),
        build_puller.role_binding(model),
        build_server.service(model),
    ]
    # The server starts only once some weights are in place; while a new source is
    # pulled it keeps loading the previous ones.
    if weights is not None:
        applied.append(build_server.deployment(model, weights, settings))
    job = None
    if needs_pull(model, weights):
        job = build_puller.probe_job(model, settings) if sizing else build_puller.job(model, settings)
    return Children(applied=tuple(applied), job=job, sizing=sizing and job is not None)


def stale_jobs(model: LocalModel, job_names: Iterable[str]) -> list[str]:
    """Pull and size Jobs for sources that are no longer wanted (the spec moved on)."""
    digest = model.spec.source.digest
    current = {meta.job_name(model.name, digest), meta.probe_job_name(model.name, digest)}
    return sorted(name for name in job_names if name not in current)
