"""keepAlive, autoscaling and scale from zero against the real apiserver, each side under its shipped RBAC.

The operator runs in-process under exactly the chart's operator rules; the
router's writes are made by the router's own code (server/router/scaler.py and
activity.py) under exactly the chart's router rules. The test plays the
Deployment controller, as the other operator tests do.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException

from localmodel_server.router.activity import report_patch
from localmodel_server.router.kube_discovery import KubeConnection
from localmodel_server.router.scaler import KubeWriter, ScaleRefused

from .cluster import Cluster, eventually
from .conftest import GROUP, PLURAL, ROOT, VERSION
from .test_operator_integration import pull

ROUTER_RULES = ROOT / "charts" / "localmodel" / "files" / "router-rbac-rules.yaml"
ROUTER_SA = "localmodel-router"
SOURCE = {"url": "https://models.example/tiny.gguf"}


@pytest.fixture
def cluster(admin: ApiClient, namespace: str) -> Cluster:
    return Cluster(admin, namespace)


@pytest.fixture
def router_kubeconfig(control_plane: Any, admin: ApiClient, namespace: str) -> Path:
    """A ServiceAccount bound to exactly the router's shipped rules."""
    rbac = RbacAuthorizationV1Api(admin)
    rbac.create_namespaced_role(namespace, {"metadata": {"name": ROUTER_SA}, "rules": yaml.safe_load(ROUTER_RULES.read_text())})
    rbac.create_namespaced_role_binding(namespace, {
        "metadata": {"name": ROUTER_SA},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROUTER_SA},
        "subjects": [{"kind": "ServiceAccount", "name": ROUTER_SA, "namespace": namespace}],
    })
    return control_plane.serviceaccount_kubeconfig(namespace, ROUTER_SA)


class RouterSide:
    """What a router replica writes, through the router's code and credentials."""

    def __init__(self, kubeconfig: Path, namespace: str, identity: str) -> None:
        self.kubeconfig, self.namespace, self.identity = kubeconfig, namespace, identity

    def _run(self, action: Any) -> Any:
        async def run() -> Any:
            writer = KubeWriter(KubeConnection.load(str(self.kubeconfig)))
            try:
                return await action(writer)
            finally:
                await writer.close()
        return asyncio.run(run())

    def wake(self, name: str) -> bool:
        return self._run(lambda writer: writer.wake(self.namespace, name))

    def report(self, name: str, in_flight: int, last_request: float | None = None, held: int = 0) -> None:
        patch = report_patch(self.identity, in_flight, held, last_request or time.time(), time.time())
        self._run(lambda writer: writer.patch_status(self.namespace, name, patch))


def ready_model(cluster: Cluster, name: str, **spec: Any) -> None:
    cluster.create_model(name, {"source": SOURCE, "storage": {"size": "1Gi"}, **spec})
    pull(cluster, name, SOURCE)
    eventually(lambda: cluster.deployment(name))
    cluster.make_available(name)
    cluster.wait_phase(name, "Ready")


def replicas(cluster: Cluster, name: str, expected: int) -> None:
    assert cluster.model(name)["spec"]["replicas"] == expected
    assert cluster.deployment(name).spec.replicas == expected


def column(cluster: Cluster, name: str, state: str) -> None:
    assert cluster.table()[name]["State"] == state


def event(cluster: Cluster, name: str, reason: str) -> None:
    assert ("Normal", reason) in cluster.events(name), cluster.events(name)


def test_keep_alive_scales_an_idle_model_to_zero_and_a_router_wakes_it(
    cluster: Cluster, operator: Any, router_kubeconfig: Path, namespace: str
) -> None:
    ready_model(cluster, "tiny", keepAlive="3s")
    column(cluster, "tiny", "Loaded")
    router_a = RouterSide(router_kubeconfig, namespace, "router-a")
    router_b = RouterSide(router_kubeconfig, namespace, "router-b")

    # Nobody calls it: after keepAlive the operator scales it to zero; the claim stays.
    eventually(lambda: replicas(cluster, "tiny", 0), timeout=30)
    eventually(lambda: column(cluster, "tiny", "Idle"))
    assert cluster.condition("tiny", "Loaded") == ("False", "Idle")
    event(cluster, "tiny", "ScaledToZero")
    assert cluster.core.read_namespaced_persistent_volume_claim("lm-tiny-weights", cluster.ns)

    # A request arrives at two router replicas at once: each reports it, then wakes the model.
    generation = cluster.model("tiny")["metadata"]["generation"]
    router_a.report("tiny", 1, held=1)
    router_b.report("tiny", 1, held=1)
    # Whoever writes first (a router, or the operator seeing held requests) writes 1; the rest read it.
    wrote = [router_a.wake("tiny"), router_b.wake("tiny")]
    assert wrote[1] is False and wrote.count(True) <= 1
    eventually(lambda: replicas(cluster, "tiny", 1))
    assert cluster.model("tiny")["metadata"]["generation"] == generation + 1  # exactly one write of spec
    cluster.make_available("tiny")
    eventually(lambda: column(cluster, "tiny", "Loaded"))

    # While a request is in flight (the routers keep reporting it), keepAlive does not apply.
    for _ in range(4):
        time.sleep(1.5)
        router_a.report("tiny", 1)
    replicas(cluster, "tiny", 1)

    # The requests end; keepAlive later it goes back to zero.
    router_a.report("tiny", 0)
    router_b.report("tiny", 0)
    eventually(lambda: replicas(cluster, "tiny", 0), timeout=30)
    activity = cluster.model("tiny")["status"]["activity"]
    assert set(activity) == {"router-a", "router-b"} and activity["router-a"]["inFlight"] == 0


