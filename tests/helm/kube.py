"""Sending rendered objects to the test apiserver."""

from __future__ import annotations

import time
from typing import Any

from kubernetes.client import ApiClient, ApiextensionsV1Api
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "localmodel-chart-test"
CRD_NAME = "localmodels.localmodel.dev"


def apply(dynamic: DynamicClient, obj: dict[str, Any], dry_run: bool) -> None:
    """Server-side apply; unknown or duplicate fields are errors, not silently dropped."""
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    dynamic.server_side_apply(
        resource, body=obj, namespace=obj["metadata"].get("namespace"), field_manager=FIELD_MANAGER,
        force_conflicts=True, dry_run="All" if dry_run else None, query_params=[("fieldValidation", "Strict")],
    )


def delete(dynamic: DynamicClient, obj: dict[str, Any]) -> None:
    resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
    resource.delete(name=obj["metadata"]["name"], namespace=obj["metadata"].get("namespace"))


def established(api: ApiClient, name: str, timeout: float = 30.0) -> None:
    extensions = ApiextensionsV1Api(api)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conditions = extensions.read_custom_resource_definition(name).status.conditions or []
        if any(c.type == "Established" and c.status == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise AssertionError(f"CRD {name} never became Established")
