"""The test control plane is a real apiserver: storage, watch, CRDs, optimistic concurrency and RBAC."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import kubernetes
import pytest
from kubernetes.client import (
    ApiextensionsV1Api,
    ApiClient,
    CoreV1Api,
    CustomObjectsApi,
    RbacAuthorizationV1Api,
)
from kubernetes.client.exceptions import ApiException

from support.controlplane import ControlPlane, namespace_name

GROUP, VERSION, PLURAL = "test.localmodel.dev", "v1", "widgets"


@pytest.fixture
def admin(control_plane: ControlPlane) -> Iterator[ApiClient]:
    with control_plane.api_client() as api:
        yield api


def eventually(check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Retries `check` until it stops raising; for state that controllers or caches settle."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return check()
        except (AssertionError, ApiException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.mark.parametrize("test_name", ["test_x[Mixed_Case-1]", "t" * 80, "___"])
def test_namespace_name_is_a_unique_dns_label(test_name: str) -> None:
    name = namespace_name(test_name)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
    assert namespace_name(test_name) != name


def test_configmap_create_get_list_watch_delete(admin: ApiClient, namespace: str) -> None:
    core = CoreV1Api(admin)
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    body = kubernetes.client.V1ConfigMap(
        metadata=kubernetes.client.V1ObjectMeta(name="settings", labels={"app": "demo"}), data={"mode": "a"}
    )
    core.create_namespaced_config_map(namespace, body)

    assert core.read_namespaced_config_map("settings", namespace).data == {"mode": "a"}
    listed = core.list_namespaced_config_map(namespace, label_selector="app=demo").items
    assert [cm.metadata.name for cm in listed] == ["settings"]
    assert core.list_namespaced_config_map(namespace, label_selector="app=other").items == []

    core.patch_namespaced_config_map("settings", namespace, {"data": {"mode": "b"}})
    core.delete_namespaced_config_map("settings", namespace)
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_config_map("settings", namespace)
    assert missing.value.status == 404

    # A watch from the list's resourceVersion replays every change made since, in order.
    seen = []
    watch = kubernetes.watch.Watch()
    for event in watch.stream(
        core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=30
    ):
        seen.append((event["type"], event["object"].data))
        if event["type"] == "DELETED":
            watch.stop()
    assert seen == [("ADDED", {"mode": "a"}), ("MODIFIED", {"mode": "b"}), ("DELETED", {"mode": "b"})]


def widget_crd() -> dict[str, Any]:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "required": ["size"],
                "properties": {"size": {"type": "integer", "minimum": 1}, "color": {"type": "string"}},
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": PLURAL, "singular": "widget", "kind": "Widget"},
            "versions": [{
                "name": VERSION, "served": True, "storage": True,
                "schema": {"openAPIV3Schema": schema}, "subresources": {"status": {}},
            }],
        },
    }


@pytest.fixture
def widget_crd_established(admin: ApiClient) -> Iterator[None]:
    extensions = ApiextensionsV1Api(admin)
    crd = widget_crd()
    extensions.create_custom_resource_definition(crd)

    def established() -> None:
        conditions = extensions.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []
        assert any(c.type == "Established" and c.status == "True" for c in conditions), conditions

    eventually(established)
    yield
    extensions.delete_custom_resource_definition(crd["metadata"]["name"])


@pytest.mark.usefixtures("widget_crd_established")
def test_crd_object_validation_and_stale_resource_version_conflict(admin: ApiClient, namespace: str) -> None:
    objects = CustomObjectsApi(admin)
    widget = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 2}}
    created = eventually(lambda: objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, widget))
    assert created["spec"] == {"size": 2}

    invalid = {**widget, "metadata": {"name": "w2"}, "spec": {"size": 0}}
    with pytest.raises(ApiException) as rejected:
        objects.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, invalid)
    assert rejected.value.status == 422
    assert "spec.size" in rejected.value.body

    stale = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    fresh = {**stale, "spec": {"size": 3}}
    updated = objects.replace_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1", fresh)
    assert updated["metadata"]["resourceVersion"] != stale["metadata"]["resourceVersion"]

    with pytest.raises(ApiException) as conflict:
        objects.replace_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "w1", {**stale, "spec": {"size": 4}}
        )
    assert conflict.value.status == 409
    current = objects.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "w1")
    assert current["spec"] == {"size": 3}


def test_serviceaccount_needs_a_rolebinding_to_list_pods(control_plane: ControlPlane, namespace: str) -> None:
    kubeconfig = control_plane.serviceaccount_kubeconfig(namespace, "reader")
    with kubernetes.config.new_client_from_config(config_file=str(kubeconfig)) as as_sa:
        review = kubernetes.client.AuthenticationV1Api(as_sa).create_self_subject_review(
            kubernetes.client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == f"system:serviceaccount:{namespace}:reader"

        with pytest.raises(ApiException) as forbidden:
            CoreV1Api(as_sa).list_namespaced_pod(namespace)
        assert forbidden.value.status == 403

        with control_plane.api_client() as admin:
            rbac = RbacAuthorizationV1Api(admin)
            rbac.create_namespaced_role(namespace, {
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
            })
            rbac.create_namespaced_role_binding(namespace, {
                "metadata": {"name": "reader-reads-pods"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
                "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
            })

        # The authorizer reads RBAC objects through an informer, so the grant lands shortly after.
        pods = eventually(lambda: CoreV1Api(as_sa).list_namespaced_pod(namespace))
        assert pods.items == []
        with pytest.raises(ApiException) as still_forbidden:
            CoreV1Api(as_sa).list_namespaced_config_map(namespace)
        assert still_forbidden.value.status == 403
