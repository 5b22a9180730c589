"""Two router processes wake a LocalModel at zero replicas in the real control plane and hold its requests.

The routers run as shipped (`--kubernetes`, under exactly the chart's router
rules). The test plays the operator and the EndpointSlice controller: it
watches spec.replicas change, starts the backend only then (on a test host,
as tests/router/test_router_kubernetes.py explains), and writes its slice.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes.client import CoreV1Api, CustomObjectsApi, DiscoveryV1Api, RbacAuthorizationV1Api

from support.controlplane import install_crd
from support.model_server import wait_for

ROOT = Path(__file__).resolve().parents[2]
RULES_PATH = ROOT / "charts" / "localmodel" / "files" / "router-rbac-rules.yaml"
GROUP, VERSION, PLURAL = "localmodel.dev", "v1alpha1", "localmodels"

ROUTER_SA = "localmodel-router"
LABELS = {"localmodel.dev/model": "tiny", "app.kubernetes.io/managed-by": "localmodel-operator"}
CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}


def setup(api: Any, namespace: str) -> None:
    install_crd(api)
    rbac = RbacAuthorizationV1Api(api)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": ROUTER_SA}, "rules": yaml.safe_load(RULES_PATH.read_text())})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": ROUTER_SA},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROUTER_SA},
        "subjects": [{"kind": "ServiceAccount", "name": ROUTER_SA, "namespace": namespace}],
    })
    models = CustomObjectsApi(api)
    models.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": "tiny"},
        "spec": {"source": {"url": "https://models.example/tiny.gguf"}, "servedName": "tiny-chat", "replicas": 0,
                 "keepAlive": "30s"}})
    # As the operator leaves a model it scaled to zero: weights in place, rolled out at 0.
    models.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "tiny", {"status": {
        "phase": "Ready", "state": "Idle", "weights": {"digest": "abcd1234", "source": {"url": "https://models.example/tiny.gguf"}}}})
    CoreV1Api(api).create_namespaced_service(namespace, {
        "metadata": {"name": "lm-tiny", "labels": LABELS},
        "spec": {"ports": [{"name": "http", "port": 8000}], "selector": {"localmodel.dev/model": "tiny"}}})


def model(api: Any, namespace: str) -> dict[str, Any]:
    return CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "tiny")


def in_thread(fn: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_two_routers_wake_a_model_once_and_answer_every_held_request(
    control_plane: Any, namespace: str, test_host: Any, fake_backend: Any, router_process: Any
) -> None:
    with control_plane.api_client() as admin:
        setup(admin, namespace)
        generation = model(admin, namespace)["metadata"]["generation"]
        kubeconfig = str(control_plane.serviceaccount_kubeconfig(namespace, ROUTER_SA))
        flags = ["--kubernetes", "--namespace", namespace, "--kubeconfig", kubeconfig, "--hold-keepalive", "0.2",
                 "--activity-interval", "0.5"]
        router_a = router_process(*flags, "--identity", "router-a")
        router_b = router_process(*flags, "--identity", "router-b")

        def chat(router: Any) -> httpx.Response:
            return httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=60)

        stream_lines: list[str] = []

        def stream() -> int:
            with httpx.stream("POST", f"{router_b.base_url}/v1/chat/completions", json={**CHAT, "stream": True},
                              timeout=60) as response:
                stream_lines.extend(response.iter_lines())
                return response.status_code

        held = [in_thread(lambda: chat(router_a)), in_thread(lambda: chat(router_a)), in_thread(lambda: chat(router_b)),
                in_thread(stream)]

        # Both routers asked; the model was scaled exactly once, to 1.
        assert wait_for(lambda: model(admin, namespace)["spec"]["replicas"] == 1, timeout=30)
        # Both report what they hold, for the operator's keepAlive decision.
        def reported() -> bool:
            activity = model(admin, namespace).get("status", {}).get("activity", {})
            return activity.get("router-a", {}).get("inFlight") == 2 and activity.get("router-b", {}).get("inFlight") == 2
        assert wait_for(reported, timeout=30)
        assert model(admin, namespace)["metadata"]["generation"] == generation + 1
        assert wait_for(lambda: sum(line.startswith(": waiting for model tiny-chat") for line in stream_lines) >= 2,
                        timeout=30)

        # The pod starts only now; its endpoint becomes ready.
        backend = fake_backend("tiny-chat", test_host.address, test_host.exec_prefix)
        DiscoveryV1Api(admin).create_namespaced_endpoint_slice(namespace, {
            "metadata": {"name": "lm-tiny-x1", "labels": {**LABELS, "kubernetes.io/service-name": "lm-tiny"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": backend.port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [test_host.address], "conditions": {"ready": True}}],
        })
        for thread, result in held:
            thread.join(60)
            assert result, "a held request never finished"
            answer = result[0]
            assert (answer if isinstance(answer, int) else answer.status_code) == 200
        assert backend.stats()["requests"] == 4
        assert stream_lines[-1] == "" and "data: [DONE]" in stream_lines
        assert model(admin, namespace)["metadata"]["generation"] == generation + 1

        def idle() -> bool:
            activity = model(admin, namespace)["status"]["activity"]
            return activity["router-a"]["inFlight"] == 0 and activity["router-b"]["inFlight"] == 0
        assert wait_for(idle, timeout=30)
