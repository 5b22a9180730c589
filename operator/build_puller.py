"""The pull Job, the size probe Job and their minimal RBAC, as pure functions of the LocalModel."""

from __future__ import annotations

from typing import Any

from localmodel_operator import meta
from localmodel_operator.build_pod import (
    container_security_context, pod_security_context, scratch_mount, scratch_volume, volume_mounts, volumes,
)
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel
from localmodel_server.contract import PULL_REPORTED_FAILURE_EXIT_CODE, REGISTRY_SOURCE_KINDS

TERMINATION_LOG = "/dev/termination-log"
# A registry source's .dockerconfigjson Secret is mounted here as config.json (DOCKER_CONFIG's layout).
DOCKER_CONFIG_DIR = "/var/run/localmodel/docker"
_DOCKER_CONFIG_VOLUME = "registry-auth"
PULLER_RESOURCES = {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}


def _metadata(model: LocalModel, name: str) -> dict[str, Any]:
    return meta.child_metadata(model.name, model.namespace, model.uid, name, meta.PULLER_COMPONENT)


def service_account(model: LocalModel) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _metadata(model, meta.puller_name(model.name)),
        "automountServiceAccountToken": False,  # only the pull pod mounts it
    }


def role(model: LocalModel) -> dict[str, Any]:
    """The puller may read and patch the status of its own LocalModel, and nothing else."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(model, meta.puller_name(model.name)),
        "rules": [{
            "apiGroups": [meta.API_GROUP],
            "resources": [f"{meta.PLURAL}/status"],
            "resourceNames": [model.name],
            "verbs": ["get", "patch"],
        }],
    }


def role_binding(model: LocalModel) -> dict[str, Any]:
    name = meta.puller_name(model.name)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(model, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": model.namespace}],
    }


def puller_args(model: LocalModel) -> list[str]:
    """docs/architecture.md: the source travels as JSON in one argv element, never through a shell."""
    return [
        "--source", model.spec.source.canonical_json(),
        "--dest", meta.MODELS_DIR,
        "--report-to", f"{model.namespace}/{model.name}",
        "--termination-log", TERMINATION_LOG,
    ]


def probe_args(model: LocalModel) -> list[str]:
    """Only the size: reported into status.download.bytesTotal, nothing downloaded."""
    return [
        "--probe",
        "--source", model.spec.source.canonical_json(),
        "--report-to", f"{model.namespace}/{model.name}",
        "--termination-log", TERMINATION_LOG,
    ]


def job(model: LocalModel, settings: OperatorSettings) -> dict[str, Any]:
    """Pulls (or, for a pvc source, verifies) spec.source; named after its digest so a new source is a new Job."""
    user_claim = model.spec.source.claim_name
    read_only = user_claim is not None  # never write into a claim the user owns
    # huggingface_hub's cache goes to the claim, not to the node's disk.
    hf_home = {"name": "HF_HOME", "value": f"{meta.MODELS_DIR}/.cache/huggingface"}
    return _job(model, settings, meta.job_name(model.name, model.spec.source.digest), puller_args(model), [hf_home],
                volume_mounts(read_only=read_only), volumes(user_claim or meta.pvc_name(model.name), read_only=read_only))


def probe_job(model: LocalModel, settings: OperatorSettings) -> dict[str, Any]:
    """Measures spec.source before the claim exists, so the claim can be sized from it: no weights volume."""
    name = meta.probe_job_name(model.name, model.spec.source.digest)
    return _job(model, settings, name, probe_args(model), [], [scratch_mount()], [scratch_volume()])


def _job(
    model: LocalModel, settings: OperatorSettings, name: str, args: list[str], env: list[dict[str, Any]],
    mounts: list[dict[str, Any]], pod_volumes: list[dict[str, Any]],
) -> dict[str, Any]:
    source = model.spec.source
    container: dict[str, Any] = {
        "name": "pull",
        "image": settings.effective_puller_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["localmodel-pull"],
        "args": args,
        "env": [{"name": "HOME", "value": "/tmp"}, *env],
        "resources": PULLER_RESOURCES,
        "securityContext": container_security_context(),
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": mounts,
    }
    if source.secret_name and source.kind in REGISTRY_SOURCE_KINDS:
        # Its key `.dockerconfigjson` is no environment variable name: mount it as a Docker config file.
        container["env"].append({"name": "DOCKER_CONFIG", "value": DOCKER_CONFIG_DIR})
        mounts = [*mounts, {"name": _DOCKER_CONFIG_VOLUME, "mountPath": DOCKER_CONFIG_DIR, "readOnly": True}]
        container["volumeMounts"] = mounts
        pod_volumes = [*pod_volumes, {"name": _DOCKER_CONFIG_VOLUME, "secret": {
            "secretName": source.secret_name, "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}}]
    elif source.secret_name:
        container["envFrom"] = [{"secretRef": {"name": source.secret_name}}]
    labels = meta.labels(model.name, meta.PULLER_COMPONENT)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {**_metadata(model, name), "annotations": {meta.WEIGHTS_ANNOTATION: source.digest}},
        "spec": {
            "backoffLimit": settings.pull_backoff_limit,
            "ttlSecondsAfterFinished": settings.pull_ttl_s,
            "podFailurePolicy": {"rules": [
                {"action": "FailJob", "onExitCodes": {
                    "containerName": "pull", "operator": "In", "values": [PULL_REPORTED_FAILURE_EXIT_CODE]}},
                # An evicted or preempted pod resumes from the partial file without using up a retry.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
            ]},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": meta.puller_name(model.name),
                    "automountServiceAccountToken": True,
                    "enableServiceLinks": False,
                    "securityContext": pod_security_context(),
                    "containers": [container],
                    "volumes": pod_volumes,
                },
            },
        },
    }
