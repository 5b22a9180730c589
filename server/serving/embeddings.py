"""/v1/embeddings."""

from __future__ import annotations

import asyncio
import base64

from ..engine.embedding import InputTooLong
from ..metrics import ServerMetrics
from ..protocol import errors
from ..protocol.common import Usage
from ..protocol.embeddings import Embedding, EmbeddingRequest, EmbeddingResponse
from ..runtime import ModelRuntime


class EmbeddingService:
    def __init__(self, runtime: ModelRuntime, metrics: ServerMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    async def embed(self, req: EmbeddingRequest) -> EmbeddingResponse:
        rt = self.runtime
        rt.check_model_name(req.model)
        rt.require_ready()
        embedder = rt.embedder
        if embedder is None:
            raise errors.invalid_request(
                f"'{req.model}' is a generative model without embeddings; serve an embedding model "
                "(for example a BERT GGUF) for /v1/embeddings.", param="model", code="unsupported_model",
            )
        inputs = _token_lists(req.input, embedder.tokenize, rt.model.info.n_vocab if rt.model else 0)
        try:
            vectors = await asyncio.to_thread(embedder.embed, inputs)
        except InputTooLong as exc:
            raise errors.invalid_request(str(exc), param=f"input.{exc.index}", code="context_length_exceeded") from None
        if req.dimensions is not None:
            if req.dimensions > vectors.shape[1]:
                raise errors.invalid_request(
                    f"'dimensions' is {req.dimensions}, but this model's embeddings have {vectors.shape[1]}.",
                    param="dimensions",
                )
            vectors = vectors[:, : req.dimensions]
        n_tokens = sum(len(t) for t in inputs)
        self.metrics.prompt_tokens.inc(n_tokens)
        data = [
            Embedding(index=i, embedding=base64.b64encode(v.astype("<f4").tobytes()).decode()
                      if req.encoding_format == "base64" else v.tolist())
            for i, v in enumerate(vectors)
        ]
        return EmbeddingResponse(
            data=data, model=rt.settings.model_id, usage=Usage(prompt_tokens=n_tokens, total_tokens=n_tokens)
        )


def _token_lists(value: str | list, tokenize, n_vocab: int) -> list[list[int]]:
    if isinstance(value, str):
        return [tokenize(value)]
    if value and isinstance(value[0], int):
        lists = [list(value)]
    elif value and isinstance(value[0], list):
        lists = [list(v) for v in value]
    else:
        return [tokenize(text) for text in value]
    for i, tokens in enumerate(lists):
        if any(not 0 <= t < n_vocab for t in tokens):
            raise errors.invalid_request(f"input {i} holds a token id outside the vocabulary.", param=f"input.{i}")
    return lists
