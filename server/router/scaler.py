"""The router's only writes to the cluster: wake a LocalModel through /scale, report activity.

RBAC (charts/localmodel/files/router-rbac-rules.yaml): `get` and `update` on
localmodels/scale, `patch` on localmodels/status; nothing that can change a spec
beyond the replica count.

Waking is idempotent and safe between router replicas: read /scale, and only
if it asks for 0 replicas write 1 over the resourceVersion just read. A second
router that read the same version gets 409, reads again and finds 1; a model
that the operator or an HPA already scaled further is never scaled down.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from .. import contract
from .activity import DEFAULT_INTERVAL_S, Activity, Writer
from .holding import DEFAULT_HOLD_TIMEOUT_S, DEFAULT_KEEPALIVE_S, DEFAULT_MAX_HELD, Holding, Wake

if TYPE_CHECKING:
    from .app import Router
    from .kube_discovery import KubeConnection

log = logging.getLogger(__name__)
_CONFLICT_RETRIES = 5
MERGE_PATCH = "application/merge-patch+json"


class ScaleRefused(Exception):
    """The apiserver refused a write; `status` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message

    @property
    def permanent(self) -> bool:
        """Retrying cannot help: no permission, no such model, an invalid write."""
        return self.status in (401, 403, 404, 422)


def wake_replicas(current: int) -> int | None:
    """What a waking router writes to /scale: 1 from zero, nothing otherwise."""
    return 1 if current < 1 else None


class KubeWriter:
    def __init__(self, api: KubeConnection) -> None:
        self.api = api
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _path(self, namespace: str, name: str, subresource: str) -> str:
        return f"{self.api.server}/apis/{contract.API_VERSION}/namespaces/{namespace}/{contract.PLURAL}/{name}/{subresource}"

    async def _call(self, method: str, url: str, body: Any = None, content_type: str = "application/json") -> dict[str, Any]:
        headers = {"Accept": "application/json", "Content-Type": content_type}
        token = self.api.authorization()
        if token:
            headers["Authorization"] = token
        data = orjson.dumps(body) if body is not None else None
        async with self._http().request(method, url, data=data, headers=headers, ssl=self.api.ssl) as resp:
            payload = await resp.read()
            if resp.status >= 300:
                raise ScaleRefused(resp.status, _message(payload))
        return orjson.loads(payload) if payload else {}

    async def wake(self, namespace: str, name: str) -> bool:
        """Ask for one replica if the model has none; True when this call wrote it."""
        url = self._path(namespace, name, "scale")
        for _ in range(_CONFLICT_RETRIES):
            scale = await self._call("GET", url)
            replicas = wake_replicas(int((scale.get("spec") or {}).get("replicas") or 0))
            if replicas is None:
                return False
            scale["spec"] = {**(scale.get("spec") or {}), "replicas": replicas}
            try:
                await self._call("PUT", url, scale)
            except ScaleRefused as exc:
                if exc.status == 409:
                    continue  # someone wrote first: read again
                raise
            log.info("woke %s/%s: /scale asks for %d replica", namespace, name, replicas)
            return True
        return False

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self._call("PATCH", self._path(namespace, name, "status"), patch, MERGE_PATCH)


def _message(payload: bytes) -> str:
    try:
        return str(orjson.loads(payload).get("message") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return payload[:200].decode(errors="replace")


def add_arguments(parser: argparse.ArgumentParser, env: Any) -> None:
    """Flags of scale from zero and activity reports (with --kubernetes)."""
    group = parser.add_argument_group("scale from zero (with --kubernetes)")
    group.add_argument("--hold-timeout", type=float, default=float(env("hold_timeout", DEFAULT_HOLD_TIMEOUT_S)),
                       help="seconds a request waits for a scaled-to-zero or loading model before 503")
    group.add_argument("--max-held", type=int, default=int(env("max_held", DEFAULT_MAX_HELD)),
                       help="requests held per model; past this, 503 with Retry-After")
    group.add_argument("--hold-keepalive", type=float, default=float(env("hold_keepalive", DEFAULT_KEEPALIVE_S)),
                       help="seconds between SSE comment lines sent to a held stream")
    group.add_argument("--activity-interval", type=float, default=float(env("activity_interval", DEFAULT_INTERVAL_S)),
                       help="at most one status.activity write per model per this many seconds")
    group.add_argument("--identity", default=env("identity", os.environ.get("POD_NAME") or socket.gethostname()),
                       help="this replica's key in status.activity (default: the pod name)")


def attach(router: Router, wake: Wake, write: Writer, *, identity: str, interval: float = DEFAULT_INTERVAL_S,
           hold_timeout: float = DEFAULT_HOLD_TIMEOUT_S, max_held: int = DEFAULT_MAX_HELD,
           hold_keepalive: float = DEFAULT_KEEPALIVE_S) -> Activity:
    """Give `router` holding and activity reports, writing through `wake` and `write`.

    The held requests of a model are written into its entry right before the wake-up
    they cause (so the operator never sees a wake-up without a request) and again as soon
    as the last of them leaves the hold (so a stale `held` never wakes a model that was
    scaled to zero since).
    """

    async def flushed_wake(namespace: str, name: str) -> None:
        await activity.flush((namespace, name))
        await wake(namespace, name)

    holding = Holding(lambda: router.table, flushed_wake, hold_timeout, max_held, hold_keepalive,
                      released=lambda key: activity.flush_soon(key))
    activity = Activity(identity, write, interval, held=holding.held)
    router.activity = activity
    router.holding = holding
    return activity


def enable(router: Router, api: KubeConnection, args: argparse.Namespace) -> Coroutine[Any, Any, None]:
    """Give `router` holding and activity reports; the coroutine runs the reports until cancelled."""
    writer = KubeWriter(api)
    activity = attach(router, writer.wake, writer.patch_status, identity=args.identity,
                      interval=args.activity_interval, hold_timeout=args.hold_timeout, max_held=args.max_held,
                      hold_keepalive=args.hold_keepalive)

    async def run() -> None:
        try:
            await activity.run()
        finally:
            await writer.close()

    return run()
