"""A typed, read-only view of a LocalModel object: its spec and the status fields other steps depend on.

The CRD has already validated and defaulted the object; defaults are repeated
here only so that a view built from a partial dict (a unit test, an older
object) means the same thing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from localmodel_operator.meta import MODELS_DIR

from localmodel_server.contract import SOURCE_KINDS

# The puller's own contract for --source: these keys and nothing else.
_PULLER_SOURCE_KEYS = (*SOURCE_KINDS, "sha256")
DOWNLOADED_FILE = "model.gguf"


@dataclass(frozen=True)
class Source:
    """spec.source: where the weights come from."""

    raw: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return next(kind for kind in SOURCE_KINDS if kind in self.raw)

    @property
    def secret_name(self) -> str | None:
        ref = self.raw.get("secretRef") or {}
        return ref.get("name")

    @property
    def sha256(self) -> str | None:
        return self.raw.get("sha256")

    def canonical(self) -> dict[str, Any]:
        """What the puller receives and what the digest covers: the secret's name does not change the bytes."""
        return {key: self.raw[key] for key in _PULLER_SOURCE_KEYS if key in self.raw}

    def canonical_json(self) -> str:
        return json.dumps(self.canonical(), sort_keys=True, separators=(",", ":"))

    @property
    def digest(self) -> str:
        """8 hex characters naming the pull Job: a new source means a new Job."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()[:8]

    @property
    def claim_name(self) -> str | None:
        """The user's claim for a pvc source; None when the operator's own claim holds the weights."""
        return self.raw["pvc"]["claimName"] if self.kind == "pvc" else None

    @property
    def model_path(self) -> str:
        """Where the server finds the file once the volume is mounted at /models."""
        relative = self.raw["pvc"]["path"] if self.kind == "pvc" else DOWNLOADED_FILE
        return f"{MODELS_DIR}/{relative}"

    def summary(self) -> str:
        """Short form for the SOURCE column."""
        kind = self.kind
        value = self.raw[kind]
        if kind == "hf":
            pick = value.get("quant") or value.get("file")
            return f"hf:{value['repo']}:{pick}"
        if kind == "url":
            return f"url:{_host_and_file(value)}"
        if kind == "s3":
            return f"s3://{value['bucket']}/{value['key']}"
        if kind == "ollama":
            return f"ollama:{value['model']}"
        if kind == "oci":
            return f"oci:{value['ref']}"
        return f"pvc:{value['claimName']}/{value['path']}"


def _host_and_file(url: str) -> str:
    rest = url.split("://", 1)[-1].split("?", 1)[0]
    host, _, path = rest.partition("/")
    return f"{host}/…/{path.rsplit('/', 1)[-1]}" if "/" in path else rest


@dataclass(frozen=True)
class Gpu:
    count: int = 0
    # None: the operator's configured default (LOCALMODEL_GPU_RESOURCE_NAME).
    resource_name: str | None = None


@dataclass(frozen=True)
class Storage:
    size: str | None = None
    storage_class_name: str | None = None
    access_modes: tuple[str, ...] = ("ReadWriteOnce",)
    retain_on_delete: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """spec: what to serve and how."""

    source: Source
    served_name: str
    aliases: tuple[str, ...] = ()
    context_size: int | None = None
    parallel: int = 4
    gpu_layers: int | None = None
    resources: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    gpu: Gpu = Gpu()
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: tuple[Mapping[str, Any], ...] = ()
    affinity: Mapping[str, Any] | None = None
    runtime_class_name: str | None = None
    priority_class_name: str | None = None
    replicas: int = 1
    image: str | None = None
    args: tuple[str, ...] = ()
    env: tuple[Mapping[str, Any], ...] = ()
    storage: Storage = Storage()
    keep_alive: str | None = None  # spec.keepAlive as written ("-1" means never, as unset does)

    @property
    def effective_gpu_layers(self) -> int:
        """All layers on the GPU when there is one, none otherwise, unless the user chose."""
        if self.gpu_layers is not None:
            return self.gpu_layers
        return -1 if self.gpu.count > 0 else 0


@dataclass(frozen=True)
class GgufInfo:
    """status.gguf, written by the puller from the file's header."""

    architecture: str | None = None
    parameters: int | None = None
    quantization: str | None = None
    context_length: int | None = None
    size_bytes: int | None = None

    def to_status(self) -> dict[str, Any]:
        return {key: getattr(self, attr) for key, attr in GGUF_FIELDS.items() if getattr(self, attr) is not None}


