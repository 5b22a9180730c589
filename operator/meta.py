"""Names, labels and owner references of a LocalModel's children (docs/architecture.md)."""

from __future__ import annotations

from typing import Any

# The shared contract, re-exported: the operator's modules read every name from here.
from localmodel_server.contract import (  # noqa: F401
    API_GROUP, API_VERSION, KIND, MODEL_LABEL, NAME_PREFIX, PLURAL, VERSION, service_name,
)

FIELD_MANAGER = "localmodel-operator"

SERVER_COMPONENT = "localmodel-server"
PULLER_COMPONENT = "localmodel-puller"
MANAGED_BY = {"app.kubernetes.io/managed-by": FIELD_MANAGER}
# Pod-template annotation: changes when new weights are in place, which rolls the Deployment.
WEIGHTS_ANNOTATION = "localmodel.dev/weights"
SERVER_PORT = 8000
MODELS_DIR = "/models"


def pvc_name(model: str) -> str:
    return f"{NAME_PREFIX}{model}-weights"


def job_name(model: str, digest: str) -> str:
    return f"{NAME_PREFIX}{model}-pull-{digest}"


def probe_job_name(model: str, digest: str) -> str:
    """The Job that measures the source (localmodel-pull --probe) to size the claim; same length as the pull Job's."""
    return f"{NAME_PREFIX}{model}-size-{digest}"


def deployment_name(model: str) -> str:
    return f"{NAME_PREFIX}{model}"


def puller_name(model: str) -> str:
    """ServiceAccount, Role and RoleBinding of the pull Job."""
    return f"{NAME_PREFIX}{model}-puller"


def labels(model: str, component: str = SERVER_COMPONENT) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": component,
        "app.kubernetes.io/instance": model,
        **MANAGED_BY,
        MODEL_LABEL: model,
    }


def server_selector(model: str) -> dict[str, str]:
    """Selects the server pods only (pull Job pods carry the same model label)."""
    return {"app.kubernetes.io/name": SERVER_COMPONENT, MODEL_LABEL: model}


def selector_string(selector: dict[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(selector.items()))


def owner_reference(model: str, uid: str) -> dict[str, Any]:
    """Makes the child garbage-collected with its LocalModel."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": model,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    model: str, namespace: str, uid: str, name: str, component: str = SERVER_COMPONENT, owned: bool = True
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels(model, component)}
    if owned:
        metadata["ownerReferences"] = [owner_reference(model, uid)]
    return metadata
