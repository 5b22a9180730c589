"""Steps shared by chat and text completions: limits, sampling, submission, collection."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf
from starlette.requests import Request

from ..engine.batching import Delta, EngineStopped, Finished, Generation, GenerationRequest, TokenOut
from ..engine.model import LoadedModel
from ..engine.sampling import SamplingParams
from ..metrics import ServerMetrics
from ..protocol import errors
from ..protocol.common import Usage
from ..protocol.sampling import SamplingFields
from ..runtime import ModelRuntime


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def grammar_for_schema(schema: dict[str, Any], param: str) -> str:
    try:
        return json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises assorted types on bad schemas
        raise errors.invalid_request(f"Invalid JSON schema: {exc}", param=param, code="invalid_json_schema") from None


JSON_OBJECT_GRAMMAR = JSON_GBNF


def sampling_params(req: SamplingFields, *, grammar: str | None, logprobs: int | None) -> SamplingParams:
    return SamplingParams(
        temperature=req.temperature,
        top_p=req.top_p,
        top_k=req.top_k,
        min_p=req.min_p,
        frequency_penalty=req.frequency_penalty,
        presence_penalty=req.presence_penalty,
        seed=req.seed,
        logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
        grammar=grammar,
        logprobs=logprobs,
    )


def plan_generation(
    runtime: ModelRuntime, prompt: list[int], params: SamplingParams, limit: int | None, stop: list[str],
    *, param: str,
) -> GenerationRequest:
    """Check the prompt against the context and build the engine request."""
    assert runtime.engine is not None
    context = runtime.engine.context_per_sequence
    if not prompt:
        raise errors.invalid_request("The prompt is empty after tokenization.", param=param)
    if len(prompt) >= context or (limit is not None and len(prompt) + limit > context):
        completion = limit or 1
        raise errors.context_length_exceeded(context, len(prompt) + completion, len(prompt), completion)
    vocab = runtime.model.info.n_vocab if runtime.model else 0
    bad = [t for t in list(params.logit_bias) + prompt if not 0 <= t < vocab]
    if bad:
        raise errors.invalid_request(f"Token id {bad[0]} is outside the vocabulary (0..{vocab - 1}).", param=param)
    return GenerationRequest(prompt=prompt, sampling=params, max_tokens=limit, stop=stop)


def submit(runtime: ModelRuntime, request: GenerationRequest) -> Generation:
    assert runtime.engine is not None
    try:
        return runtime.engine.submit(request)
    except EngineStopped:
        raise errors.service_unavailable("The server is shutting down.", code="server_draining") from None


@dataclass
class Collected:
    text: str = ""
    tokens: list[TokenOut] = field(default_factory=list)
    finished: Finished | None = None
    first_token_at: float | None = None  # perf_counter() when the first text arrived


async def collect(gen: Generation, request: Request, on_first_token: Any = None) -> Collected:
    """Run a generation to the end; cancel it if the client goes away first."""
    watcher = asyncio.create_task(_cancel_on_disconnect(request, gen))
    out = Collected()
    parts: list[str] = []
    try:
        async for event in gen:
            if isinstance(event, Delta):
                if not parts:
                    out.first_token_at = time.perf_counter()
                    if on_first_token:
                        on_first_token()
                parts.append(event.text)
                out.tokens.extend(event.tokens)
            else:
                out.finished = event
    finally:
        watcher.cancel()
        gen.cancel()  # no-op once finished; frees the slot if we were interrupted
    out.text = "".join(parts)
    return out


async def _cancel_on_disconnect(request: Request, gen: Generation) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            gen.cancel()
            return


async def stream_events(gen: Generation) -> AsyncIterator[Delta | Finished]:
    """Iterate a generation; closing the iterator (client gone) cancels it."""
    try:
        async for event in gen:
            yield event
    finally:
        gen.cancel()


def usage(finished: Finished) -> Usage:
    return Usage(
        prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens,
        total_tokens=finished.prompt_tokens + finished.completion_tokens,
    )


def raise_if_failed(finished: Finished | None) -> Finished:
    if finished is not None and finished.reason == "cancelled":
        # The client went away; 499 is what the access log and metrics will show.
        raise errors.APIError(499, "Client closed the request.", code="client_closed_request")
    if finished is None or finished.reason == "error":
        raise errors.internal_error()
    return finished


class GenerationService:
    """What chat and text completions share: admission checks and token accounting."""

    endpoint: str

    def __init__(self, runtime: ModelRuntime, metrics: ServerMetrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    def _admit(self, model_name: str) -> LoadedModel:
        rt = self.runtime
        rt.check_model_name(model_name)
        rt.require_ready()
        if rt.engine is None or rt.model is None:
            raise errors.invalid_request(
                f"'{model_name}' is an embedding model; use /v1/embeddings.", param="model", code="unsupported_model"
            )
        return rt.model

    async def _complete(self, plan: GenerationRequest, request: Request) -> tuple[Collected, Finished]:
        """Run a request to its end (non-streaming)."""
        started = time.perf_counter()
        gen = submit(self.runtime, plan)
        result = await collect(gen, request, on_first_token=lambda: self._first_token(started))
        finished = raise_if_failed(result.finished)
        self._count(finished)
        return result, finished

    def _start_stream(self, plan: GenerationRequest) -> AsyncIterator[Delta | Finished]:
        """Admit a streaming request now (so refusals are HTTP statuses) and return its events."""
        started = time.perf_counter()
        gen = submit(self.runtime, plan)
        return self._observed(gen, started)

    async def _observed(self, gen: Generation, started: float) -> AsyncIterator[Delta | Finished]:
        first = True
        async for event in stream_events(gen):
            if isinstance(event, Delta) and first:
                self._first_token(started)
                first = False
            elif isinstance(event, Finished) and event.reason != "error":
                self._count(event)
            yield event

    def _first_token(self, started: float) -> None:
        self.metrics.ttft.labels(self.endpoint).observe(time.perf_counter() - started)

    def _count(self, finished: Finished) -> None:
        self.metrics.prompt_tokens.inc(finished.prompt_tokens)
        self.metrics.completion_tokens.inc(finished.completion_tokens)
        self.metrics.cached_prompt_tokens.inc(finished.cached_tokens)
