"""The model server's Deployment and Service, as pure functions of the LocalModel."""

from __future__ import annotations

import dataclasses
from typing import Any

from localmodel_operator import meta
from localmodel_operator.build_pod import container_security_context, pod_security_context, volume_mounts, volumes
from localmodel_operator.resources import server_resources
from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import Gpu, LocalModel, ModelSpec, Weights

# Loading a large model from network storage can take many minutes: the startup
# probe allows up to an hour before liveness takes over. It asks every second, so a
# pod woken from zero is Ready within a second of its load (at 5 s, a small model's
# cold start waited ~4 s on the probe); a refused /readyz costs the server next to nothing.
STARTUP_PERIOD_S = 1
STARTUP_FAILURES = 3600
TERMINATION_MARGIN_S = 5


def server_args(model: LocalModel, weights: Weights, settings: OperatorSettings) -> list[str]:
    spec = model.spec
    context = [f"--context-size={spec.context_size}"] if spec.context_size else []
    return [
        f"--model-path={weights.source.model_path}",
        f"--served-name={spec.served_name}",
        *(f"--aliases={alias}" for alias in spec.aliases),
        *context,
        f"--parallel={spec.parallel}",
        f"--gpu-layers={spec.effective_gpu_layers}",
        f"--drain-timeout={settings.drain_timeout_s}",
        "--host=0.0.0.0",
        f"--port={meta.SERVER_PORT}",
        *spec.args,
    ]


def _probe(path: str, period_s: int, failures: int, timeout_s: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period_s,
        "failureThreshold": failures,
        "timeoutSeconds": timeout_s,
    }


def with_gpu_defaults(spec: ModelSpec, settings: OperatorSettings) -> ModelSpec:
    """A GPU model's pod settings: the cluster's GPU defaults (Helm values), under the model's own."""
    if spec.gpu.count == 0:
        return spec
    extra = [dict(t) for t in settings.gpu_tolerations if t not in spec.tolerations]
    return dataclasses.replace(
        spec,
        gpu=Gpu(spec.gpu.count, spec.gpu.resource_name or settings.gpu_resource_name),
        node_selector={**settings.gpu_node_selector, **spec.node_selector},
        tolerations=(*spec.tolerations, *extra),
        runtime_class_name=spec.runtime_class_name or settings.gpu_runtime_class_name or None,
        image=spec.image or settings.gpu_image or None,
    )


def _tolerations(spec: ModelSpec) -> list[dict[str, Any]]:
    tolerations = [dict(toleration) for toleration in spec.tolerations]
    gpu = spec.gpu
    # GPU nodes are commonly tainted with their resource name (the NVIDIA GPU operator does this).
    if gpu.count > 0 and not any(t.get("key") == gpu.resource_name for t in tolerations):
        tolerations.append({"key": gpu.resource_name, "operator": "Exists", "effect": "NoSchedule"})
    return tolerations


def _rolling_update(spec: ModelSpec) -> dict[str, Any]:
    # A surge pod needs a spare GPU that usually does not exist, so GPU models replace
    # pods in place; CPU models surge so that serving never stops.
    if spec.gpu.count > 0:
        return {"maxSurge": 0, "maxUnavailable": 1}
    return {"maxSurge": 1, "maxUnavailable": 0}


def _weights_annotations(weights: Weights) -> dict[str, str]:
    annotations = {meta.WEIGHTS_ANNOTATION: weights.digest}
    if weights.sha256:
        annotations[f"{meta.WEIGHTS_ANNOTATION}-sha256"] = weights.sha256
    return annotations


def deployment(model: LocalModel, weights: Weights, settings: OperatorSettings) -> dict[str, Any]:
    """The server pods, loading `weights` (which lag spec.source while a new pull runs)."""
    spec = with_gpu_defaults(model.spec, settings)
    claim = weights.source.claim_name or meta.pvc_name(model.name)
    prestop = settings.prestop_sleep_s
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image or settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["localmodel-server"],
        "args": server_args(model, weights, settings),
        "env": [{"name": "HOME", "value": "/tmp"}, *(dict(var) for var in spec.env)],
        "ports": [{"name": "http", "containerPort": meta.SERVER_PORT, "protocol": "TCP"}],
        "startupProbe": _probe("/readyz", STARTUP_PERIOD_S, STARTUP_FAILURES, 2),
        "readinessProbe": _probe("/readyz", 5, 2, 2),
        "livenessProbe": _probe("/healthz", 10, 3, 5),
        "resources": server_resources(spec, weights.gguf),
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(read_only=True),
    }
    if prestop:
        # Routers see the pod leave the Endpoints during this sleep; SIGTERM then starts the drain.
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": prestop}}}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes(claim, read_only=True),
        "securityContext": pod_security_context(),
        "terminationGracePeriodSeconds": prestop + settings.drain_timeout_s + TERMINATION_MARGIN_S,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    optional = {
        "nodeSelector": dict(spec.node_selector),
        "tolerations": _tolerations(spec),
        "affinity": dict(spec.affinity) if spec.affinity else None,
        "runtimeClassName": spec.runtime_class_name,
        "priorityClassName": spec.priority_class_name,
    }
    pod_spec.update({key: value for key, value in optional.items() if value})
    selector = meta.server_selector(model.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.child_metadata(model.name, model.namespace, model.uid, meta.deployment_name(model.name)),
        "spec": {
            "replicas": spec.replicas,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": _rolling_update(spec)},
            # Never call a rollout stuck while the startup probe still allows the model to load.
            "progressDeadlineSeconds": STARTUP_PERIOD_S * STARTUP_FAILURES + 300,
            "template": {
                "metadata": {"labels": meta.labels(model.name), "annotations": _weights_annotations(weights)},
                "spec": pod_spec,
            },
        },
    }


def service(model: LocalModel) -> dict[str, Any]:
    """lm-<name>: the stable address of the server pods, used by the router."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.child_metadata(model.name, model.namespace, model.uid, meta.service_name(model.name)),
        "spec": {
            "type": "ClusterIP",
            "selector": meta.server_selector(model.name),
            "ports": [{"name": "http", "port": meta.SERVER_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }
