"""Ollama's native API routes (/api/*) on the model server.

Thin, like the /v1 routes: the wire types are in protocol/ollama.py, the
translation onto the shared services in serving/ollama.py. Errors leave as
Ollama's `{"error": "..."}` with the status the shared code chose, so
`ollama.ResponseError` carries the right message and status code.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Coroutine

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from ..protocol import errors
from ..protocol import ollama as o
from ..serving.ollama import OllamaService
from ..serving.ollama_models import OllamaModels

log = logging.getLogger(__name__)

NDJSON = "application/x-ndjson"


def ollama_error(exc: errors.APIError) -> Response:
    response = Response(o.error_body(exc.message), status_code=exc.status_code)
    response.raw_headers = [*exc.raw_headers(), *response.raw_headers]
    return response


class OllamaRoute(APIRoute):
    """Answers every failure of an /api route in Ollama's error shape, not the OpenAI envelope."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except errors.APIError as exc:
                return ollama_error(exc)
            except RequestValidationError as exc:
                return ollama_error(errors.from_validation_error(list(exc.errors())))
            except HTTPException as exc:
                if isinstance(exc.__cause__, errors.APIError):  # the body limit tripped while reading
                    return ollama_error(exc.__cause__)
                return ollama_error(errors.APIError(exc.status_code, str(exc.detail)))
            except Exception:
                log.exception("unhandled error on %s %s", request.method, request.url.path)
                return ollama_error(errors.internal_error())

        return run


def _json(data: Any) -> Response:
    if hasattr(data, "model_dump"):
        data = data.model_dump(exclude_none=True)
    return Response(orjson.dumps(data), media_type="application/json")


def _answer(result: Any) -> Response:
    if isinstance(result, dict):
        return _json(result)
    return StreamingResponse(result, media_type=NDJSON)


def install_ollama_api(app: FastAPI, service: OllamaService, models: OllamaModels) -> None:
    router = APIRouter(route_class=OllamaRoute)

    @router.post("/api/chat")
    async def chat(req: o.ChatRequest, request: Request) -> Response:
        return _answer(await service.chat(req, request))

    @router.post("/api/generate")
    async def generate(req: o.GenerateRequest, request: Request) -> Response:
        return _answer(await service.generate(req, request))

    @router.post("/api/embed")
    async def embed(req: o.EmbedRequest) -> Response:
        return _json(await service.embed(req))

    @router.post("/api/embeddings")
    async def embeddings(req: o.EmbeddingsRequest) -> Response:
        return _json(await service.embeddings(req))

    @router.get("/api/tags")
    async def tags() -> Response:
        return _json(models.tags())

    @router.get("/api/ps")
    async def ps() -> Response:
        return _json(models.ps())

    @router.post("/api/show")
    async def show(req: o.ShowRequest) -> Response:
        return _json(models.show(req))

    @router.get("/api/version")
    async def version() -> Response:
        return _json(o.VersionResponse())

    app.include_router(router)
