"""All Kubernetes I/O of the operator: server-side apply, reads, deletes, status patches and Events.

Thin on purpose: every decision is made by the pure modules, this one only
talks to the apiserver. Calls use the official client's generic `call_api`
(one code path for every kind) in a worker thread, so the kopf event loop
never blocks.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from collections.abc import Mapping
from typing import Any

import kubernetes
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from localmodel_operator import meta

# (apiVersion, kind) -> plural, for every kind this operator touches.
PLURALS = {
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaims",
    ("v1", "Service"): "services",
    ("v1", "ServiceAccount"): "serviceaccounts",
    ("v1", "Event"): "events",
    ("apps/v1", "Deployment"): "deployments",
    ("batch/v1", "Job"): "jobs",
    ("rbac.authorization.k8s.io/v1", "Role"): "roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebindings",
    ("coordination.k8s.io/v1", "Lease"): "leases",
    (meta.API_VERSION, meta.KIND): meta.PLURAL,
}
APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT_S = 30


class KubeError(Exception):
    """The apiserver refused a request; `message` is its own explanation."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message

    @property
    def is_invalid(self) -> bool:
        """The request itself is wrong (a bad child manifest, a forbidden change): retrying cannot help."""
        return self.status in (400, 403, 422)


def resource_path(api_version: str, kind: str, namespace: str, name: str = "", subresource: str = "") -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    path = f"{prefix}/namespaces/{namespace}/{PLURALS[(api_version, kind)]}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def _object_path(obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    return resource_path(obj["apiVersion"], obj["kind"], metadata["namespace"], metadata["name"])


def load_api_client() -> ApiClient:
    """$KUBECONFIG when set (tests, development), else the pod's ServiceAccount."""
    config_file = os.environ.get("KUBECONFIG")
    if config_file:
        return kubernetes.config.new_client_from_config(config_file=config_file)
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_incluster_config(client_configuration=configuration)
    return ApiClient(configuration)


class Kube:
    def __init__(self, api_client: ApiClient) -> None:
        self._api = api_client

    def close(self) -> None:
        self._api.close()

    def _call(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        try:
            response = self._api.call_api(
                path, method, query_params=query or [], body=body,
                header_params={"Content-Type": content_type, "Accept": "application/json"},
                auth_settings=["BearerToken"], _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S,
            )
        except ApiException as exc:
            raise _kube_error(exc) from None
        data = response.data
        return json.loads(data) if data else {}

    async def _request(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return await asyncio.to_thread(self._call, *args, **kwargs)

    async def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply as `localmodel-operator`, taking over fields someone else changed."""
        query = [("fieldManager", meta.FIELD_MANAGER), ("force", "true")]
        return await self._request("PATCH", _object_path(obj), obj, APPLY, query)

    async def create(self, obj: Mapping[str, Any]) -> dict[str, Any] | None:
        """Creates the object; None when it already exists."""
        metadata = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], metadata["namespace"])
        try:
            return await self._request("POST", path, obj, query=[("fieldManager", meta.FIELD_MANAGER)])
        except KubeError as exc:
            if exc.status == 409:
                return None
            raise

    async def replace(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        """PUT with the object's resourceVersion: fails with 409 when someone else wrote it first."""
        return await self._request("PUT", _object_path(obj), obj, query=[("fieldManager", meta.FIELD_MANAGER)])

    async def get(self, api_version: str, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return await self._request("GET", resource_path(api_version, kind, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        """Deletes with background propagation (dependents go to the garbage collector); gone already is fine."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            await self._request("DELETE", resource_path(api_version, kind, namespace, name), body)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def update_scale(self, namespace: str, name: str, replicas: int, resource_version: str) -> dict[str, Any]:
        """PUT /scale, as an HPA does, only over `resource_version`: a router's wake-up or activity
        report written meanwhile makes this a 409 instead of being overwritten."""
        path = resource_path(meta.API_VERSION, meta.KIND, namespace, name, "scale")
        scale = {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {"name": name, "namespace": namespace, "resourceVersion": resource_version},
            "spec": {"replicas": replicas},
        }
        return await self._request("PUT", path, scale, query=[("fieldManager", meta.FIELD_MANAGER)])

    async def patch_model_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
        path = resource_path(meta.API_VERSION, meta.KIND, namespace, name, "status")
        return await self._request("PATCH", path, {"status": status}, MERGE_PATCH)

    async def post_event(self, namespace: str, name: str, uid: str, type_: str, reason: str, message: str) -> None:
        """A core/v1 Event on the LocalModel, as `kubectl describe lm` shows them."""
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": meta.API_VERSION, "kind": meta.KIND, "name": name,
                               "namespace": namespace, "uid": uid},
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": meta.FIELD_MANAGER},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self._request("POST", resource_path("v1", "Event", namespace), event)


def _kube_error(exc: ApiException) -> KubeError:
    try:
        status = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        status = {}
    return KubeError(int(exc.status or 0), status.get("reason") or str(exc.reason), status.get("message") or str(exc.reason))
