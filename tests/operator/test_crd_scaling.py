"""spec.keepAlive and spec.autoscaling as the apiserver validates and defaults them, and the columns they show."""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import CustomObjectsApi

from .conftest import GROUP, PLURAL, VERSION, local_model
from .test_crd_validation import create, rejection, with_spec

INVALID = [
    ("keepAlive in days", with_spec(keepAlive="1d"), "spec.keepAlive"),
    ("keepAlive negative other than -1", with_spec(keepAlive="-5m"), "spec.keepAlive"),
    ("keepAlive as a number", with_spec(keepAlive=30), "spec.keepAlive"),
    ("min above max", with_spec(autoscaling={"minReplicas": 3, "maxReplicas": 2}),
     "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    ("min above the default max", with_spec(autoscaling={"minReplicas": 5}),
     "autoscaling.minReplicas must not exceed autoscaling.maxReplicas"),
    ("min 0: zero is keepAlive's job", with_spec(autoscaling={"minReplicas": 0}), "spec.autoscaling.minReplicas"),
    ("target 0", with_spec(autoscaling={"targetInFlight": 0}), "spec.autoscaling.targetInFlight"),
    ("scaleDownDelay -1", with_spec(autoscaling={"scaleDownDelay": "-1"}), "spec.autoscaling.scaleDownDelay"),
]


@pytest.mark.parametrize(("case", "spec", "message"), INVALID, ids=[case for case, _, _ in INVALID])
def test_invalid_scaling_is_rejected(models: CustomObjectsApi, namespace: str, case: str, spec: dict[str, Any],
                                     message: str) -> None:
    assert message in rejection(models, namespace, local_model("m", spec))


@pytest.mark.parametrize("keep_alive", ["30s", "10m", "1h", "1h30m", "500ms", "0", "-1"])
def test_ollama_durations_are_accepted(models: CustomObjectsApi, namespace: str, keep_alive: str) -> None:
    created = create(models, namespace, local_model("ok", with_spec(keepAlive=keep_alive)))
    assert created["spec"]["keepAlive"] == keep_alive


def test_autoscaling_defaults(models: CustomObjectsApi, namespace: str) -> None:
    created = create(models, namespace, local_model("auto", with_spec(keepAlive="5m", autoscaling={})))
    assert created["spec"]["autoscaling"] == {"minReplicas": 1, "maxReplicas": 4, "targetInFlight": 4,
                                              "scaleDownDelay": "5m"}


def test_the_state_column_and_the_activity_routers_write(models: CustomObjectsApi, namespace: str) -> None:
    create(models, namespace, local_model("m", with_spec()))
    status = {"state": "Idle", "activity": {"router-7d9f-abc": {
        "inFlight": 2, "lastRequestTime": "2030-01-01T00:00:00Z", "reportedAt": "2030-01-01T00:00:05Z"}}}
    patched = models.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "m", {"status": status})
    assert patched["status"]["activity"]["router-7d9f-abc"]["inFlight"] == 2
    crd_columns = [c["name"] for c in _printer_columns()]
    assert crd_columns.index("State") == crd_columns.index("Ready") + 1


def _printer_columns() -> list[dict[str, Any]]:
    import yaml

    from .conftest import CRD_PATH
    return yaml.safe_load(CRD_PATH.read_text())["spec"]["versions"][0]["additionalPrinterColumns"]
