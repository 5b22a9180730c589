"""LocalModel bodies and child objects for the pure unit tests (no cluster)."""

from __future__ import annotations

import copy
from typing import Any

from localmodel_operator.settings import OperatorSettings
from localmodel_operator.spec import LocalModel

HF_SOURCE = {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M", "revision": "main"}}
SETTINGS = OperatorSettings(server_image="registry.test/localmodel:1", router_url="http://router.lm:8000")


def model_body(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, name: str = "qwen") -> dict[str, Any]:
    return {
        "apiVersion": "localmodel.dev/v1alpha1",
        "kind": "LocalModel",
        "metadata": {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 3},
        "spec": copy.deepcopy(spec if spec is not None else {"source": HF_SOURCE}),
        "status": copy.deepcopy(status or {}),
    }


def model(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, name: str = "qwen") -> LocalModel:
    return LocalModel.from_body(model_body(spec, status, name))


def job_body(name: str, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": status}


def finished_job(name: str, kind: str, reason: str = "", message: str = "") -> dict[str, Any]:
    return job_body(name, conditions=[{"type": kind, "status": "True", "reason": reason, "message": message}])


def deployment_body(desired: int = 1, generation: int = 1, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "lm-qwen", "generation": generation}, "spec": {"replicas": desired}, "status": status}
