"""/v1/chat/completions: chat template, tools, structured output, streaming."""

from __future__ import annotations

from typing import Any, AsyncIterator

from starlette.requests import Request

from ..engine.batching import Delta, TokenOut
from ..engine.model import LoadedModel
from ..protocol import errors
from ..protocol.chat import (
    ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta,
    ResponseMessage, ToolCallDelta,
)
from ..protocol.common import ChoiceLogprobs, TokenLogprob, TopLogprob
from . import generation as g
from .tools import TOOL_CALL_PREFIXES, forced_grammar, offered_tools, parse_tool_calls

class ChatService(g.GenerationService):
    endpoint = "chat"

    def _prepare(self, req: ChatCompletionRequest) -> tuple[g.GenerationRequest, bool]:
        rt = self.runtime
        model = self._admit(req.model)
        forced = forced_grammar(req)
        grammar = forced or self._format_grammar(req)
        messages = [_template_message(m) for m in req.messages]
        try:
            text = model.render_chat(messages, tools=offered_tools(req))
        except Exception as exc:  # jinja raises many types; the message tells the client what the template rejected
            raise errors.invalid_request(f"The chat template rejected the messages: {exc}", param="messages") from None
        prompt = _tokenize_chat(model, text)
        logprobs = (req.top_logprobs or 0) if req.logprobs else None
        params = g.sampling_params(req, grammar=grammar, logprobs=logprobs)
        plan = g.plan_generation(rt, prompt, params, req.completion_limit, req.stop_list, param="messages")
        return plan, forced is not None

    @staticmethod
    def _format_grammar(req: ChatCompletionRequest) -> str | None:
        fmt = req.response_format
        if fmt is None or fmt.type == "text":
            return None
        if fmt.type == "json_object":
            return g.JSON_OBJECT_GRAMMAR
        assert fmt.json_schema is not None
        schema = fmt.json_schema.schema_ or {"type": "object"}
        return g.grammar_for_schema(schema, "response_format.json_schema")

    async def complete(self, req: ChatCompletionRequest, request: Request) -> ChatCompletion:
        plan, forced = self._prepare(req)
        result, finished = await self._complete(plan, request)
        message, reason = self.answer(req, forced, result.text, finished)
        return ChatCompletion(
            id=g.new_id("chatcmpl"), created=g.now(), model=self.runtime.settings.model_id,
            choices=[ChatChoice(message=message, finish_reason=reason,
                                logprobs=self._logprobs(result.tokens) if req.logprobs else None)],
            usage=g.usage(finished),
        )

    @staticmethod
    def answer(req: ChatCompletionRequest, forced: bool, text: str, finished: g.Finished) -> tuple[ResponseMessage, str]:
        """The assistant message and finish reason of a whole output: tool calls or prose."""
        calls = parse_tool_calls(text, req) if (forced or req.tools) else None
        if calls:
            return ResponseMessage(content=None, tool_calls=calls), "tool_calls"
        return ResponseMessage(content=text), "length" if finished.reason == "length" else "stop"

    async def stream(self, req: ChatCompletionRequest) -> AsyncIterator[str | errors.APIError]:
        """Validate now (errors become HTTP statuses), then return the SSE body."""
        plan, forced = self._prepare(req)
        return self._stream_body(req, self._start_stream(plan), forced)

    async def _stream_body(self, req: ChatCompletionRequest, events: AsyncIterator[g.Delta | g.Finished],
                           forced: bool) -> AsyncIterator[str | errors.APIError]:
        chunk_id, created, model = g.new_id("chatcmpl"), g.now(), self.runtime.settings.model_id

        def chunk(delta: ChatDelta, reason: str | None = None, logprobs: ChoiceLogprobs | None = None) -> str:
            return ChatCompletionChunk(
                id=chunk_id, created=created, model=model,
                choices=[ChatChunkChoice(delta=delta, finish_reason=reason, logprobs=logprobs)],
            ).model_dump_json(exclude_none=True)

        yield chunk(ChatDelta(role="assistant", content=""))
        # With tools on offer, output that starts like a call is held back and parsed at the end;
        # the decision is taken once, on the first visible text.
        held: list[str] | None = [] if forced else None
        undecided = held is None and bool(req.tools) and req.tool_choice != "none"
        async for event in events:
            if isinstance(event, Delta):
                if undecided and event.text.strip():
                    undecided = False
                    if event.text.lstrip().startswith(TOOL_CALL_PREFIXES):
                        held = []
                if held is not None:
                    held.append(event.text)
                    continue
                logprobs = self._logprobs(event.tokens) if req.logprobs else None
                yield chunk(ChatDelta(content=event.text), logprobs=logprobs)
                continue
            if event.reason == "error":
                yield errors.internal_error()  # each front frames it in its own protocol
                return
            reason = "length" if event.reason == "length" else "stop"
            if held is not None:
                text = "".join(held)
                calls = parse_tool_calls(text, req)
                if calls:
                    deltas = [ToolCallDelta(index=i, id=c.id, type="function", function=c.function)
                              for i, c in enumerate(calls)]
                    yield chunk(ChatDelta(tool_calls=deltas))
                    reason = "tool_calls"
                elif text:
                    yield chunk(ChatDelta(content=text))
            yield chunk(ChatDelta(), reason)
            if req.include_usage_in_stream:
                yield ChatCompletionChunk(
                    id=chunk_id, created=created, model=model, choices=[], usage=g.usage(event),
                ).model_dump_json(exclude_none=True)
        yield "[DONE]"

    def _logprobs(self, tokens: list[TokenOut]) -> ChoiceLogprobs:
        model = self.runtime.model
        assert model is not None

        def entry(token_id: int, logprob: float) -> TopLogprob:
            raw = model.token_bytes(token_id)
            return TopLogprob(token=raw.decode("utf-8", errors="replace"), logprob=logprob, bytes=list(raw))

        content = []
        for t in tokens:
            if t.logprobs is None:
                continue
            head = entry(t.id, t.logprobs.logprob)
            content.append(TokenLogprob(**head.model_dump(), top_logprobs=[entry(i, lp) for i, lp in t.logprobs.top]))
        return ChoiceLogprobs(content=content)


def _template_message(message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.text}
    if message.name:
        out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def _tokenize_chat(model: LoadedModel, text: str) -> list[int]:
    # Templates usually write the BOS token themselves; do not add a second one.
    bos = model.special_text(model.bos_token)
    add_special = not (bos and text.startswith(bos))
    return model.tokenize(text, add_special=add_special, parse_special=True)
