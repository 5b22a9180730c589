"""The claim that holds downloaded weights."""

from __future__ import annotations

from typing import Any

from localmodel_operator import meta
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel


def weights_claim(model: LocalModel, settings: OperatorSettings) -> dict[str, Any] | None:
    """lm-<name>-weights, or None for a pvc source. With retainOnDelete it has no owner, so it outlives the model."""
    if model.spec.source.claim_name is not None:
        return None
    storage = model.spec.storage
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": storage.size or settings.default_storage_size}},
        "volumeMode": "Filesystem",
    }
    storage_class = storage.storage_class_name or settings.default_storage_class
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta.child_metadata(
            model.name, model.namespace, model.uid, meta.pvc_name(model.name), owned=not storage.retain_on_delete
        ),
        "spec": spec,
    }
