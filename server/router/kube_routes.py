"""LocalModels and EndpointSlices in, route entries out (pure; no API calls).

A model is routable when the EndpointSlices of its Service `lm-<name>` hold
ready endpoints; the endpoints are the truth, because an old Deployment keeps
serving while a new source downloads. When there are none, the LocalModel's
status says why, and that reason reaches the client with its 503.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ..contract import Phase, service_name
from .routes import RouteEntry

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
PORT_NAME = "http"

Object = Mapping[str, Any]

# Seconds a client is asked to wait, by why the model cannot answer.
_RETRY_AFTER = {Phase.PENDING: 5, Phase.DOWNLOADING: 10, Phase.LOADING: 5, Phase.FAILED: 60, Phase.READY: 2}


def slice_endpoints(endpoint_slice: Object) -> list[str]:
    """Base URLs of the ready endpoints in one EndpointSlice."""
    port = _http_port(endpoint_slice.get("ports") or [])
    if port is None:
        return []
    family = endpoint_slice.get("addressType", "IPv4")
    urls = []
    for endpoint in endpoint_slice.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        # An unset `ready` means ready (EndpointSlice API); terminating endpoints are never sent new work.
        if conditions.get("ready") is False or conditions.get("terminating") is True:
            continue
        addresses = endpoint.get("addresses") or []
        if not addresses:
            continue
        host = f"[{addresses[0]}]" if family == "IPv6" else addresses[0]
        urls.append(f"http://{host}:{port}")
    return urls


def _http_port(ports: list[Object]) -> int | None:
    for port in ports:
        if port.get("name") == PORT_NAME and port.get("port"):
            return int(port["port"])
    if len(ports) == 1 and ports[0].get("port"):
        return int(ports[0]["port"])
    return None


def endpoints_by_service(slices: Iterable[Object]) -> dict[tuple[str, str], list[str]]:
    """(namespace, service name) → sorted, de-duplicated ready endpoint URLs."""
    found: dict[tuple[str, str], set[str]] = {}
    for endpoint_slice in slices:
        meta = endpoint_slice.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            continue
        found.setdefault((meta.get("namespace", ""), service), set()).update(slice_endpoints(endpoint_slice))
    return {key: sorted(urls) for key, urls in found.items()}


def not_ready_reason(localmodel: Object) -> tuple[str, int]:
    """Why a model without ready endpoints cannot answer, and how long to wait."""
    spec = localmodel.get("spec") or {}
    status = localmodel.get("status") or {}
    phase = status.get("phase") or Phase.PENDING
    retry_after = _RETRY_AFTER.get(phase, 5)
    if spec.get("replicas") == 0:
        return "scaled to zero (spec.replicas is 0)", 60
    if phase == Phase.DOWNLOADING:
        percent = (status.get("download") or {}).get("percent")
        return (f"downloading {percent}%" if percent is not None else "downloading"), retry_after
    if phase == Phase.FAILED:
        return f"failed: {_failure_message(status)}", retry_after
    if phase == Phase.LOADING:
        return "loading the model", retry_after
    if phase == Phase.READY:
        return "no ready endpoints", retry_after
    return phase.lower(), retry_after


def wakeable(localmodel: Object) -> bool:
    """Its endpoints will come if the router waits (and, at 0 replicas, asks for one): some weights
    are in place (a newer source may still download; the pods load the recorded ones) and nothing
    failed. A first download and a failure are answered at once, as before."""
    status = localmodel.get("status") or {}
    if not status.get("weights") or status.get("phase") == Phase.FAILED:
        return False
    return not any(c.get("type") == "Degraded" and c.get("status") == "True" for c in status.get("conditions") or ())


def _failure_message(status: Object) -> str:
    for condition in status.get("conditions") or []:
        if condition.get("status") == "False" and condition.get("message"):
            reason = condition.get("reason")
            return f"{condition['message']} ({reason})" if reason else condition["message"]
    download = status.get("download") or {}
    return download.get("message") or download.get("reason") or "see the LocalModel's status"


def route_entries(localmodels: Iterable[Object], slices: Iterable[Object]) -> list[RouteEntry]:
    """One entry per LocalModel, oldest first (the oldest keeps a contested name)."""
    endpoints = endpoints_by_service(slices)
    entries = []
    for localmodel in sorted(localmodels, key=_age_key):
        meta = localmodel.get("metadata") or {}
        spec = localmodel.get("spec") or {}
        name, namespace = meta.get("name", ""), meta.get("namespace", "")
        urls = endpoints.get((namespace, service_name(name)), [])
        reason, retry_after = ("", 0) if urls else not_ready_reason(localmodel)
        entries.append(
            RouteEntry(
                name=spec.get("servedName") or name,
                endpoints=tuple(urls),
                aliases=tuple(spec.get("aliases") or ()),
                namespace=namespace,
                reason=reason,
                retry_after=retry_after or 5,
                created=_created(meta),
                scale_ref=(namespace, name),
                wakeable=not urls and wakeable(localmodel),
                scaled_to_zero=spec.get("replicas") == 0,
            )
        )
    return entries


def _age_key(localmodel: Object) -> tuple[str, str, str]:
    meta = localmodel.get("metadata") or {}
    return (meta.get("creationTimestamp") or "", meta.get("namespace", ""), meta.get("name", ""))


def _created(meta: Object) -> int:
    stamp = meta.get("creationTimestamp")
    if not stamp:
        return 0
    return int(datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp())
