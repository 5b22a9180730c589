"""The claim that holds downloaded weights, and how big it is."""

from __future__ import annotations

from typing import Any

from localmodel_operator import meta
from localmodel_operator.observed import JobPhase, JobState
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel

GIB = 1 << 30


def size_for_content(bytes_total: int) -> str:
    """The file plus 10 % (marker, filesystem overhead), rounded up to whole GiB, at least 1Gi."""
    return f"{max(1, -(-bytes_total * 11 // (10 * GIB)))}Gi"


def claim_size(
    model: LocalModel, existing: str | None, probe: JobState | None, settings: OperatorSettings
) -> str | None:
    """What the weights claim requests; None while the size Job has yet to measure the source.

    An explicit spec.storage.size wins (editing it resizes the claim). An existing claim keeps
    what it requests: apply must never shrink or grow it behind the user's back. Otherwise the
    source's content length, which the current source's size Job (named after its digest)
    reported into status.download before it completed; a pull's report (with a result) or a
    server that announced no length leaves the default.
    """
    if model.spec.storage.size:
        return model.spec.storage.size
    if existing:
        return existing
    if probe is None or probe.phase != JobPhase.SUCCEEDED:
        return None
    download = model.download
    if download.result is None and download.bytes_total:
        return size_for_content(download.bytes_total)
    return settings.default_storage_size


def weights_claim(model: LocalModel, settings: OperatorSettings, size: str) -> dict[str, Any] | None:
    """lm-<name>-weights, or None for a pvc source. With retainOnDelete it has no owner, so it outlives the model."""
    if model.spec.source.claim_name is not None:
        return None
    storage = model.spec.storage
    spec: dict[str, Any] = {
        "accessModes": list(storage.access_modes),
        "resources": {"requests": {"storage": size}},
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
