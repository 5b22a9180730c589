"""`localmodel-operator`: elect a leader with a Lease, then run the kopf handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import kopf

from localmodel_operator import handlers  # noqa: F401 - registers the handlers
from localmodel_operator.kube import Kube, load_api_client
from localmodel_operator.leader import LeaderElector
from localmodel_operator.reconcile import ModelLocks
from localmodel_operator.settings import OperatorSettings

LIVENESS_ENDPOINT = "http://0.0.0.0:8080/healthz"
log = logging.getLogger("localmodel_operator")


async def run(config: OperatorSettings) -> int:
    kube = Kube(load_api_client())
    lease_namespace = config.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"
    elector = LeaderElector(kube, lease_namespace, config.lease_name, config.identity, config.lease_duration_s)
    log.info("waiting for the Lease %s/%s as %s", lease_namespace, config.lease_name, config.identity)
    await elector.acquire()
    stop = asyncio.Event()
    holder = asyncio.create_task(elector.hold(stop))
    try:
        await kopf.operator(
            standalone=True,
            clusterwide=not config.namespaces,
            namespaces=config.namespaces,
            stop_flag=stop,
            liveness_endpoint=LIVENESS_ENDPOINT,
            memo=kopf.Memo(config=config, kube=kube, locks=ModelLocks()),
        )
    finally:
        holder.cancel()
        if not elector.lost:
            await elector.release()
    return 1 if elector.lost else 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = OperatorSettings()
    except ValueError as exc:
        sys.exit(f"localmodel-operator: invalid configuration: {exc}")
    sys.exit(asyncio.run(run(config)))
