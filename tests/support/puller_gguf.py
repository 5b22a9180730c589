"""Small but valid GGUF files for the puller tests, written with the `gguf` package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFWriter, LlamaFileType
from gguf.quants import quantize


def write_gguf(
    path: Path,
    *,
    arch: str = "llama",
    context_length: int | None = 4096,
    file_type: LlamaFileType | None = LlamaFileType.MOSTLY_Q8_0,
    extra_bytes: int = 0,
    seed: int = 0,
) -> Path:
    """A GGUF with a Q8_0 matrix, an F32 norm, and optionally a big F16 tensor to reach a size.

    `extra_bytes` (rounded to a 64-element row) makes files large enough to kill a
    pull midway; `seed` makes two files of the same shape differ in content.
    """
    rng = np.random.default_rng(seed)
    writer = GGUFWriter(path, arch)
    writer.add_name("puller-test")
    if context_length is not None:
        writer.add_context_length(context_length)
    if file_type is not None:
        writer.add_file_type(int(file_type))
    weights = rng.standard_normal((32, 64)).astype(np.float32)
    writer.add_tensor(
        "blk.0.attn_q.weight",
        quantize(weights, GGMLQuantizationType.Q8_0),
        raw_dtype=GGMLQuantizationType.Q8_0,
    )
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(64, dtype=np.float32))
    if extra_bytes:
        rows = max(1, extra_bytes // (64 * 2))
        writer.add_tensor("token_embd.weight", rng.standard_normal((rows, 64)).astype(np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def element_count(extra_bytes: int = 0) -> int:
    """The parameter count write_gguf's file reports for the same `extra_bytes`."""
    extra = max(1, extra_bytes // (64 * 2)) * 64 if extra_bytes else 0
    return 32 * 64 + 64 + extra
