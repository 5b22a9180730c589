"""kopf handlers: thin adapters from watch events to `reconcile`.

Registered on import. The same level-triggered reconcile runs on every cause
(create, update, resume after a restart, events of the Jobs and Deployments
the operator owns, and a resync timer), so no handler keeps state of its own.

kopf only logs the errors of event handlers: a Job's completion that meets a
transient apiserver error would otherwise wait for the next change. The
resync loop bounds that wait, and it also repairs children that were changed
or deleted behind the operator's back (no watch covers Services, PVCs or RBAC
objects). It is a task of the operator rather than a kopf timer because kopf
puts a finalizer on every object a timer runs for, and a LocalModel must stay
deletable while the operator is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

import kopf

from localmodel_operator import meta
from localmodel_operator.autoscale import rescale
from localmodel_operator.kube import Kube, KubeError, load_api_client
from localmodel_operator.reconcile import ModelLocks, reconcile, refresh_progress
from localmodel_operator.settings import OperatorSettings

MODEL = (meta.API_GROUP, meta.VERSION, meta.PLURAL)
# Transient failures (apiserver unavailable, conflicts) are retried after this many seconds.
RETRY_DELAY_S = 5
OWNED = {"app.kubernetes.io/managed-by": meta.FIELD_MANAGER}
PULL_JOBS = {**OWNED, "app.kubernetes.io/name": meta.PULLER_COMPONENT}
log = logging.getLogger(__name__)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """The same credentials as `kube.load_api_client`: $KUBECONFIG, else the pod's ServiceAccount."""
    if os.environ.get("KUBECONFIG"):
        return kopf.login_with_kubeconfig(**kwargs)
    return kopf.login_with_service_account(**kwargs)


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, local_models: kopf.Index, pull_jobs: kopf.Index, **_: Any
) -> None:
    # Handler bookkeeping goes to annotations: the status belongs to the operator and the puller.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.posting.level = logging.WARNING  # our own Events say what happens; kopf's only on trouble
    settings.scanning.disabled = True  # the CRD is installed with the chart; no need to watch CRDs
    # Only one replica runs handlers: main.py holds a Lease before starting kopf.
    settings.peering.standalone = True
    # main.py passes these in; `kopf run` (tests, development) starts without them.
    memo.setdefault("config", OperatorSettings())
    memo.setdefault("locks", ModelLocks())
    memo["wakeups"] = Wakeups()
    if "kube" not in memo:
        memo["kube"] = Kube(load_api_client())
        memo["close_kube"] = True
    memo["resync"] = asyncio.create_task(_resync_forever(memo, local_models, pull_jobs))


class Wakeups:
    """One pending reconcile per model, at the time its scale decision is due (keepAlive, scaleDownDelay).

    Only a reminder: the decision's inputs live in the LocalModel, and the resync
    loop and `resume` recompute it after a restart."""

    def __init__(self) -> None:
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def schedule(self, namespace: str, name: str, delay_s: float | None, run: Any) -> None:
        key = (namespace, name)
        if (timer := self._timers.pop(key, None)) is not None:
            timer.cancel()
        if delay_s is None:
            return

        def fire() -> None:
            self._timers.pop(key, None)
            task = asyncio.create_task(run())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        # A little late rather than early: the decision compares with the clock again.
        self._timers[key] = asyncio.get_running_loop().call_later(max(delay_s, 0.0) + 0.5, fire)

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()


@kopf.on.cleanup()
async def close(memo: kopf.Memo, **_: Any) -> None:
    memo["wakeups"].cancel_all()
    memo["resync"].cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await memo["resync"]
    if memo.get("close_kube"):
        memo["kube"].close()


@kopf.index(*MODEL)
def local_models(namespace: str, name: str, **_: Any) -> tuple[str, str]:
    """Every LocalModel in the watched namespaces, for the resync loop."""
    return namespace, name


@kopf.index("batch", "v1", "jobs", labels=PULL_JOBS)
def pull_jobs(body: kopf.Body, namespace: str, labels: kopf.Labels, **_: Any) -> dict[tuple[str, str], dict[str, Any]]:
    """Every pull and size Job by (namespace, model), as the watch last saw it."""
    return {(namespace, labels.get(meta.MODEL_LABEL, "")): {"metadata": dict(body.metadata), "status": dict(body.status)}}


