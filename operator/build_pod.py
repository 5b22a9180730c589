"""Pod pieces shared by the pull Job and the server Deployment: hardened by default."""

from __future__ import annotations

from typing import Any

from localmodel_operator.meta import MODELS_DIR

# A fixed non-root uid/gid; fsGroup makes a fresh claim writable for the puller.
RUN_AS = 65532
WEIGHTS_VOLUME = "weights"
TMP_VOLUME = "tmp"


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def scratch_volume() -> dict[str, Any]:
    """A writable /tmp: the root filesystem is read-only, and libraries still want a HOME."""
    return {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "1Gi"}}


def scratch_mount() -> dict[str, Any]:
    return {"name": TMP_VOLUME, "mountPath": "/tmp"}


def volumes(claim_name: str, read_only: bool) -> list[dict[str, Any]]:
    """The weights claim and the scratch /tmp."""
    return [
        {"name": WEIGHTS_VOLUME, "persistentVolumeClaim": {"claimName": claim_name, "readOnly": read_only}},
        scratch_volume(),
    ]


def volume_mounts(read_only: bool) -> list[dict[str, Any]]:
    return [{"name": WEIGHTS_VOLUME, "mountPath": MODELS_DIR, "readOnly": read_only}, scratch_mount()]
