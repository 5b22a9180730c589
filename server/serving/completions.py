"""/v1/completions: raw-prompt text completion."""

from __future__ import annotations

from typing import AsyncIterator

from starlette.requests import Request

from ..engine.batching import Delta, TokenOut
from ..protocol import errors
from ..protocol.completions import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from . import generation as g

class CompletionService(g.GenerationService):
    endpoint = "completions"

    def _prepare(self, req: CompletionRequest) -> tuple[g.GenerationRequest, str]:
        rt = self.runtime
        model = self._admit(req.model)
        if isinstance(req.prompt, list) and req.prompt and isinstance(req.prompt[0], int):
            prompt = list(req.prompt)  # type: ignore[arg-type]
            text = ""
        else:
            text = req.prompt if isinstance(req.prompt, str) else req.prompt[0]  # type: ignore[assignment]
            prompt = model.tokenize(text, add_special=True, parse_special=False)
        params = g.sampling_params(req, grammar=None, logprobs=req.logprobs)
        plan = g.plan_generation(rt, prompt, params, req.max_tokens, req.stop_list, param="prompt")
        return plan, text if req.echo else ""

    async def complete(self, req: CompletionRequest, request: Request) -> Completion:
        plan, echo = self._prepare(req)
        result, finished = await self._complete(plan, request)
        return Completion(
            id=g.new_id("cmpl"), created=g.now(), model=self.runtime.settings.model_id,
            choices=[CompletionChoice(
                text=echo + result.text,
                finish_reason="length" if finished.reason == "length" else "stop",
                logprobs=self._logprobs(result.tokens, len(echo)) if req.logprobs is not None else None,
            )],
            usage=g.usage(finished),
        )

    async def stream(self, req: CompletionRequest) -> AsyncIterator[str | errors.APIError]:
        plan, echo = self._prepare(req)
        return self._stream_body(req, self._start_stream(plan), echo)

    async def _stream_body(self, req: CompletionRequest, events: AsyncIterator[g.Delta | g.Finished],
                           echo: str) -> AsyncIterator[str | errors.APIError]:
        chunk_id, created, model = g.new_id("cmpl"), g.now(), self.runtime.settings.model_id

        def chunk(text: str, reason: str | None = None, logprobs: CompletionLogprobs | None = None) -> str:
            return Completion(
                id=chunk_id, created=created, model=model,
                choices=[CompletionChoice(text=text, finish_reason=reason, logprobs=logprobs)],
            ).model_dump_json(exclude_none=True)

        if echo:
            yield chunk(echo)
        offset = len(echo)
        async for event in events:
            if isinstance(event, Delta):
                logprobs = self._logprobs(event.tokens, offset) if req.logprobs is not None else None
                offset += len(event.text)
                yield chunk(event.text, logprobs=logprobs)
                continue
            if event.reason == "error":
                yield errors.internal_error()  # each front frames it in its own protocol
                return
            yield chunk("", "length" if event.reason == "length" else "stop")
            if req.include_usage_in_stream:
                yield Completion(id=chunk_id, created=created, model=model, choices=[],
                                 usage=g.usage(event)).model_dump_json(exclude_none=True)
        yield "[DONE]"

    def _logprobs(self, tokens: list[TokenOut], offset: int) -> CompletionLogprobs:
        model = self.runtime.model
        assert model is not None
        out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
        for t in tokens:
            if t.logprobs is None:
                continue
            text = model.token_text(t.id)
            out.tokens.append(text)
            out.token_logprobs.append(t.logprobs.logprob)
            out.top_logprobs.append({model.token_text(i): lp for i, lp in t.logprobs.top})
            out.text_offset.append(offset)
            offset += len(text)
        return out
