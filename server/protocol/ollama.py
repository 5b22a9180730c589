"""Ollama's native API (/api/*) request and response types.

Field names and shapes follow Ollama's `api/types.go`, so the official
clients (the `ollama` Python and JS packages, LangChain's ChatOllama, Open
WebUI) parse them. Unknown fields are ignored, as Ollama does.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from .chat import Tool

# The Ollama release whose API these types mirror; clients compare against it.
OLLAMA_API_VERSION = "0.12.0"


class Options(BaseModel):
    """The `options` object; the fields we honour (others are accepted and ignored)."""

    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    min_p: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2.0, le=2.0)] | None = None
    # -1: until the end of the context; -2: fill the context. Both mean "no limit" here.
    num_predict: Annotated[int, Field(ge=-2)] | None = None
    num_ctx: Annotated[int, Field(ge=1)] | None = None
    stop: list[str] | None = None
    seed: int | None = None


class ToolCallFunction(BaseModel):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolCall(BaseModel):
    function: ToolCallFunction


class Message(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None
    thinking: str | None = None


# "" and None mean free text, "json" any JSON object, a dict a JSON schema.
Format = Literal["", "json"] | dict[str, Any] | None


class _Generative(BaseModel):
    model: str = Field(min_length=1)
    format: Format = None
    options: Options | None = None
    stream: bool = True
    # Accepted for compatibility: one server serves one model that never unloads.
    keep_alive: float | str | None = None
    think: bool | str | None = None


class ChatRequest(_Generative):
    messages: list[Message] = Field(default_factory=list)
    tools: list[Tool] | None = None


class GenerateRequest(_Generative):
    prompt: str = ""
    system: str | None = None
    suffix: str | None = None
    raw: bool = False
    images: list[str] | None = None
    template: str | None = None
    context: list[int] | None = None


class EmbedRequest(BaseModel):
    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: Options | None = None
    keep_alive: float | str | None = None


class EmbeddingsRequest(BaseModel):
    """The older /api/embeddings: one `prompt`, one vector."""

    model: str = Field(min_length=1)
    prompt: str
    options: Options | None = None
    keep_alive: float | str | None = None


class ShowRequest(BaseModel):
    # Older clients send `name`.
    model: str | None = None
    name: str | None = None
    verbose: bool = False

    @property
    def target(self) -> str:
        return self.model or self.name or ""


# -- responses -----------------------------------------------------------------

DoneReason = Literal["stop", "length", "load"]


class Timings(BaseModel):
    """What the final message of a generation reports; durations are nanoseconds."""

    done_reason: DoneReason | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None


class ChatResponse(Timings):
    model: str
    created_at: str
    message: Message
    done: bool


class GenerateResponse(Timings):
    model: str
    created_at: str
    response: str
    done: bool


class EmbedResponse(BaseModel):
    model: str
    embeddings: list[list[float]]
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None


class EmbeddingsResponse(BaseModel):
    embedding: list[float]


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = "gguf"
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class ListedModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails


class ListResponse(BaseModel):
    models: list[ListedModel]


class RunningModel(BaseModel):
    name: str
    model: str
    size: int
    digest: str
    details: ModelDetails
    expires_at: str
    size_vram: int
    context_length: int


class ProcessResponse(BaseModel):
    models: list[RunningModel]


class ShowResponse(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: ModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class VersionResponse(BaseModel):
    version: str = OLLAMA_API_VERSION


class ErrorResponse(BaseModel):
    """Ollama's error body: a bare sentence."""

    error: str


def error_body(message: str) -> bytes:
    """Ollama's error as JSON bytes: the one place its shape is serialized, for the server and the router."""
    return ErrorResponse(error=message).model_dump_json().encode()
