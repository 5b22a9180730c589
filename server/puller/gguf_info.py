"""Read what the status reports about a model from its GGUF header.

GGUFReader memory-maps the file and parses only the header and tensor table,
so this costs page faults on the first few megabytes, not a read of the model.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf import GGUFReader, Keys, LlamaFileType

from .errors import PullError, Reason

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class GGUFInfo:
    architecture: str
    parameters: int
    quantization: str
    context_length: int | None
    size_bytes: int

    def to_status(self) -> dict[str, Any]:
        """The `status.gguf` object of a LocalModel (camelCase, as in the CRD)."""
        status: dict[str, Any] = {
            "architecture": self.architecture,
            "parameters": self.parameters,
            "quantization": self.quantization,
            "sizeBytes": self.size_bytes,
        }
        if self.context_length is not None:
            status["contextLength"] = self.context_length
        return status


def read_gguf_info(path: Path) -> GGUFInfo:
    """Parse the header; a file that is not a complete GGUF model raises InvalidModel."""
    with path.open("rb") as f:
        if f.read(4) != GGUF_MAGIC:
            raise PullError(Reason.INVALID_MODEL, f"{path.name} is not a GGUF file (bad magic number)")
    try:
        reader = GGUFReader(path)
        return _summarize(reader, path.stat().st_size)
    except PullError:
        raise
    except Exception as err:  # noqa: BLE001 - any parse failure of untrusted bytes means "not a valid model"
        raise PullError(Reason.INVALID_MODEL, f"{path.name} is not a valid GGUF model: {err}") from None


def _summarize(reader: GGUFReader, size: int) -> GGUFInfo:
    architecture = _field(reader, Keys.General.ARCHITECTURE)
    if not isinstance(architecture, str) or not architecture:
        raise PullError(Reason.INVALID_MODEL, "the GGUF header has no general.architecture")
    if not reader.tensors:
        raise PullError(Reason.INVALID_MODEL, "the GGUF file holds no tensors")
    end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    if end > size:
        raise PullError(Reason.INVALID_MODEL, f"the GGUF file is truncated: tensors end at byte {end}, file has {size}")
    context = _field(reader, Keys.LLM.CONTEXT_LENGTH.format(arch=architecture))
    return GGUFInfo(
        architecture=architecture,
        parameters=sum(int(t.n_elements) for t in reader.tensors),
        quantization=_quantization(reader),
        context_length=int(context) if isinstance(context, int) else None,
        size_bytes=size,
    )


def _quantization(reader: GGUFReader) -> str:
    """general.file_type as llama.cpp names it (Q8_0, F16); else the type holding most bytes."""
    file_type = _field(reader, Keys.General.FILE_TYPE)
    if isinstance(file_type, int) and file_type in LlamaFileType._value2member_map_:
        kind = LlamaFileType(file_type)
        if kind is not LlamaFileType.GUESSED:
            return kind.name.removeprefix("MOSTLY_").removeprefix("ALL_")
    by_bytes: Counter[str] = Counter()
    for tensor in reader.tensors:
        by_bytes[tensor.tensor_type.name] += int(tensor.n_bytes)
    return by_bytes.most_common(1)[0][0]


def _field(reader: GGUFReader, key: str) -> Any:
    field = reader.get_field(key)
    return None if field is None else field.contents()
