"""`localmodel-operator`: elect a leader with a Lease, then run the kopf handlers."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

import kopf
from aiohttp import web

from localmodel_operator import handlers  # noqa: F401 - registers the handlers
from localmodel_operator.kube import Kube, load_api_client
from localmodel_operator.leader import LeaderElector
from localmodel_operator.reconcile import ModelLocks
from localmodel_operator.settings import OperatorSettings

log = logging.getLogger("localmodel_operator")


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def start_health_server(port: int) -> web.AppRunner:
    """GET /healthz for the liveness probe, from the start: a standby replica is healthy too."""
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def run(config: OperatorSettings) -> int:
    health = await start_health_server(config.health_port)
    kube = Kube(load_api_client())
    lease_namespace = config.lease_namespace or os.environ.get("POD_NAMESPACE") or "default"
    elector = LeaderElector(kube, lease_namespace, config.lease_name, config.identity, config.lease_duration_s)
    try:
        log.info("waiting for the Lease %s/%s as %s", lease_namespace, config.lease_name, config.identity)
        await elector.acquire()
        stop = asyncio.Event()
        holder = asyncio.create_task(elector.hold(stop))
        try:
            await kopf.operator(
                standalone=True,
                # Else kopf derives one from the login name, and a pod's uid (65532) has none.
                identity=config.identity,
                clusterwide=not config.namespaces,
                namespaces=config.namespaces,
                stop_flag=stop,
                memo=kopf.Memo(config=config, kube=kube, locks=ModelLocks()),
            )
        finally:
            holder.cancel()
            if not elector.lost:
                await elector.release()
    finally:
        kube.close()
        await health.cleanup()
    return 1 if elector.lost else 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = OperatorSettings()
    except ValueError as exc:
        sys.exit(f"localmodel-operator: invalid configuration: {exc}")
    sys.exit(asyncio.run(run(config)))
