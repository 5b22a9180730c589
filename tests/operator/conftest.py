"""Fixtures of the operator tests: the CRD installed in the real control plane, and admin API helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, CustomObjectsApi

from support.controlplane import install_crd

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "crds" / "localmodel.dev_localmodels.yaml"
RBAC_RULES_PATH = ROOT / "charts" / "localmodel" / "files" / "operator-rbac-rules.yaml"
GROUP, VERSION, PLURAL = "localmodel.dev", "v1alpha1", "localmodels"
SHA = "a" * 64
# Short, so that every integration test runs with resyncs interleaved, as a long-running operator does.
RESYNC_INTERVAL_S = 2.0


def local_model(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="session")
def crd(control_plane: Any) -> None:
    with control_plane.api_client() as api:
        install_crd(api)


@pytest.fixture
def admin(control_plane: Any, crd: None) -> Iterator[ApiClient]:
    with control_plane.api_client() as api:
        yield api


@pytest.fixture
def models(admin: ApiClient) -> CustomObjectsApi:
    return CustomObjectsApi(admin)


# --- the operator, in-process, under a ServiceAccount bound to exactly the shipped rules ---------

OPERATOR_SA = "localmodel-operator"
ROUTER_URL = "http://localmodel-router.localmodel:8000"


def bind_operator_rules(api: ApiClient, namespace: str) -> None:
    """A ClusterRole made of charts/localmodel/files/operator-rbac-rules.yaml, bound to the operator's SA."""
    from kubernetes.client import RbacAuthorizationV1Api

    rules = yaml.safe_load(RBAC_RULES_PATH.read_text())
    rbac = RbacAuthorizationV1Api(api)
    name = f"localmodel-operator-{namespace}"
    rbac.create_cluster_role({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                              "metadata": {"name": name}, "rules": rules})
    rbac.create_cluster_role_binding({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": OPERATOR_SA, "namespace": namespace}],
    })


@pytest.fixture
def operator_kubeconfig(control_plane: Any, admin: ApiClient, namespace: str) -> Path:
    bind_operator_rules(admin, namespace)
    return control_plane.serviceaccount_kubeconfig(namespace, OPERATOR_SA)


@pytest.fixture
def operator_env(operator_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KUBECONFIG", str(operator_kubeconfig))
    monkeypatch.setenv("LOCALMODEL_SERVER_IMAGE", "registry.test/localmodel:test")
    monkeypatch.setenv("LOCALMODEL_ROUTER_URL", ROUTER_URL)
    monkeypatch.setenv("LOCALMODEL_RESYNC_INTERVAL_S", str(RESYNC_INTERVAL_S))
    return operator_kubeconfig


def kopf_runner(namespace: str) -> Any:
    """The operator's handlers, run by kopf in a thread of this process, watching one namespace."""
    from kopf.testing import KopfRunner

    return KopfRunner(["run", "--standalone", "--namespace", namespace, "-m", "localmodel_operator.handlers"],
                      timeout=30)


@pytest.fixture
def operator(operator_env: Path, namespace: str) -> Iterator[Any]:
    with kopf_runner(namespace) as runner:
        yield runner
    assert runner.exit_code == 0, runner.output
