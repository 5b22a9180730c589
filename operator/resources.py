"""Container resources of a server pod: the user's, a derived memory request, and the GPU limit."""

from __future__ import annotations

import math
from typing import Any

from localmodel_operator.spec import GgufInfo, ModelSpec

# The server's own default context (docs/architecture.md): trained length capped at 4096.
SERVER_CONTEXT_CAP = 4096
# KV cache bytes per token per model parameter. Exact for Llama-3-8B (f16 KV, GQA 4:1:
# 128 KiB/token) and a safe margin for smaller GQA models; MHA models need more, and
# their users should set a memory request.
KV_BYTES_PER_TOKEN_PER_PARAM = 24e-6
# Compute buffers, the Python runtime and the HTTP server.
RUNTIME_OVERHEAD_BYTES = 512 * 2**20
# Without a parameter count, quantized GGUF files hold roughly 2 parameters per byte (Q4).
PARAMS_PER_BYTE_FALLBACK = 2


def context_tokens(spec: ModelSpec, gguf: GgufInfo) -> int:
    if spec.context_size:
        return spec.context_size
    return min(gguf.context_length or SERVER_CONTEXT_CAP, SERVER_CONTEXT_CAP)


def estimated_memory_bytes(spec: ModelSpec, gguf: GgufInfo) -> int | None:
    """File (mmapped) + KV cache for every slot + runtime, or None before the file is known."""
    if not gguf.size_bytes:
        return None
    params = gguf.parameters or gguf.size_bytes * PARAMS_PER_BYTE_FALLBACK
    kv_bytes = context_tokens(spec, gguf) * spec.parallel * params * KV_BYTES_PER_TOKEN_PER_PARAM
    return int(gguf.size_bytes + kv_bytes + RUNTIME_OVERHEAD_BYTES)


def mebibytes(size: int) -> str:
    return f"{math.ceil(size / 2**20)}Mi"


def server_resources(spec: ModelSpec, gguf: GgufInfo) -> dict[str, Any]:
    requests = dict(spec.resources.get("requests") or {})
    limits = dict(spec.resources.get("limits") or {})
    # A memory limit alone also sets the request, so only derive one when neither is given.
    if "memory" not in requests and "memory" not in limits:
        estimate = estimated_memory_bytes(spec, gguf)
        if estimate is not None:
            requests["memory"] = mebibytes(estimate)
    if spec.gpu.count > 0:
        limits[spec.gpu.resource_name] = spec.gpu.count
    resources: dict[str, Any] = {}
    if requests:
        resources["requests"] = requests
    if limits:
        resources["limits"] = limits
    return resources