async def _reconcile(memo: kopf.Memo, pull_jobs: kopf.Index, namespace: str, name: str) -> None:
    """Reconciles the LocalModel as it is now: the body a handler got may be older than what
    another trigger already acted on, and building from it would flap the children."""
    async with memo["locks"](namespace, name):
        try:
            body = await memo["kube"].get(meta.API_VERSION, meta.KIND, namespace, name)
            recheck = None
            if body is not None:
                recheck = await reconcile(memo["kube"], memo["config"], body, list(pull_jobs.get((namespace, name), ())))
        except KubeError as exc:
            raise kopf.TemporaryError(f"apiserver: {exc}", delay=RETRY_DELAY_S) from None
    _schedule(memo, pull_jobs, namespace, name, recheck)


def _schedule(memo: kopf.Memo, pull_jobs: kopf.Index, namespace: str, name: str, delay_s: float | None) -> None:
    async def run() -> None:
        try:
            await _reconcile(memo, pull_jobs, namespace, name)
        except kopf.TemporaryError as exc:
            log.warning("scale check of %s/%s: %s; the next resync retries", namespace, name, exc)

    memo["wakeups"].schedule(namespace, name, delay_s, run)


@kopf.on.resume(*MODEL, id="reconcile")
@kopf.on.create(*MODEL, id="reconcile")
@kopf.on.update(*MODEL, id="reconcile")
async def model_changed(namespace: str, name: str, memo: kopf.Memo, pull_jobs: kopf.Index, **_: Any) -> None:
    await _reconcile(memo, pull_jobs, namespace, name)


async def _resync_forever(memo: kopf.Memo, local_models: kopf.Index, pull_jobs: kopf.Index) -> None:
    """Reconciles every LocalModel once per interval, whatever the watches delivered."""
    interval = memo["config"].resync_interval_s
    while True:
        await asyncio.sleep(interval)
        for namespace, name in sorted(local_models.get(None, ())):
            try:
                await _reconcile(memo, pull_jobs, namespace, name)
            except kopf.TemporaryError as exc:
                log.warning("resync of %s/%s: %s; the next resync retries", namespace, name, exc)
            except Exception:
                log.exception("resync of %s/%s failed; the next resync retries", namespace, name)


@kopf.on.event(*MODEL, id="progress")
async def model_status_changed(
    body: kopf.Body, memo: kopf.Memo, pull_jobs: kopf.Index, type: str | None, **_: Any
) -> None:
    """The puller patches status.download every few seconds; mirror it into the PROGRESS column.
    Routers patch status.activity; decide the replicas again (a change of spec.replicas then
    brings the full reconcile through `update`)."""
    if type != "DELETED":
        metadata = body["metadata"]
        recheck = None
        async with memo["locks"](metadata["namespace"], metadata["name"]):
            await refresh_progress(memo["kube"], body)
            if (body.get("status") or {}).get("activity"):
                try:
                    recheck = (await rescale(memo["kube"], body)).recheck_after_s
                except KubeError as exc:
                    log.warning("scale check of %s/%s: %s", metadata["namespace"], metadata["name"], exc)
                    recheck = RETRY_DELAY_S
        if recheck is not None:
            _schedule(memo, pull_jobs, metadata["namespace"], metadata["name"], recheck)


async def _owner_changed(body: kopf.Body, memo: kopf.Memo, pull_jobs: kopf.Index) -> None:
    """A child changed (a Job finished, a Deployment became available): reconcile its LocalModel."""
    metadata = body["metadata"]
    name = (metadata.get("labels") or {}).get(meta.MODEL_LABEL)
    if name:
        await _reconcile(memo, pull_jobs, metadata["namespace"], name)


@kopf.on.event("batch", "v1", "jobs", labels=PULL_JOBS)
async def job_changed(body: kopf.Body, memo: kopf.Memo, pull_jobs: kopf.Index, **_: Any) -> None:
    await _owner_changed(body, memo, pull_jobs)


@kopf.on.event("apps", "v1", "deployments", labels={**OWNED, "app.kubernetes.io/name": meta.SERVER_COMPONENT})
async def deployment_changed(body: kopf.Body, memo: kopf.Memo, pull_jobs: kopf.Index, **_: Any) -> None:
    await _owner_changed(body, memo, pull_jobs)
