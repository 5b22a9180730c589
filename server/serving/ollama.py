"""Ollama's /api/chat, /api/generate and /api/embed, translated onto the /v1 services.

Each Ollama request becomes the OpenAI request it means and runs through the
same ChatService, CompletionService and EmbeddingService as /v1: one
validation, one prompt path, one engine submission, so the two APIs cannot
drift. Only the wire shapes differ, and those are translated here.
"""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

import orjson
from pydantic import ValidationError
from starlette.requests import Request

from ..protocol import errors
from ..protocol import ollama as o
from ..protocol.chat import ChatCompletionRequest
from ..protocol.completions import CompletionRequest
from ..protocol.embeddings import EmbeddingRequest
from ..runtime import ModelRuntime
from . import generation as g
from .chat import ChatService
from .completions import CompletionService
from .defaults import RequestDefaults
from .embeddings import EmbeddingService


def created_at() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def model_not_found(name: str) -> errors.APIError:
    # Ollama's own sentence: clients (and users) know what to do with it.
    return errors.APIError(404, f'model "{name}" not found, try pulling it first', param="model",
                           code="model_not_found")


def resolve_name(runtime: ModelRuntime, name: str) -> str:
    """The accepted model id `name` means; Ollama clients add the implied `:latest` tag."""
    accepted = runtime.settings.accepted_names
    if name in accepted:
        return name
    base, sep, tag = name.rpartition(":")
    if sep and tag == "latest" and base in accepted:
        return base
    raise model_not_found(name)


def _validated(model: type, data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise errors.from_validation_error(exc) from None


def _sampling(options: o.Options | None) -> dict[str, Any]:
    """Ollama `options` as the OpenAI request fields they correspond to."""
    if options is None:
        return {}
    out = options.model_dump(exclude_none=True, include={
        "temperature", "top_p", "top_k", "min_p", "frequency_penalty", "presence_penalty", "seed", "stop",
    })
    if options.num_predict is not None and options.num_predict > 0:
        out["max_tokens"] = options.num_predict
    return out


def _response_format(fmt: o.Format) -> dict[str, Any] | None:
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": fmt}}


def _openai_message(message: o.Message, index: int) -> dict[str, Any]:
    if message.images:
        raise errors.invalid_request("This model does not accept images.", param=f"messages.{index}.images")
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": f"call_{index}_{i}", "type": "function",
             "function": {"name": c.function.name, "arguments": json.dumps(c.function.arguments)}}
            for i, c in enumerate(message.tool_calls)
        ]
        out["content"] = message.content or None
    if message.role == "tool" and message.tool_name:
        out["name"] = message.tool_name
    return out


def _check_thinking(req: o.ChatRequest | o.GenerateRequest) -> None:
    if req.think not in (None, False):
        raise errors.invalid_request(f'"{req.model}" does not support thinking', param="think")


def _fit_context(runtime: ModelRuntime, plan: g.GenerationRequest, num_ctx: int | None) -> g.GenerationRequest:
    """Honour `num_ctx` within the slot's context: prompt plus completion stay inside it."""
    if num_ctx is None:
        return plan
    assert runtime.engine is not None
    window = min(num_ctx, runtime.engine.context_per_sequence)
    prompt = len(plan.prompt)
    if prompt >= window:
        raise errors.context_length_exceeded(window, prompt + 1, prompt, 1)
    room = window - prompt
    if plan.max_tokens is None or plan.max_tokens > room:
        return dataclasses.replace(plan, max_tokens=room)
    return plan


