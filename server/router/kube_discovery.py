"""Route table from the cluster: list and watch LocalModels and their EndpointSlices.

Read-only: it needs `list` and `watch` on localmodels.localmodel.dev and
endpointslices.discovery.k8s.io (charts/localmodel/files/router-rbac-rules.yaml).
The kubernetes package only parses the kubeconfig or in-cluster credentials;
the list/watch calls run on aiohttp in the router's own event loop, so no
thread competes with the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import kubernetes.client
import kubernetes.config
import orjson

from .. import contract
from ..contract import MODEL_LABEL
from .kube_routes import route_entries
from .routes import RouteTable

log = logging.getLogger(__name__)

LOCALMODELS = f"/apis/{contract.API_VERSION}"
ENDPOINTSLICES = "/apis/discovery.k8s.io/v1"
WATCH_TIMEOUT_S = 300  # the apiserver ends each watch after this; it is re-opened from the last version
_BACKOFF_MAX_S = 30.0


class ListFailed(Exception):
    pass


@dataclass
class KubeConnection:
    server: str
    ssl: ssl.SSLContext
    # The Authorization header value, re-read per call: in-cluster tokens rotate.
    authorization: Callable[[], str | None]

    @classmethod
    def load(cls, kubeconfig: str | None = None) -> KubeConnection:
        """In-cluster credentials when running in a pod (and no kubeconfig is given), else the kubeconfig."""
        config = kubernetes.client.Configuration()
        if kubeconfig is None and _in_cluster():
            kubernetes.config.load_incluster_config(client_configuration=config)
        else:
            kubernetes.config.load_kube_config(config_file=kubeconfig, client_configuration=config)
        context = ssl.create_default_context(cafile=config.ssl_ca_cert)
        if not config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file)

        def authorization() -> str | None:
            return config.auth_settings().get("BearerToken", {}).get("value")

        return cls(config.host.rstrip("/"), context, authorization)


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ


def collection_path(group_version: str, plural: str, namespace: str | None) -> str:
    if namespace:
        return f"{group_version}/namespaces/{namespace}/{plural}"
    return f"{group_version}/{plural}"


class Reflector:
    """Keeps a local copy of one collection in step with the apiserver (list, then watch)."""

    def __init__(self, api: KubeConnection, session: aiohttp.ClientSession, path: str, selector: str | None, on_change: Callable[[], None]) -> None:
        self.api = api
        self.session = session
        self.path = path
        self.selector = selector
        self.on_change = on_change
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.listed = asyncio.Event()

    async def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                version = await self._list()
                backoff = 1.0
                while version is not None:
                    version = await self._watch(version)
            except (aiohttp.ClientError, TimeoutError, ListFailed) as exc:
                log.warning("kubernetes %s: %s; retrying in %.0f s", self.path, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _params(self, **extra: str) -> dict[str, str]:
        params = {"labelSelector": self.selector} if self.selector else {}
        params.update(extra)
        return params

    def _headers(self) -> dict[str, str]:
        token = self.api.authorization()
        return {"Authorization": token, "Accept": "application/json"} if token else {"Accept": "application/json"}

    async def _list(self) -> str:
        url = self.api.server + self.path
        async with self.session.get(url, params=self._params(), headers=self._headers(), ssl=self.api.ssl) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise ListFailed(f"list returned {resp.status}: {_status_message(body)}")
        data = orjson.loads(body)
        self.objects = {_key(item): item for item in data.get("items") or []}
        self.listed.set()
        self.on_change()
        return data["metadata"]["resourceVersion"]

    async def _watch(self, version: str) -> str | None:
        """Apply watch events until the watch ends; the version to resume from, or None to re-list."""
        url = self.api.server + self.path
        params = self._params(watch="1", resourceVersion=version, allowWatchBookmarks="true", timeoutSeconds=str(WATCH_TIMEOUT_S))
        timeout = aiohttp.ClientTimeout(total=None, sock_read=WATCH_TIMEOUT_S + 30)
        async with self.session.get(url, params=params, headers=self._headers(), ssl=self.api.ssl, timeout=timeout) as resp:
            if resp.status == 410:
                return None
            if resp.status != 200:
                raise ListFailed(f"watch returned {resp.status}: {_status_message(await resp.read())}")
            async for line in resp.content:
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    # 410 Gone: our version is too old; anything else: start over too.
                    log.info("kubernetes %s: watch error %s; re-listing", self.path, obj.get("message"))
                    return None
                version = (obj.get("metadata") or {}).get("resourceVersion", version)
                if kind == "BOOKMARK":
                    continue
                if kind == "DELETED":
                    self.objects.pop(_key(obj), None)
                else:
                    self.objects[_key(obj)] = obj
                self.on_change()
        return version


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace", ""), meta.get("name", ""))


def _status_message(body: bytes) -> str:
    try:
        return str(orjson.loads(body).get("message") or body[:200].decode(errors="replace"))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")


class KubeDiscovery:
    """Publishes a route table built from every watched namespace (all when none are given)."""

    def __init__(self, api: KubeConnection, namespaces: list[str], publish: Callable[[RouteTable], None]) -> None:
        self.api = api
        self.namespaces: list[str | None] = list(namespaces) or [None]
        self.publish = publish
        self._models: list[Reflector] = []
        self._slices: list[Reflector] = []
        self._published = False

    async def run(self) -> None:
        # A watch event is one JSON line; a LocalModel with a long status can pass aiohttp's 64 KiB default.
        async with aiohttp.ClientSession(read_bufsize=1 << 22) as session:
            for namespace in self.namespaces:
                self._models.append(Reflector(self.api, session, collection_path(LOCALMODELS, contract.PLURAL, namespace), None, self._changed))
                # The EndpointSlice controller copies the model label from each model's Service onto
                # its slices, so only the slices of LocalModels are watched, not every slice.
                self._slices.append(
                    Reflector(self.api, session, collection_path(ENDPOINTSLICES, "endpointslices", namespace), MODEL_LABEL, self._changed)
                )
            await asyncio.gather(*(r.run() for r in self._models + self._slices))

    def _changed(self) -> None:
        # Readiness (/readyz) waits for the first complete picture: every collection listed once.
        if not all(r.listed.is_set() for r in self._models + self._slices):
            return
        localmodels = [obj for r in self._models for obj in r.objects.values()]
        slices = [obj for r in self._slices for obj in r.objects.values()]
        table = RouteTable.build(route_entries(localmodels, slices))
        if not self._published:
            self._published = True
            log.info("first route table: %d LocalModels, %d ready", len(table.entries), sum(e.ready for e in table.entries))
        self.publish(table)
