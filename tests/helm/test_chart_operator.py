"""localmodel-operator under the chart's ServiceAccount, RBAC and environment, exactly as rendered.

The chart's ServiceAccount, (Cluster)Roles and bindings are applied for real;
the operator then runs as its container would: the `localmodel-operator`
command, the rendered environment (POD_NAMESPACE resolved as the downward API
does) and a token of that ServiceAccount. It must win its Lease and reconcile
an example LocalModel to Ready, with the cluster played by tests/operator's
Cluster helper (no kubelet or controllers run here).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, AuthorizationV1Api, CoordinationV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.config import new_client_from_config
from kubernetes.dynamic import DynamicClient

from tests.operator.cluster import Cluster, eventually

from .chart import containers, env, one, render
from .kube import apply, delete

SHA = "e" * 64
GGUF = {"architecture": "llama", "parameters": 1_000_000, "quantization": "Q8_0", "contextLength": 4096,
        "sizeBytes": 9_000_000}
RBAC_KINDS = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
OPERATOR_COMMAND = Path(sys.executable).parent / "localmodel-operator"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def new_namespace(api: ApiClient, prefix: str) -> str:
    name = f"{prefix}-{secrets.token_hex(3)}"
    CoreV1Api(api).create_namespace({"metadata": {"name": name}})
    return name


Installed = tuple[list[dict[str, Any]], str, str]  # rendered objects, release name, release namespace


@pytest.fixture
def install_rbac(api: ApiClient, dynamic: DynamicClient, namespace: str) -> Iterator[Callable[[list[str]], Installed]]:
    """Renders the chart into `namespace` and applies its ServiceAccounts and RBAC; removes the cluster-scoped ones after."""
    applied: list[dict[str, Any]] = []
    release = f"t{secrets.token_hex(3)}"  # cluster-scoped names differ from other tests'

    def install(sets: list[str]) -> Installed:
        objects = render(sets=sets, namespace=namespace, release=release)
        for obj in objects:
            if obj["kind"] in RBAC_KINDS:
                apply(dynamic, obj, dry_run=False)
                applied.append(obj)
        return objects, release, namespace

    yield install
    for obj in applied:
        if "namespace" not in obj["metadata"]:
            delete(dynamic, obj)


@pytest.fixture
def run_operator(control_plane: Any, tmp_path: Path) -> Iterator[Callable[[Installed], subprocess.Popen[bytes]]]:
    """Starts `localmodel-operator` as the rendered Deployment would; stops it with SIGTERM after the test."""
    procs: list[subprocess.Popen[bytes]] = []
    log_path = tmp_path / "operator.log"

    def start(installed: Installed) -> subprocess.Popen[bytes]:
        objects, release, namespace = installed
        deployment = one(objects, "Deployment", f"{release}-localmodel-operator")
        (container,) = containers(deployment)
        assert container["command"] == ["localmodel-operator"]
        account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        environment = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LOCALMODEL_")},
            **env(container),
            "POD_NAMESPACE": namespace,  # the downward API's metadata.namespace
            "KUBECONFIG": str(control_plane.serviceaccount_kubeconfig(namespace, account)),
            "LOCALMODEL_HEALTH_PORT": str(free_port()),  # 8080 in the pod; any free port here
        }
        proc = subprocess.Popen([str(OPERATOR_COMMAND)], env=environment, stdout=log_path.open("wb"),
                                stderr=subprocess.STDOUT)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for proc in procs:
        assert proc.returncode == 0, log_path.read_text()[-5000:]


def reconcile_to_ready(cluster: Cluster, name: str, log: Path) -> dict[str, Any]:
    """Plays the Job controller, the puller (size probe, then pull) and the Deployment controller for one model."""
    probe = eventually(lambda: cluster.only_job(name), timeout=60).metadata.name
    assert probe.startswith(f"lm-{name}-size-")
    cluster.start_job(probe)
    cluster.report_download(name, {"bytesDone": 0, "bytesTotal": None})  # the server announced no length
    cluster.complete_job(probe)
    job = eventually(lambda: _pull_job(cluster, name), timeout=60)
    cluster.start_job(job)
    cluster.report_download(name, {"bytesDone": GGUF["sizeBytes"], "bytesTotal": GGUF["sizeBytes"], "percent": 100,
                                   "sha256": SHA, "result": "Succeeded"}, GGUF)
    cluster.complete_job(job)
    eventually(lambda: cluster.deployment(name), timeout=30)
    cluster.make_available(name)
    try:
        return cluster.wait_phase(name, "Ready")
    except AssertionError:
        raise AssertionError(f"not Ready; operator log:\n{log.read_text()[-5000:]}") from None


def _pull_job(cluster: Cluster, name: str) -> str:
    return next(job.metadata.name for job in cluster.jobs(name) if job.metadata.name.startswith(f"lm-{name}-pull-"))


def can(api: ApiClient, verb: str, resource: str, namespace: str, group: str = "") -> bool:
    review = {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "group": group,
                                              "namespace": namespace}}}
    return AuthorizationV1Api(api).create_self_subject_access_review(review).status.allowed


@pytest.mark.parametrize("scope", ["namespaced", "cluster-wide"])
def test_the_operator_reconciles_a_model_to_ready_under_the_chart_rbac(
    api: ApiClient, control_plane: Any, install_rbac: Any, run_operator: Any, tmp_path: Path, scope: str
) -> None:
    models_ns = new_namespace(api, "lm-chart-models")
    other_ns = new_namespace(api, "lm-chart-other")
    sets = [f"watchNamespaces={{{models_ns}}}"] if scope == "namespaced" else []
    installed = install_rbac(sets)
    objects, release, release_ns = installed
    rendered_env = env(next(containers(one(objects, "Deployment", f"{release}-localmodel-operator"))))
    proc = run_operator(installed)

    # The Lease in the release namespace: the chart's leader-election Role (or ClusterRole) suffices.
    lease_name = f"{release}-localmodel-operator"
    coordination = CoordinationV1Api(api)
    eventually(lambda: coordination.read_namespaced_lease(lease_name, release_ns).spec.holder_identity, timeout=60)

    cluster = Cluster(api, models_ns)
    source = {"url": "http://weights.test/model.gguf", "sha256": SHA}
    cluster.create_model("chat", {"source": source, "servedName": "llama3"})
    model = reconcile_to_ready(cluster, "chat", tmp_path / "operator.log")
    assert model["status"]["endpoint"] == f"http://{release}-localmodel-router.{release_ns}.svc/v1"
    server = cluster.deployment("chat").spec.template.spec.containers[0]
    assert server.image == rendered_env["LOCALMODEL_SERVER_IMAGE"]
    claim = cluster.core.read_namespaced_persistent_volume_claim("lm-chat-weights", models_ns)
    # Sized by the probe; it found no content length, so the chart's default applies.
    assert claim.spec.resources.requests["storage"] == rendered_env["LOCALMODEL_DEFAULT_STORAGE_SIZE"]
    assert proc.poll() is None

    # What the rendered RBAC allows outside the watched namespace.
    account = control_plane.serviceaccount_kubeconfig(release_ns, f"{release}-localmodel-operator")
    with new_client_from_config(config_file=str(account)) as as_operator:
        assert can(as_operator, "create", "deployments", models_ns, "apps")
        assert can(as_operator, "create", "deployments", other_ns, "apps") == (scope == "cluster-wide")
        assert not can(as_operator, "get", "secrets", models_ns)  # never needs Secrets: Jobs reference them
        with pytest.raises(ApiException) as denied:
            CoreV1Api(as_operator).list_namespaced_pod(models_ns)
        assert denied.value.status == 403