def test_the_operator_wakes_a_model_whose_router_reports_held_requests(
    cluster: Cluster, operator: Any, router_kubeconfig: Path, namespace: str
) -> None:
    ready_model(cluster, "tiny", keepAlive="2s")
    eventually(lambda: replicas(cluster, "tiny", 0), timeout=30)
    RouterSide(router_kubeconfig, namespace, "router-a").report("tiny", 2, held=2)  # its own /scale write got lost
    eventually(lambda: replicas(cluster, "tiny", 1))
    event(cluster, "tiny", "ScaledFromZero")


def test_a_scale_to_zero_right_after_requests_is_not_undone_by_their_report(
    cluster: Cluster, operator: Any, router_kubeconfig: Path, namespace: str
) -> None:
    ready_model(cluster, "tiny", keepAlive="1h")
    # The router's last report, a few seconds old, still counts a request it forwarded.
    RouterSide(router_kubeconfig, namespace, "router-a").report("tiny", 1)
    cluster.custom.patch_namespaced_custom_object_scale(GROUP, VERSION, cluster.ns, PLURAL, "tiny",
                                                        {"spec": {"replicas": 0}})
    eventually(lambda: column(cluster, "tiny", "Idle"))
    time.sleep(3)  # the operator has reconciled the scale and the report more than once by now
    replicas(cluster, "tiny", 0)
    assert ("Normal", "ScaledFromZero") not in cluster.events("tiny")


def test_an_hpa_style_write_to_scale_is_respected_without_autoscaling(cluster: Cluster, operator: Any) -> None:
    ready_model(cluster, "plain")
    scale = cluster.custom.get_namespaced_custom_object_scale(GROUP, VERSION, cluster.ns, PLURAL, "plain")
    assert scale["status"]["selector"] == "app.kubernetes.io/name=localmodel-server,localmodel.dev/model=plain"
    scale["spec"]["replicas"] = 3
    cluster.custom.replace_namespaced_custom_object_scale(GROUP, VERSION, cluster.ns, PLURAL, "plain", scale)
    eventually(lambda: replicas(cluster, "plain", 3))
    cluster.make_available("plain")
    time.sleep(5)  # two resyncs (tests run the operator with a 2 s resync)
    replicas(cluster, "plain", 3)
    assert not {"ScaledUp", "ScaledDown", "ScaledToZero"} & {reason for _, reason in cluster.events("plain")}


def test_autoscaling_follows_the_routers_in_flight_counts(
    cluster: Cluster, operator: Any, router_kubeconfig: Path, namespace: str
) -> None:
    ready_model(cluster, "busy", autoscaling={"minReplicas": 1, "maxReplicas": 3, "targetInFlight": 2,
                                              "scaleDownDelay": "3s"})
    router = RouterSide(router_kubeconfig, namespace, "router-a")
    router.report("busy", 5)
    eventually(lambda: replicas(cluster, "busy", 3))
    event(cluster, "busy", "ScaledUp")
    router.report("busy", 3)
    eventually(lambda: cluster.model("busy")["status"].get("scaleDownSince"))
    router.report("busy", 0)
    eventually(lambda: replicas(cluster, "busy", 1), timeout=30)
    event(cluster, "busy", "ScaledDown")
    assert cluster.model("busy")["status"].get("scaleDownSince") is None


def test_the_router_may_write_replicas_and_its_activity_but_no_spec(
    cluster: Cluster, router_kubeconfig: Path, namespace: str, control_plane: Any
) -> None:
    cluster.create_model("m", {"source": SOURCE, "replicas": 0})
    router = RouterSide(router_kubeconfig, namespace, "router-a")
    router.report("m", 1)
    assert cluster.model("m")["status"]["activity"]["router-a"]["inFlight"] == 1
    assert router.wake("m") is True
    assert cluster.model("m")["spec"]["replicas"] == 1
    assert router.wake("m") is False

    from kubernetes.config import new_client_from_config
    with new_client_from_config(config_file=str(router_kubeconfig)) as api:
        as_router = CustomObjectsApi(api)
        for write in (
            lambda: as_router.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m", {"spec": {"args": ["--x"]}}),
            lambda: as_router.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "m"),
            lambda: as_router.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, {
                "apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": "x"}, "spec": {"source": SOURCE}}),
        ):
            with pytest.raises(ApiException) as caught:
                write()
            assert caught.value.status == 403
    with pytest.raises(ScaleRefused) as refused:
        RouterSide(router_kubeconfig, "default", "router-a").wake("m")  # another namespace: not granted
    assert refused.value.status == 403 and refused.value.permanent
