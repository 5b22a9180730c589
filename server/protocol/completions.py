"""/v1/completions request and response types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, field_validator

from .common import Usage
from .sampling import SamplingFields


class CompletionRequest(SamplingFields):
    # Token-id prompts are accepted too, as OpenAI does.
    prompt: str | list[str] | list[StrictInt]
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = 16
    echo: StrictBool = False
    logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, prompt: str | list[str] | list[int]) -> str | list[str] | list[int]:
        if isinstance(prompt, list):
            if not prompt:
                raise ValueError("'prompt' must not be empty")
            if isinstance(prompt[0], str) and len(prompt) != 1:
                raise ValueError("only one prompt per request is supported")
        return prompt

    @field_validator("suffix")
    @classmethod
    def _no_suffix(cls, suffix: str | None) -> str | None:
        if suffix:
            raise ValueError("'suffix' (fill-in-the-middle) is not supported")
        return suffix


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: Literal["stop", "length"] | None
    logprobs: CompletionLogprobs | None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None