@dataclasses.dataclass
class _Clock:
    """Ollama reports where the time went; durations are nanoseconds."""

    started: float
    first: float | None = None

    def timings(self, done_reason: str, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        end = time.perf_counter()
        first = self.first or end
        return {
            "done_reason": done_reason,
            "total_duration": int((end - self.started) * 1e9),
            "load_duration": 0,
            "prompt_eval_count": prompt_tokens,
            "prompt_eval_duration": int((first - self.started) * 1e9),
            "eval_count": completion_tokens,
            "eval_duration": int((end - first) * 1e9),
        }


def _done_reason(openai_reason: str | None) -> str:
    return "length" if openai_reason == "length" else "stop"


def _ollama_calls(calls: list[Any]) -> list[dict[str, Any]]:
    out = []
    for call in calls:
        function = call["function"] if isinstance(call, dict) else call.function.model_dump()
        try:
            arguments = json.loads(function.get("arguments") or "{}")
        except ValueError:
            arguments = {}
        out.append({"function": {"name": function["name"], "arguments": arguments}})
    return out


def ndjson(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


class OllamaService:
    def __init__(self, runtime: ModelRuntime, chat: ChatService, completions: CompletionService,
                 embeddings: EmbeddingService, defaults: RequestDefaults) -> None:
        self.runtime = runtime
        self.defaults = defaults
        self.chat_service = chat
        self.completion_service = completions
        self.embedding_service = embeddings

    # -- chat and generate ---------------------------------------------------------

    def _load_only(self, name: str, keep_alive: float | str | None) -> dict[str, Any]:
        """An empty request loads the model (here: checks it is ready), as Ollama does."""
        self.runtime.require_ready()
        unload = keep_alive in (0, "0", "0s", "0m")
        return {"model": name, "created_at": created_at(), "done": True,
                "done_reason": "unload" if unload else "load"}

    def _chat_request(self, req: o.ChatRequest, name: str, messages: list[dict[str, Any]]) -> ChatCompletionRequest:
        data: dict[str, Any] = {"model": name, "messages": messages, **_sampling(req.options),
                                "stream": req.stream, "stream_options": {"include_usage": True} if req.stream else None}
        if (fmt := _response_format(req.format)) is not None:
            data["response_format"] = fmt
        tools = getattr(req, "tools", None)
        if tools:
            data["tools"] = [t.model_dump(exclude_none=True) for t in tools]
        return self.defaults.apply(_validated(ChatCompletionRequest, data))  # type: ignore[return-value]

    async def chat(self, req: o.ChatRequest, request: Request) -> dict[str, Any] | AsyncIterator[bytes]:
        clock = _Clock(time.perf_counter())
        name = resolve_name(self.runtime, req.model)
        _check_thinking(req)
        if not req.messages:
            return self._load_only(req.model, req.keep_alive)
        messages = [_openai_message(m, i) for i, m in enumerate(req.messages)]
        return await self._run_chat(req, self._chat_request(req, name, messages), request, clock, chat=True)

    async def generate(self, req: o.GenerateRequest, request: Request) -> dict[str, Any] | AsyncIterator[bytes]:
        clock = _Clock(time.perf_counter())
        name = resolve_name(self.runtime, req.model)
        _check_thinking(req)
        if req.images:
            raise errors.invalid_request("This model does not accept images.", param="images")
        if req.template:
            raise errors.invalid_request("Template overrides are not supported; the model's own chat template "
                                         "is used.", param="template")
        if not req.prompt:
            return self._load_only(req.model, req.keep_alive)
        if req.raw:
            return await self._run_raw(req, name, request, clock)
        messages = ([{"role": "system", "content": req.system}] if req.system else [])
        messages.append({"role": "user", "content": req.prompt})
        chat_req = o.ChatRequest(model=req.model, format=req.format, options=req.options, stream=req.stream)
        return await self._run_chat(chat_req, self._chat_request(chat_req, name, messages), request, clock,
                                    chat=False)

    async def _run_chat(self, req: o.ChatRequest, oreq: ChatCompletionRequest, request: Request, clock: _Clock,
                        *, chat: bool) -> dict[str, Any] | AsyncIterator[bytes]:
        service = self.chat_service
        plan, forced = service._prepare(oreq)
        plan = _fit_context(self.runtime, plan, req.options.num_ctx if req.options else None)
        if oreq.stream:
            body = service._stream_body(oreq, service._start_stream(plan), forced)
            return self._relay(body, req.model, clock, chat=chat)
        result, finished = await service._complete(plan, request)
        clock.first = result.first_token_at
        message, reason = service.answer(oreq, forced, result.text, finished)
        out: dict[str, Any] = {"model": req.model, "created_at": created_at()}
        if chat:
            reply: dict[str, Any] = {"role": "assistant", "content": message.content or ""}
            if message.tool_calls:
                reply["tool_calls"] = _ollama_calls(message.tool_calls)
            out["message"] = reply
        else:
            out["response"] = message.content or ""
        out["done"] = True
        out.update(clock.timings(_done_reason(reason), finished.prompt_tokens, finished.completion_tokens))
        return out

    async def _run_raw(self, req: o.GenerateRequest, name: str, request: Request,
                       clock: _Clock) -> dict[str, Any] | AsyncIterator[bytes]:
        """`raw`: the prompt goes to the model untemplated, as /v1/completions sends it."""
        if req.format not in (None, ""):
            raise errors.invalid_request("'format' needs the chat template; it cannot be used with 'raw'.",
                                         param="format")
        data: dict[str, Any] = {"model": name, "prompt": req.prompt, "max_tokens": None, **_sampling(req.options),
                                "stream": req.stream,
                                "stream_options": {"include_usage": True} if req.stream else None}
        creq: CompletionRequest = self.defaults.apply(_validated(CompletionRequest, data))  # type: ignore[assignment]
        service = self.completion_service
        plan, _ = service._prepare(creq)
        plan = _fit_context(self.runtime, plan, req.options.num_ctx if req.options else None)
        if creq.stream:
            return self._relay(service._stream_body(creq, service._start_stream(plan), ""), req.model, clock,
                               chat=False)
        result, finished = await service._complete(plan, request)
        clock.first = result.first_token_at
        return {"model": req.model, "created_at": created_at(), "response": result.text, "done": True,
                **clock.timings(_done_reason(finished.reason), finished.prompt_tokens, finished.completion_tokens)}

    async def _relay(self, body: AsyncIterator[str | errors.APIError], model: str, clock: _Clock, *,
                     chat: bool) -> AsyncIterator[bytes]:
        """Re-frame the shared service's OpenAI stream chunks as Ollama's NDJSON messages."""
        reason: str | None = None
        try:
            async for frame in body:
                if isinstance(frame, errors.APIError):
                    yield o.error_body(frame.message) + b"\n"
                    return
                if frame == "[DONE]":
                    continue
                chunk = orjson.loads(frame)
                usage = chunk.get("usage")
                if usage is not None and not chunk.get("choices"):
                    final = {"model": model, "created_at": created_at(), "done": True,
                             **clock.timings(_done_reason(reason), usage["prompt_tokens"], usage["completion_tokens"])}
                    if chat:
                        final["message"] = {"role": "assistant", "content": ""}
                    else:
                        final["response"] = ""
                    yield ndjson(final)
                    continue
                choice = chunk["choices"][0]
                reason = choice.get("finish_reason") or reason
                if chat:
                    delta = choice.get("delta", {})
                    text, calls = delta.get("content") or "", delta.get("tool_calls")
                else:
                    text, calls = choice.get("text") or "", None
                if not text and not calls:
                    continue
                if clock.first is None:
                    clock.first = time.perf_counter()
                message: dict[str, Any] = {"model": model, "created_at": created_at()}
                if chat:
                    message["message"] = {"role": "assistant", "content": text}
                    if calls:
                        message["message"]["tool_calls"] = _ollama_calls(calls)
                else:
                    message["response"] = text
                message["done"] = False
                yield ndjson(message)
        finally:
            await body.aclose()  # type: ignore[attr-defined]  # the client left: cancel the generation

    # -- embeddings ------------------------------------------------------------------

    async def embed(self, req: o.EmbedRequest) -> o.EmbedResponse:
        started = time.perf_counter()
        name = resolve_name(self.runtime, req.model)
        data: dict[str, Any] = {"model": name, "input": req.input}
        if req.dimensions is not None:
            data["dimensions"] = req.dimensions
        result = await self.embedding_service.embed(_validated(EmbeddingRequest, data))
        return o.EmbedResponse(
            model=req.model, embeddings=[e.embedding for e in result.data],  # type: ignore[misc]
            total_duration=int((time.perf_counter() - started) * 1e9), load_duration=0,
            prompt_eval_count=result.usage.prompt_tokens,
        )

    async def embeddings(self, req: o.EmbeddingsRequest) -> o.EmbeddingsResponse:
        name = resolve_name(self.runtime, req.model)
        result = await self.embedding_service.embed(_validated(EmbeddingRequest, {"model": name, "input": req.prompt}))
        return o.EmbeddingsResponse(embedding=result.data[0].embedding)  # type: ignore[arg-type]
