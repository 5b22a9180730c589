"""Executes the scale decision (scaling.decide) for one LocalModel: read, decide, write /scale, report.

Runs at the start of every reconcile and whenever a router's activity report
changes the LocalModel's status, under the model's lock (handlers.py).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localmodel_operator.kube import Kube, KubeError
from localmodel_operator.scaling import ScalePolicy, decide, scale_state, status_fields
from localmodel_operator.status import LOADED

log = logging.getLogger(__name__)
# After a conflicting write (a router woke the model or reported meanwhile), decide again this soon.
CONFLICT_RECHECK_S = 1.0


@dataclass(frozen=True)
class Rescaled:
    body: Mapping[str, Any]  # the LocalModel with the replicas just written
    recheck_after_s: float | None  # when to decide again if nothing else changes


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


async def rescale(kube: Kube, body: Mapping[str, Any], now: datetime.datetime | None = None) -> Rescaled:
    metadata = body["metadata"]
    if metadata.get("deletionTimestamp"):
        return Rescaled(body, None)
    namespace, name = metadata["namespace"], metadata["name"]
    status = body.get("status") or {}
    try:
        policy = ScalePolicy.from_spec(body.get("spec") or {})
    except ValueError as exc:  # the CRD's pattern admits only valid durations; an older object may not
        log.warning("%s/%s: %s", namespace, name, exc)
        return Rescaled(body, None)
    decision = decide(policy, scale_state(body, LOADED), now or _now())
    if decision.changes:
        try:
            await kube.update_scale(namespace, name, decision.replicas, metadata["resourceVersion"])
        except KubeError as exc:
            if exc.status != 409:
                raise
            return Rescaled(body, CONFLICT_RECHECK_S)
        log.info("%s/%s: %s", namespace, name, decision.message)
        await kube.post_event(namespace, name, metadata.get("uid", ""), "Normal", decision.reason, decision.message)
        body = {**body, "spec": {**(body.get("spec") or {}), "replicas": decision.replicas}}
    patch = status_fields(decision, status)
    if patch:
        await kube.patch_model_status(namespace, name, patch)
    return Rescaled(body, decision.recheck_after_s)
