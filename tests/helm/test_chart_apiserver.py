"""The chart against the real kube-apiserver: every rendered object, and a real install.

`helm lint` checks templates, not Kubernetes schemas. Here each object of each
value set is server-side applied as a dry run with strict field validation, so
an unknown field, a wrong type or an invalid value fails as it would in a
cluster. The CRDs are really applied first (the `dynamic` fixture).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient, ApiextensionsV1Api, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient

from .chart import CHART, CI_VALUES, OPERATOR, ROUTER, helm_binary, of_kind, one, render
from .kube import CRD_NAME, apply



def values_namespaces(values: Path) -> list[str]:
    """Namespaces a value set places objects in, besides the release namespace."""
    return list(yaml.safe_load(values.read_text()).get("watchNamespaces", []))


@pytest.fixture(scope="module")
def watched_namespaces(dynamic: DynamicClient, api: ApiClient) -> None:
    """The fixed namespaces the ci value sets name; objects are dry-run into them."""
    core = CoreV1Api(api)
    for namespace in {ns for values in CI_VALUES for ns in values_namespaces(values)}:
        try:
            core.create_namespace({"metadata": {"name": namespace}})
        except ApiException as exc:
            if exc.status != 409:
                raise


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_every_rendered_object_passes_a_server_side_dry_run(
    dynamic: DynamicClient, watched_namespaces: None, namespace: str, values: Path
) -> None:
    objects = render([values], namespace=namespace)
    failures = []
    for obj in objects:
        try:
            apply(dynamic, obj, dry_run=True)
        except ApiException as exc:
            failures.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.status} {exc.body}")
    assert not failures, "\n".join(failures)
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "ServiceAccount"} <= kinds


def test_a_typo_in_a_rendered_object_is_caught_by_the_dry_run(dynamic: DynamicClient, namespace: str) -> None:
    """The dry run is strict: a field the apiserver does not know fails instead of vanishing."""
    deployment = one(render(namespace=namespace), "Deployment", OPERATOR)
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(ApiException) as failure:
        apply(dynamic, deployment, dry_run=True)
    assert "securityContext.readOnlyRootFileSystem: field not declared in schema" in failure.value.body


# --- a real helm install, upgrade and uninstall -------------------------------------------------


def helm(control_plane: Any, home: Path, *args: str) -> str:
    environment = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
                   "HELM_DATA_HOME": str(home / "data")}
    proc = subprocess.run([str(helm_binary()), "--kubeconfig", str(control_plane.admin_kubeconfig), *args],
                          capture_output=True, text=True, check=False, env=environment)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def adopt_crd(api: ApiClient, release: str, namespace: str) -> None:
    """Marks the existing CRD as the release's, as a user does to adopt one installed by hand."""
    ApiextensionsV1Api(api).patch_custom_resource_definition(CRD_NAME, {"metadata": {
        "labels": {"app.kubernetes.io/managed-by": "Helm"},
        "annotations": {"meta.helm.sh/release-name": release, "meta.helm.sh/release-namespace": namespace},
    }})


def test_helm_install_upgrade_and_uninstall_keep_the_crd(
    control_plane: Any, api: ApiClient, dynamic: DynamicClient, namespace: str, tmp_path: Path
) -> None:
    release = "lm"
    adopt_crd(api, release, namespace)
    installed = helm(control_plane, tmp_path, "install", release, str(CHART), "--namespace", namespace)
    # NOTES.txt: how to apply a model and how to call /v1, from a laptop and from a pod.
    assert f"kubectl port-forward -n {namespace} svc/{ROUTER} 8080:80" in installed
    assert f"http://{ROUTER}.{namespace}.svc/v1" in installed
    assert "kind: LocalModel" in installed
    deployments = {d["metadata"]["name"] for d in of_kind(render(namespace=namespace), "Deployment")}
    apps = dynamic.resources.get(api_version="apps/v1", kind="Deployment")
    assert {d.metadata.name for d in apps.get(namespace=namespace).items} == deployments

    exposed = CHART / "ci" / "exposed-values.yaml"
    upgraded = helm(control_plane, tmp_path, "upgrade", release, str(CHART), "--namespace", namespace,
                    "--values", str(exposed))
    assert "Authorization: Bearer" in upgraded
    monitors = dynamic.resources.get(api_version="monitoring.coreos.com/v1", kind="ServiceMonitor")
    assert {m.metadata.name for m in monitors.get(namespace=namespace).items} == {ROUTER, "lm-localmodel-models"}

    helm(control_plane, tmp_path, "uninstall", release, "--namespace", namespace)
    assert not apps.get(namespace=namespace).items
    crd = ApiextensionsV1Api(api).read_custom_resource_definition(CRD_NAME)  # kept: helm.sh/resource-policy
    assert crd.metadata.annotations["helm.sh/resource-policy"] == "keep"
