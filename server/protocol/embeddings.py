"""/v1/embeddings request and response types."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictInt, field_validator

from .common import Usage

MAX_INPUTS = 2048


class EmbeddingRequest(BaseModel):
    model: str = Field(min_length=1)
    input: str | list[str] | list[StrictInt] | list[list[StrictInt]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: Annotated[StrictInt, Field(ge=1)] | None = None
    user: str | None = None

    @field_validator("input")
    @classmethod
    def _not_empty(cls, value: str | list) -> str | list:
        if isinstance(value, list):
            if not value:
                raise ValueError("'input' must not be empty")
            if len(value) > MAX_INPUTS:
                raise ValueError(f"at most {MAX_INPUTS} inputs per request")
            if any(isinstance(v, (str, list)) and len(v) == 0 for v in value):
                raise ValueError("inputs must not be empty strings")
        elif value == "":
            raise ValueError("'input' must not be an empty string")
        return value


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    # base64 of little-endian float32, as OpenAI sends it.
    embedding: list[float] | str


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: Usage
