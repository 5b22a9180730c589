"""LocalModels + EndpointSlices → route entries, without a cluster."""

from __future__ import annotations

from typing import Any

from localmodel_server.router.kube_routes import not_ready_reason, route_entries, slice_endpoints


def localmodel(name: str, ns: str = "ml", created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {})
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": created}, "spec": spec, "status": status}


def endpoint_slice(service: str, ns: str = "ml", *endpoints: dict[str, Any], port: int = 8000, family: str = "IPv4") -> dict[str, Any]:
    return {
        "metadata": {"name": f"{service}-abcde", "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": family,
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": list(endpoints),
    }


def ep(address: str, ready: bool | None = True, terminating: bool | None = None) -> dict[str, Any]:
    conditions: dict[str, Any] = {}
    if ready is not None:
        conditions["ready"] = ready
    if terminating is not None:
        conditions["terminating"] = terminating
    return {"addresses": [address], "conditions": conditions}


def test_ready_endpoints_only_and_unset_ready_counts_as_ready():
    urls = slice_endpoints(endpoint_slice("lm-a", "ml", ep("10.0.0.1"), ep("10.0.0.2", ready=False), ep("10.0.0.3", ready=None),
                                          ep("10.0.0.4", ready=True, terminating=True)))
    assert urls == ["http://10.0.0.1:8000", "http://10.0.0.3:8000"]


def test_ipv6_addresses_are_bracketed():
    assert slice_endpoints(endpoint_slice("lm-a", "ml", ep("fd00::1"), family="IPv6")) == ["http://[fd00::1]:8000"]


def test_slice_without_http_port_gives_nothing():
    sl = endpoint_slice("lm-a", "ml", ep("10.0.0.1"))
    sl["ports"] = [{"name": "metrics", "port": 9000}, {"name": "grpc", "port": 9001}]
    assert slice_endpoints(sl) == []


def test_model_routes_to_its_services_endpoints_across_slices_with_served_name_and_aliases():
    models = [localmodel("llama3-8b", servedName="llama-3-8b", aliases=["llama3"], status={"phase": "Ready"})]
    slices = [endpoint_slice("lm-llama3-8b", "ml", ep("10.0.0.2")), endpoint_slice("lm-llama3-8b", "ml", ep("10.0.0.1")),
              endpoint_slice("lm-llama3-8b", "other", ep("10.9.9.9")), endpoint_slice("unrelated", "ml", ep("10.0.0.7"))]
    [entry] = route_entries(models, slices)
    assert entry.name == "llama-3-8b" and entry.aliases == ("llama3",) and entry.namespace == "ml"
    assert entry.endpoints == ("http://10.0.0.1:8000", "http://10.0.0.2:8000")
    assert entry.ready


def test_served_name_defaults_to_metadata_name():
    [entry] = route_entries([localmodel("phi")], [])
    assert entry.name == "phi" and not entry.ready


def test_downloading_model_says_how_far():
    [entry] = route_entries([localmodel("m", status={"phase": "Downloading", "download": {"percent": 42}})], [])
    assert entry.status == "downloading 42%" and entry.retry_after == 10


def test_failed_model_gives_the_failing_condition():
    status = {"phase": "Failed", "conditions": [
        {"type": "Available", "status": "False", "reason": "WeightsNotReady", "message": "waiting for weights"},
        {"type": "WeightsReady", "status": "False", "reason": "ChecksumMismatch", "message": "sha256 differs from spec"},
    ]}
    reason, retry_after = not_ready_reason(localmodel("m", status=status))
    assert reason == "failed: waiting for weights (WeightsNotReady)"
    assert retry_after == 60


def test_scaled_to_zero_and_pending_and_loading():
    assert not_ready_reason(localmodel("m", replicas=0, status={"phase": "Ready"}))[0].startswith("scaled to zero")
    assert not_ready_reason(localmodel("m"))[0] == "pending"
    assert not_ready_reason(localmodel("m", status={"phase": "Loading"}))[0] == "loading the model"


def test_endpoints_win_over_phase_while_an_old_deployment_still_serves():
    models = [localmodel("m", status={"phase": "Downloading", "download": {"percent": 3}})]
    [entry] = route_entries(models, [endpoint_slice("lm-m", "ml", ep("10.0.0.1"))])
    assert entry.ready


def test_oldest_model_comes_first_so_it_keeps_a_contested_name():
    newer = localmodel("b", ns="x", created="2026-02-01T00:00:00Z", servedName="shared")
    older = localmodel("a", ns="y", created="2026-01-01T00:00:00Z", servedName="shared")
    entries = route_entries([newer, older], [])
    assert [e.namespace for e in entries] == ["y", "x"]
    assert entries[0].created == 1767225600
