"""Operator configuration, read once from `LOCALMODEL_*` environment variables."""

from __future__ import annotations

import socket
from typing import Annotated, Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_IMAGE = "ghcr.io/localmodel/localmodel:0.1.0"


class OperatorSettings(BaseSettings):
    """Everything the operator needs besides the LocalModel objects themselves."""

    model_config = SettingsConfigDict(env_prefix="LOCALMODEL_", frozen=True, extra="ignore")

    namespaces: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Namespaces to watch, comma-separated; empty watches all namespaces.",
    )
    server_image: str = Field(DEFAULT_IMAGE, description="Image of localmodel-server (and, by default, the puller).")
    puller_image: str = Field("", description="Image of the pull Job; empty means server_image.")
    image_pull_policy: str = Field("IfNotPresent", pattern="^(Always|IfNotPresent|Never)$")
    default_storage_class: str = Field("", description="StorageClass for weight claims; empty uses the cluster default.")
    default_storage_size: str = Field("20Gi", description="Claim size when spec.storage.size is unset.")
    router_url: str = Field(
        "", description="Base URL of localmodel-router, e.g. http://localmodel-router.localmodel:8000; "
        "empty makes status.endpoint point at the model's own Service.",
    )
    gpu_image: str = Field("", description="Image for models that ask for GPUs (a CUDA build); empty means server_image.")
    gpu_resource_name: str = Field(
        "nvidia.com/gpu", description="Extended resource counting GPUs, for models whose spec.gpu names none."
    )
    gpu_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels for GPU models (JSON); a model's own nodeSelector wins per key."
    )
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="Tolerations added to GPU models' pods (JSON list)."
    )
    gpu_runtime_class_name: str = Field("", description="RuntimeClass for GPU models that set none (e.g. nvidia).")
    resync_interval_s: float = Field(
        60, gt=0, description="Seconds between full reconciles of each LocalModel, besides those its changes trigger."
    )
    drain_timeout_s: int = Field(30, ge=0, description="Seconds a server may finish in-flight requests after SIGTERM.")
    prestop_sleep_s: int = Field(10, ge=0, description="Seconds a terminating pod waits so routers stop sending first.")
    pull_backoff_limit: int = Field(3, ge=0, description="Pod retries of a pull Job after crashes (not after a reported failure).")
    pull_ttl_s: int = Field(
        86400, ge=60, description="Finished pull Jobs are removed after this; a failed pull is then retried."
    )
    lease_name: str = Field("localmodel-operator", description="coordination.k8s.io Lease that elects the active replica.")
    lease_namespace: str = Field("", description="Namespace of the Lease; defaults to POD_NAMESPACE, else 'default'.")
    lease_duration_s: int = Field(15, ge=5, description="A leader that has not renewed for this long is replaced.")
    identity: str = Field(default_factory=socket.gethostname, description="This replica's name in the Lease.")
    health_port: int = Field(8080, ge=1, le=65535, description="Port of GET /healthz, answered while leading and standing by.")

    @model_validator(mode="before")
    @classmethod
    def _split_namespaces(cls, values: dict[str, object]) -> dict[str, object]:
        raw = values.get("namespaces")
        if isinstance(raw, str):
            values["namespaces"] = [ns.strip() for ns in raw.split(",") if ns.strip()]
        return values

    @property
    def effective_puller_image(self) -> str:
        return self.puller_image or self.server_image
