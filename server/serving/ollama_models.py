"""Ollama's /api/tags, /api/ps and /api/show, from the served GGUF's own metadata."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone
from typing import Any

from gguf import LlamaFileType

from ..engine.model import LoadedModel
from ..protocol import ollama as o
from ..runtime import ModelRuntime, State
from .defaults import RequestDefaults
from .ollama import resolve_name

# Metadata too large or too internal for model_info (Ollama leaves the vocabulary out too).
_HIDDEN_PREFIXES = ("tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                    "tokenizer.ggml.merges", "tokenizer.chat_template")
# One server keeps its model loaded until it stops; Ollama clients want a time, so: far ahead.
_NEVER = timedelta(days=365 * 100)


def parameter_size(count: int) -> str:
    """Ollama's short form: 8.0B, 494.0M, 4.2M."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f}{unit}"
    return str(count)


def quantization_level(metadata: dict[str, str]) -> str:
    raw = metadata.get("general.file_type", "")
    if raw.isdigit() and int(raw) in LlamaFileType._value2member_map_:
        return LlamaFileType(int(raw)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    return "unknown"


def _typed(value: str) -> Any:
    # llama.cpp hands every metadata value over as text; numbers read back as numbers.
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)


class OllamaModels:
    def __init__(self, runtime: ModelRuntime, defaults: RequestDefaults) -> None:
        self.runtime = runtime
        self.defaults = defaults

    def _loaded(self) -> LoadedModel | None:
        return self.runtime.model if self.runtime.state is State.READY else None

    def _digest(self) -> str:
        # An identity of the file (name, size, mtime), not a content hash: /api/tags must stay cheap.
        path = self.runtime.settings.model_path
        try:
            stat = path.stat()
            key = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        except OSError:
            key = str(path)
        return hashlib.sha256(key.encode()).hexdigest()

    def _modified_at(self) -> str:
        try:
            mtime = self.runtime.settings.model_path.stat().st_mtime
        except OSError:
            mtime = float(self.runtime.created)
        return datetime.fromtimestamp(mtime, timezone.utc).isoformat()

    def _details(self, model: LoadedModel | None) -> o.ModelDetails:
        if model is None:
            return o.ModelDetails(family="", families=[], parameter_size="", quantization_level="")
        arch = model.info.architecture
        return o.ModelDetails(family=arch, families=[arch], parameter_size=parameter_size(model.info.parameters),
                              quantization_level=quantization_level(model.metadata))

    def _size(self) -> int:
        try:
            return self.runtime.settings.model_path.stat().st_size
        except OSError:
            return 0

    def _names(self) -> list[str]:
        s = self.runtime.settings
        return [s.model_id, *s.aliases]

    def tags(self) -> o.ListResponse:
        details, digest, modified, size = self._details(self._loaded()), self._digest(), self._modified_at(), self._size()
        return o.ListResponse(models=[
            o.ListedModel(name=n, model=n, modified_at=modified, size=size, digest=digest, details=details)
            for n in self._names()
        ])

    def ps(self) -> o.ProcessResponse:
        model = self._loaded()
        if model is None:
            return o.ProcessResponse(models=[])
        rt = self.runtime
        context = rt.engine.context_per_sequence if rt.engine else (rt.embedder.context_size if rt.embedder else 0)
        vram = self._size() if rt.settings.gpu_layers != 0 else 0
        expires = (datetime.now(timezone.utc) + _NEVER).isoformat()
        return o.ProcessResponse(models=[o.RunningModel(
            name=n, model=n, size=self._size(), digest=self._digest(), details=self._details(model),
            expires_at=expires, size_vram=vram, context_length=context,
        ) for n in self._names()[:1]])

    def show(self, req: o.ShowRequest) -> o.ShowResponse:
        resolve_name(self.runtime, req.target)
        self.runtime.require_ready()
        model = self.runtime.model
        assert model is not None
        info: dict[str, Any] = {k: _typed(v) for k, v in sorted(model.metadata.items())
                                if not k.startswith(_HIDDEN_PREFIXES)}
        info["general.parameter_count"] = model.info.parameters
        capabilities = ["embedding"] if model.info.embedding_only else ["completion", "tools"]
        template = "" if model.info.embedding_only else model.chat_template
        parameters = self.defaults.as_parameters()
        modelfile = f"# Served by localmodel from {self.runtime.settings.model_path.name}\nFROM {model.info.path}\n"
        modelfile += "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
        return o.ShowResponse(modelfile=modelfile, parameters=parameters, template=template,
                              details=self._details(model), model_info=info, capabilities=capabilities,
                              modified_at=self._modified_at())
