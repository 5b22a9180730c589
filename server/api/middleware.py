"""ASGI middleware: admission, body size limit, metrics, in-flight tracking and one log line per request."""

from __future__ import annotations

import logging
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import ServerMetrics
from ..protocol import errors
from ..runtime import ModelRuntime
from .errors import error_response
from .ollama import ollama_error

log = logging.getLogger("localmodel.access")

# Requests that take a place in the engine (a slot or the queue before one).
GENERATION_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate"})

_ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/embeddings": "embeddings",
}


def endpoint_label(path: str) -> str:
    if path in _ENDPOINTS:
        return _ENDPOINTS[path]
    if path.startswith("/v1/models"):
        return "models"
    if path.startswith("/api/"):
        return "ollama"
    return "other"


class RequestObserver:
    """Wraps /v1 and /api requests: refuses what finds no place or is too large, counts, times and logs them.

    It is pure ASGI rather than a BaseHTTPMiddleware so that streamed responses
    pass through untouched and are timed to their last byte.
    """

    def __init__(self, app: ASGIApp, *, runtime: ModelRuntime, metrics: ServerMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.runtime = runtime
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(("/v1/", "/api/")):
            await self.app(scope, receive, send)
            return
        endpoint = endpoint_label(scope["path"])
        started = time.perf_counter()
        status = 500
        request_id = _header(scope, b"x-request-id") or uuid.uuid4().hex

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        self.runtime.request_started()
        self.metrics.in_flight.inc()
        try:
            declared = _header(scope, b"content-length")
            if declared and declared.isdigit() and int(declared) > self.max_body_bytes:
                await refusal(scope, errors.payload_too_large(self.max_body_bytes))(scope, receive, send_observed)
            else:
                await self._admitted(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - started
            self.runtime.request_finished()
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(endpoint, str(status)).inc()
            self.metrics.latency.labels(endpoint).observe(elapsed)
            # No prompt text here: prompts may carry private data.
            log.info(
                "request",
                extra={"request_id": request_id, "method": scope["method"], "path": scope["path"],
                       "status": status, "duration_ms": round(elapsed * 1000, 1)},
            )

    async def _admitted(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request; a generation request first takes a place, before its body is even read."""
        admission = self.runtime.admission
        if admission is None or scope["method"] != "POST" or scope["path"] not in GENERATION_PATHS:
            await self.app(scope, self._limited(receive), send)
            return
        if not admission.enter():
            await refusal(scope, self.runtime.queue_full())(scope, receive, send)
            return
        try:
            await self.app(scope, self._limited(receive), send)
        finally:
            admission.leave()

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def receive_limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body_bytes:
                    raise errors.payload_too_large(self.max_body_bytes)
            return message

        return receive_limited


def refusal(scope: Scope, exc: errors.APIError) -> ASGIApp:
    """The error in the shape of the API the path belongs to: Ollama's for /api, else OpenAI's envelope."""
    return ollama_error(exc) if scope["path"].startswith("/api/") else error_response(exc)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None
