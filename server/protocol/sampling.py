"""Request fields shared by /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StrictBool, StrictFloat, StrictInt, field_validator

from .common import StreamOptions

MAX_STOP_SEQUENCES = 16


class SamplingFields(BaseModel):
    model: str = Field(min_length=1)
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    temperature: Annotated[StrictFloat, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[StrictFloat, Field(gt=0.0, le=1.0)] = 1.0
    # llama.cpp extensions that many clients send; OpenAI ignores neither.
    top_k: Annotated[StrictInt, Field(ge=0)] = 0
    min_p: Annotated[StrictFloat, Field(ge=0.0, le=1.0)] = 0.0
    frequency_penalty: Annotated[StrictFloat, Field(ge=-2.0, le=2.0)] = 0.0
    presence_penalty: Annotated[StrictFloat, Field(ge=-2.0, le=2.0)] = 0.0
    seed: StrictInt | None = None
    n: StrictInt = 1
    stop: str | list[str] | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    logit_bias: dict[str, Annotated[StrictFloat, Field(ge=-100.0, le=100.0)]] | None = None
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, n: int) -> int:
        if n != 1:
            raise ValueError("only n=1 is supported")
        return n

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, stop: str | list[str] | None) -> str | list[str] | None:
        items = [stop] if isinstance(stop, str) else (stop or [])
        if len(items) > MAX_STOP_SEQUENCES:
            raise ValueError(f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
        if any(s == "" for s in items):
            raise ValueError("stop sequences must not be empty")
        return stop

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, bias: dict[str, float] | None) -> dict[str, float] | None:
        for key in bias or {}:
            if not key.lstrip("-").isdigit():
                raise ValueError(f"logit_bias keys must be token ids, got {key!r}")
        return bias

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def include_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
