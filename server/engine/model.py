"""A GGUF model loaded into llama.cpp: weights, tokenizer and chat template."""

from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp import _internals
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .backends import backend_dirs, load_dynamic_backends

# Used when a model ships no chat template; llama.cpp's own default is ChatML too.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    if not _backend_ready:
        # llama-cpp-python prints every llama.cpp log line unless its logger says otherwise.
        logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
        llama_cpp.llama_backend_init()
        if load_dynamic_backends() == 0:
            raise RuntimeError(f"llama.cpp has no compute device: no backend library in {', '.join(map(str, backend_dirs()))}")
        _backend_ready = True


@dataclass(frozen=True)
class ModelInfo:
    path: str
    architecture: str
    parameters: int
    size_bytes: int
    n_vocab: int
    n_embd: int
    context_length: int
    embedding_only: bool


class LoadedModel:
    """Owns the llama_model; tokenizes, detokenizes and renders chat prompts.

    Contexts (KV caches) are created by the engines that use the model.
    """

    def __init__(self, path: str | os.PathLike[str], *, gpu_layers: int = 0, weight_repacking: bool = False) -> None:
        _init_backend()
        params = llama_cpp.llama_model_default_params()
        params.use_extra_bufts = weight_repacking
        # -1 means "all layers", as in the CRD's gpuLayers.
        params.n_gpu_layers = 0x7FFFFFFF if gpu_layers < 0 else gpu_layers
        self._model = _internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        self.handle = self._model.model
        self.vocab = self._model.vocab
        self.metadata: dict[str, str] = self._model.metadata()
        arch = self.metadata.get("general.architecture", "unknown")
        self.info = ModelInfo(
            path=str(path),
            architecture=arch,
            parameters=self._model.n_params(),
            size_bytes=Path(path).stat().st_size,
            n_vocab=self._model.n_vocab(),
            n_embd=self._model.n_embd(),
            context_length=self._model.n_ctx_train(),
            # Embedding models declare a pooling type (BERT, nomic, *-embedding models).
            embedding_only=f"{arch}.pooling_type" in self.metadata,
        )
        self.bos_token = self._model.token_bos()
        self.eos_token = self._model.token_eos()
        self._piece_buf = ctypes.create_string_buffer(256)
        self._chat: Jinja2ChatFormatter | None = None

    def new_context(
        self, *, n_ctx: int, n_batch: int, n_ubatch: int, n_seq_max: int, threads: int,
        kv_unified: bool, embeddings: bool = False,
    ) -> llama_cpp.llama_context_p:
        """A llama.cpp context (KV cache and compute buffers) over this model."""
        params = llama_cpp.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_seq_max = n_ctx, n_batch, n_ubatch, n_seq_max
        params.n_threads = params.n_threads_batch = threads
        params.kv_unified = kv_unified
        params.embeddings = embeddings
        params.no_perf = True
        ctx = llama_cpp.llama_init_from_model(self.handle, params)
        if not ctx:
            raise RuntimeError(f"llama.cpp could not create a context of {n_ctx} tokens (out of memory?)")
        return ctx

    # -- tokens ---------------------------------------------------------------

    def tokenize(self, text: str, *, add_special: bool = True, parse_special: bool = False) -> list[int]:
        return self._model.tokenize(text.encode("utf-8"), add_special, parse_special)

    def token_bytes(self, token: int) -> bytes:
        n = llama_cpp.llama_token_to_piece(self.vocab, token, self._piece_buf, len(self._piece_buf), 0, False)
        if n < 0:  # the piece is longer than the buffer
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece_buf.raw[:n]

    def token_text(self, token: int) -> str:
        return self.token_bytes(token).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    # -- chat -----------------------------------------------------------------

    @property
    def chat_template(self) -> str:
        return self.metadata.get("tokenizer.chat_template") or CHATML_TEMPLATE

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        """Apply the model's Jinja chat template (raises ValueError on template errors)."""
        if self._chat is None:
            self._chat = Jinja2ChatFormatter(
                template=self.chat_template,
                eos_token=self.special_text(self.eos_token),
                bos_token=self.special_text(self.bos_token),
            )
        return self._chat(messages=messages, tools=tools).prompt

    def special_text(self, token: int) -> str:
        if token < 0:
            return ""
        return self._model.token_get_text(token)

    def close(self) -> None:
        self._model.close()