@dataclass(frozen=True)
class Weights:
    """status.weights: the source whose pull succeeded, i.e. what the server pods load.

    The file's GGUF metadata is kept with it: status.gguf moves on as soon as a
    new pull starts, while the pods still run these weights.
    """

    digest: str
    source: Source
    sha256: str | None = None
    gguf: GgufInfo = GgufInfo()

    def to_status(self) -> dict[str, Any]:
        recorded: dict[str, Any] = {"digest": self.digest, "source": self.source.canonical()}
        if self.sha256:
            recorded["sha256"] = self.sha256
        if self.gguf.to_status():
            recorded["gguf"] = self.gguf.to_status()
        return recorded


@dataclass(frozen=True)
class Download:
    """status.download, written by the puller."""

    bytes_done: int | None = None
    bytes_total: int | None = None
    percent: int | None = None
    sha256: str | None = None
    result: str | None = None
    reason: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class LocalModel:
    name: str
    namespace: str
    uid: str
    generation: int
    spec: ModelSpec
    weights: Weights | None = None
    gguf: GgufInfo = GgufInfo()
    download: Download = Download()
    status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> LocalModel:
        metadata, spec, status = body["metadata"], body.get("spec") or {}, body.get("status") or {}
        return cls(
            name=metadata["name"],
            namespace=metadata["namespace"],
            uid=metadata.get("uid", ""),
            generation=int(metadata.get("generation", 1)),
            spec=_spec(spec, default_served_name=metadata["name"]),
            weights=_weights(status.get("weights")),
            gguf=GgufInfo(**_pick(status.get("gguf"), GGUF_FIELDS)),
            download=Download(**_pick(status.get("download"), DOWNLOAD_FIELDS)),
            status=status,
        )


GGUF_FIELDS = {
    "architecture": "architecture", "parameters": "parameters", "quantization": "quantization",
    "contextLength": "context_length", "sizeBytes": "size_bytes",
}
DOWNLOAD_FIELDS = {
    "bytesDone": "bytes_done", "bytesTotal": "bytes_total", "percent": "percent", "sha256": "sha256",
    "result": "result", "reason": "reason", "message": "message",
}


def _pick(value: Mapping[str, Any] | None, names: Mapping[str, str]) -> dict[str, Any]:
    """Known keys only: the puller may add fields this operator version does not know."""
    return {attr: value[key] for key, attr in names.items() if value and value.get(key) is not None}


def _weights(value: Mapping[str, Any] | None) -> Weights | None:
    if not value or not value.get("digest") or not value.get("source"):
        return None
    return Weights(digest=value["digest"], source=Source(value["source"]), sha256=value.get("sha256"),
                   gguf=GgufInfo(**_pick(value.get("gguf"), GGUF_FIELDS)))


def _spec(spec: Mapping[str, Any], default_served_name: str) -> ModelSpec:
    gpu, storage = spec.get("gpu"), spec.get("storage") or {}
    return ModelSpec(
        source=Source(spec["source"]),
        served_name=spec.get("servedName") or default_served_name,
        aliases=tuple(spec.get("aliases") or ()),
        context_size=spec.get("contextSize"),
        parallel=spec.get("parallel", 4),
        gpu_layers=spec.get("gpuLayers"),
        resources=spec.get("resources") or {},
        gpu=Gpu(gpu.get("count", 1), gpu.get("resourceName")) if gpu is not None else Gpu(),
        node_selector=spec.get("nodeSelector") or {},
        tolerations=tuple(spec.get("tolerations") or ()),
        affinity=spec.get("affinity"),
        runtime_class_name=spec.get("runtimeClassName"),
        priority_class_name=spec.get("priorityClassName"),
        replicas=spec.get("replicas", 1),
        keep_alive=spec.get("keepAlive") if spec.get("keepAlive") not in (None, "-1") else None,
        image=spec.get("image"),
        args=tuple(spec.get("args") or ()),
        env=tuple(spec.get("env") or ()),
        storage=Storage(
            size=None if storage.get("size") is None else str(storage["size"]),
            storage_class_name=storage.get("storageClassName"),
            access_modes=tuple(storage.get("accessModes") or ("ReadWriteOnce",)),
            retain_on_delete=bool(storage.get("retainOnDelete", False)),
        ),
    )
