"""The router discovering LocalModels and their EndpointSlices in the real control plane.

Nothing runs pods there, so the test plays the EndpointSlice controller: it
writes slices pointing at fake backends on this machine, labelled as the
controller labels them (Service labels copied, plus kubernetes.io/service-name).
The apiserver refuses loopback IPs in EndpointSlices, so the backends run on a
test host: a network namespace joined to this one by a veth pair
(tests/support/netns.py), whose traffic never leaves the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes.client import CoreV1Api, CustomObjectsApi, DiscoveryV1Api, RbacAuthorizationV1Api

from support.controlplane import install_crd
from support.model_server import wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = ROOT / "charts" / "localmodel" / "files" / "router-rbac-rules.yaml"
GROUP, VERSION, PLURAL = "localmodel.dev", "v1alpha1", "localmodels"
ROUTER_SA = "localmodel-router"


@pytest.fixture(scope="module")
def admin(control_plane):
    with control_plane.api_client() as api:
        install_crd(api)
        yield api


def bind_router_rules(api, namespace: str, account: str = ROUTER_SA) -> None:
    """A Role made of exactly the shipped rules, bound to the router's ServiceAccount."""
    rules = yaml.safe_load(RULES_PATH.read_text())
    rbac = RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": account}, "rules": rules})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    })


def create_model(api, namespace: str, name: str, **spec: Any) -> None:
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": name},
            "spec": {"source": {"url": "https://models.example/tiny.gguf"}, **spec}}
    CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def set_status(api, namespace: str, name: str, status: dict[str, Any]) -> None:
    CustomObjectsApi(api).patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, name, {"status": status})


def expose(api, namespace: str, model: str, address: str, port: int) -> None:
    """The model's Service lm-<model>, and the EndpointSlice the controller would write for it."""
    labels = {"localmodel.dev/model": model, "app.kubernetes.io/managed-by": "localmodel-operator"}
    service = f"lm-{model}"
    CoreV1Api(api).create_namespaced_service(namespace, {
        "metadata": {"name": service, "labels": labels},
        "spec": {"ports": [{"name": "http", "port": 8000, "targetPort": port}], "selector": {"localmodel.dev/model": model}},
    })
    DiscoveryV1Api(api).create_namespaced_endpoint_slice(namespace, {
        "metadata": {"name": f"{service}-x1", "labels": {**labels, "kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
    })


def chat(router, model: str) -> httpx.Response:
    return httpx.post(f"{router.base_url}/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}, timeout=10)


def test_routes_follow_localmodels_and_their_endpoints(control_plane, admin, namespace, test_host, fake_backend, router_process):
    backend = fake_backend("tiny-chat", test_host.address, test_host.exec_prefix)
    create_model(admin, namespace, "tiny", servedName="tiny-chat", aliases=["llama3"])
    set_status(admin, namespace, "tiny", {"phase": "Ready"})
    expose(admin, namespace, "tiny", test_host.address, backend.port)
    create_model(admin, namespace, "big")
    set_status(admin, namespace, "big", {"phase": "Downloading", "download": {"bytesDone": 42, "bytesTotal": 100, "percent": 42}})
    bind_router_rules(admin, namespace)
    kubeconfig = control_plane.serviceaccount_kubeconfig(namespace, ROUTER_SA)

    router = router_process("--kubernetes", "--namespace", namespace, "--kubeconfig", str(kubeconfig))

    answer = chat(router, "llama3")
    assert answer.status_code == 200 and answer.json()["model"] == "tiny-chat"
    assert backend.stats()["requests"] == 1
    waiting = chat(router, "big")
    assert waiting.status_code == 503 and "downloading 42%" in waiting.json()["error"]["message"]
    assert waiting.headers["Retry-After"] == "10"
    cards = {c["id"]: c for c in httpx.get(f"{router.base_url}/v1/models").json()["data"]}
    assert cards["llama3"]["root"] == "tiny-chat" and cards["big"]["status"] == "downloading 42%"
    assert cards["tiny-chat"]["created"] > 0

    # Watch events move the table: the download finishes and big gets a ready endpoint...
    expose(admin, namespace, "big", test_host.address, backend.port)
    set_status(admin, namespace, "big", {"phase": "Ready"})
    assert wait_for(lambda: chat(router, "big").status_code == 200)
    # ...tiny's only endpoint stops being ready...
    DiscoveryV1Api(admin).patch_namespaced_endpoint_slice(
        "lm-tiny-x1", namespace, {"endpoints": [{"addresses": [test_host.address], "conditions": {"ready": False}}]})
    assert wait_for(lambda: chat(router, "llama3").status_code == 503)
    assert "no ready endpoints" in chat(router, "llama3").json()["error"]["message"]
    # ...and a deleted LocalModel is unknown again.
    CustomObjectsApi(admin).delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tiny")
    assert wait_for(lambda: chat(router, "llama3").status_code == 404)


def test_not_ready_until_localmodels_can_be_listed(control_plane, admin, namespace, router_process):
    # A ServiceAccount without the router's rules: every list is forbidden.
    kubeconfig = control_plane.serviceaccount_kubeconfig(namespace, "no-rights")
    router = router_process("--kubernetes", "--namespace", namespace, "--kubeconfig", str(kubeconfig), wait_ready=False)
    assert wait_for(lambda: "403" in router.log(), timeout=15)
    assert httpx.get(f"{router.base_url}/readyz").status_code == 503
    assert httpx.get(f"{router.base_url}/healthz").status_code == 200
    # Granting the rules is enough: the router retries and becomes ready.
    bind_router_rules(admin, namespace, "no-rights")
    assert wait_for(lambda: httpx.get(f"{router.base_url}/readyz").status_code == 200, timeout=40)



def test_all_namespaces_with_a_cluster_role(control_plane, admin, namespace, test_host, fake_backend, router_process):
    # A second namespace: the same served name claimed twice, the older LocalModel keeps it.
    other = f"{namespace[:50]}-b"
    CoreV1Api(admin).create_namespace({"metadata": {"name": other}})
    unique = f"shared-{namespace[-6:]}"  # other tests' LocalModels are visible too; this name is ours alone
    first = fake_backend("first", test_host.address, test_host.exec_prefix)
    second = fake_backend("second", test_host.address, test_host.exec_prefix)
    create_model(admin, namespace, "m", servedName=unique)
    expose(admin, namespace, "m", test_host.address, first.port)
    create_model(admin, other, "m", servedName=unique, aliases=[f"{unique}-b"])
    expose(admin, other, "m", test_host.address, second.port)

    rules = yaml.safe_load(RULES_PATH.read_text())
    rbac = RbacAuthorizationV1Api(admin)
    name = f"router-{namespace}"
    rbac.create_cluster_role({"metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": ROUTER_SA, "namespace": namespace}],
    })
    try:
        kubeconfig = control_plane.serviceaccount_kubeconfig(namespace, ROUTER_SA)
        router = router_process("--kubernetes", "--kubeconfig", str(kubeconfig))
        assert chat(router, unique).status_code == 200
        assert first.stats()["requests"] == 1 and second.stats()["requests"] == 0
        # The younger model is not served at all, aliases included: a shadowed model fails loudly.
        assert chat(router, f"{unique}-b").status_code == 404
        assert second.stats()["requests"] == 0
        assert router.metric("localmodel_router_route_conflicts") >= 1
        assert f"model '{unique}' of {other}/{unique} is already served by {namespace}/{unique}" in router.log()
    finally:
        rbac.delete_cluster_role_binding(name)
        rbac.delete_cluster_role(name)
        CoreV1Api(admin).delete_namespace(other)
