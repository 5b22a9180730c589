"""The model server's FastAPI application."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from fastapi import FastAPI, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sse_starlette import EventSourceResponse
from starlette.responses import Response

from ..metrics import ServerMetrics
from ..protocol import errors
from ..protocol.chat import ChatCompletionRequest
from ..protocol.completions import CompletionRequest
from ..protocol.embeddings import EmbeddingRequest
from ..runtime import ModelRuntime
from ..serving.chat import ChatService
from ..serving.completions import CompletionService
from ..serving.embeddings import EmbeddingService
from ..serving.defaults import RequestDefaults
from ..serving.models import ModelsService
from ..serving.ollama import OllamaService
from ..serving.ollama_models import OllamaModels
from ..settings import ServerSettings
from .errors import error_response, install_error_handlers
from .middleware import RequestObserver
from .ollama import install_ollama_api


def json_response(model) -> Response:
    return Response(model.model_dump_json(exclude_none=True), media_type="application/json")


def sse(body: AsyncIterator[str | errors.APIError]) -> EventSourceResponse:
    """Each item is one event's data; an APIError (a failure after the 200) becomes the error event and ends it."""

    async def events() -> AsyncIterator[str | bytes]:
        async for item in body:
            yield item.sse_event() if isinstance(item, errors.APIError) else item  # bytes pass through unframed

    # No pings: OpenAI clients parse every event as JSON.
    return EventSourceResponse(events(), sep="\n", ping=None)


def create_app(settings: ServerSettings, *, runtime: ModelRuntime | None = None) -> FastAPI:
    metrics = runtime.metrics if runtime else ServerMetrics()
    runtime = runtime or ModelRuntime(settings, metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        loading = asyncio.create_task(runtime.load())
        yield
        loading.cancel()
        await asyncio.to_thread(runtime.close)

    app = FastAPI(title="localmodel server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(RequestObserver, runtime=runtime, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    chat = ChatService(runtime, metrics)
    completions = CompletionService(runtime, metrics)
    embeddings = EmbeddingService(runtime, metrics)
    models = ModelsService(runtime)
    defaults = RequestDefaults.beside(settings.model_path)
    install_ollama_api(app, OllamaService(runtime, chat, completions, embeddings, defaults),
                       OllamaModels(runtime, defaults))

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest, request: Request) -> Response:
        req = defaults.apply(req)
        if req.stream:
            return sse(await chat.stream(req))
        return json_response(await chat.complete(req, request))

    @app.post("/v1/completions")
    async def text_completions(req: CompletionRequest, request: Request) -> Response:
        req = defaults.apply(req)
        if req.stream:
            return sse(await completions.stream(req))
        return json_response(await completions.complete(req, request))

    @app.post("/v1/embeddings")
    async def create_embeddings(req: EmbeddingRequest) -> Response:
        return json_response(await embeddings.embed(req))

    @app.get("/v1/models")
    async def list_models() -> Response:
        return json_response(models.list())

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Response:
        return json_response(models.get(model_id))

    @app.get("/healthz")
    async def healthz() -> Response:
        # Liveness: the process answers. A failed load is a readiness matter, not a restart loop.
        return Response(b'{"status":"ok"}', media_type="application/json")

    @app.get("/readyz")
    async def readyz() -> Response:
        try:
            runtime.require_ready()
        except errors.APIError as exc:  # 503, with the reason in the envelope
            return error_response(exc)
        return Response(b'{"status":"ready"}', media_type="application/json")

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app

