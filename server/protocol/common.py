"""Types used by several endpoints."""

from __future__ import annotations

from pydantic import BaseModel, StrictBool


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class StreamOptions(BaseModel):
    include_usage: StrictBool = False
