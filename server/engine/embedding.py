"""Embeddings from an embedding model (BERT and friends) through one llama.cpp context.

Inputs are packed several sequences per decode. Embedding models attend
bidirectionally, so each input must fit whole in one micro-batch; the context
is created with n_ubatch == n_batch == the context size for that reason.
"""

from __future__ import annotations

import ctypes
import threading

import llama_cpp
import numpy as np

from .model import LoadedModel


class InputTooLong(ValueError):
    def __init__(self, index: int, tokens: int, limit: int) -> None:
        super().__init__(f"input {index} has {tokens} tokens; this model accepts at most {limit}")
        self.index, self.tokens, self.limit = index, tokens, limit


class Embedder:
    def __init__(self, model: LoadedModel, *, context_size: int, max_sequences: int, threads: int) -> None:
        self.model = model
        self.context_size = context_size
        self.max_sequences = max_sequences
        self._ctx = model.new_context(
            n_ctx=context_size, n_batch=context_size, n_ubatch=context_size, n_seq_max=max_sequences,
            threads=threads, kv_unified=True, embeddings=True,
        )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(context_size, 0, 1)
        self._lock = threading.Lock()  # one decode at a time on this context

    def tokenize(self, text: str) -> list[int]:
        return self.model.tokenize(text, add_special=True, parse_special=False)

    def embed(self, inputs: list[list[int]]) -> np.ndarray:
        """L2-normalised embeddings, one row per input (blocking; run it in a worker thread)."""
        for i, tokens in enumerate(inputs):
            if len(tokens) > self.context_size:
                raise InputTooLong(i, len(tokens), self.context_size)
        out = np.empty((len(inputs), self.model.info.n_embd), dtype=np.float32)
        with self._lock:
            start = 0
            while start < len(inputs):
                end = self._pack(inputs, start)
                self._decode_group(inputs[start:end], out[start:end])
                start = end
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def _pack(self, inputs: list[list[int]], start: int) -> int:
        """Index after the last input that fits in one batch starting at `start`."""
        used, end = 0, start
        while end < len(inputs) and end - start < self.max_sequences and used + len(inputs[end]) <= self.context_size:
            used += len(inputs[end])
            end += 1
        return end

    def _decode_group(self, group: list[list[int]], out: np.ndarray) -> None:
        batch = self._batch
        n = 0
        for seq, tokens in enumerate(group):
            for pos, token in enumerate(tokens):
                batch.token[n] = token
                batch.pos[n] = pos
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = True
                n += 1
        batch.n_tokens = n
        llama_cpp.llama_memory_clear(self._mem, True)
        status = llama_cpp.llama_decode(self._ctx, batch)
        if status != 0:
            raise RuntimeError(f"embedding decode failed (llama.cpp status {status})")
        n_embd = self.model.info.n_embd
        for seq in range(len(group)):
            ptr = llama_cpp.llama_get_embeddings_seq(self._ctx, seq)
            out[seq] = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(n_embd,))

    def close(self) -> None:
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
