"""Per-sequence sampling: a llama.cpp sampler chain built from request parameters."""

from __future__ import annotations

import ctypes
import random
from dataclasses import dataclass, field

import llama_cpp
import numpy as np

from .model import LoadedModel


@dataclass(frozen=True)
class SamplingParams:
    """What one request asks of the sampler. Defaults match the OpenAI API:
    no repetition penalty, so temperature 0 is pure greedy decoding."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict[int, float] = field(default_factory=dict)
    grammar: str | None = None
    # Number of alternatives to report per token; None means no logprobs at all.
    logprobs: int | None = None


@dataclass(frozen=True)
class TokenLogprobs:
    logprob: float
    top: list[tuple[int, float]]


class Sampler:
    """A sampler chain owned by one sequence; not thread-safe, used by the engine thread only."""

    def __init__(self, model: LoadedModel, params: SamplingParams) -> None:
        self.params = params
        self._n_vocab = model.info.n_vocab
        self._chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda s: llama_cpp.llama_sampler_chain_add(self._chain, s)  # noqa: E731
        if params.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
            for i, (token, bias) in enumerate(params.logit_bias.items()):
                biases[i].token, biases[i].bias = token, bias
            add(llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(biases), biases))
        if params.frequency_penalty or params.presence_penalty:
            add(llama_cpp.llama_sampler_init_penalties(
                self._n_vocab, 64, 1.0, params.frequency_penalty, params.presence_penalty))
        if params.grammar is not None:
            grammar = llama_cpp.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not grammar:
                self.close()
                raise ValueError("the grammar could not be parsed")
            add(grammar)
        if params.temperature <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx: llama_cpp.llama_context_p, index: int) -> int:
        """Sample from the logits of batch row `index` and feed the token back into the chain."""
        return llama_cpp.llama_sampler_sample(self._chain, ctx, index)

    def logprobs(self, ctx: llama_cpp.llama_context_p, index: int, token: int) -> TokenLogprobs:
        """Log-probabilities of the model's own distribution (before sampling transforms)."""
        ptr = llama_cpp.llama_get_logits_ith(ctx, index)
        logits = np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctypes.c_float)), shape=(self._n_vocab,))
        shifted = logits - logits.max()
        logsumexp = float(np.log(np.exp(shifted).sum()))
        n_top = self.params.logprobs or 0
        top: list[tuple[int, float]] = []
        if n_top:
            ids = np.argpartition(-shifted, n_top)[:n_top]
            ids = ids[np.argsort(-shifted[ids])]
            top = [(int(i), float(shifted[i]) - logsumexp) for i in ids]
        return TokenLogprobs(logprob=float(shifted[token]) - logsumexp, top=top)

    def close(self) -> None:
        if self._chain:
            llama_cpp.llama_sampler_free(self._chain)
            self._chain = None
