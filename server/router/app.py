"""The router's HTTP front: dispatch, auth, the `model` lookup and the error envelope.

It is an aiohttp low-level `web.Server` rather than a `web.Application`: the
router has eight fixed paths, and skipping the application's router and
middleware chain is measurably cheaper per request (docs/router.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson
from aiohttp import web
from aiohttp.web_request import BaseRequest

from localmodel_server.protocol.errors import (
    APIError,
    internal_error,
    invalid_request,
    method_not_allowed,
    model_not_found,
    not_found,
    payload_too_large,
)

from .auth import ApiKeys
from .balancer import Balancer
from .metrics import UNROUTED, RouterMetrics
from .proxy import Proxy, forward_header_block
from .routes import RouteTable
from .upstream import UpstreamPool

log = logging.getLogger(__name__)

INFERENCE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
MODELS_PATH = "/v1/models"
_MODEL_PREFIX = MODELS_PATH + "/"
# nginx's code for "the client closed the request", used only in metrics.
CLIENT_CLOSED = 499


@dataclass(frozen=True)
class RouterSettings:
    max_body_bytes: int = 16 << 20
    connect_timeout: float = 5.0
    read_timeout: float = 600.0


def error_response(exc: APIError) -> web.Response:
    return web.Response(status=exc.status_code, body=exc.body_bytes(), headers={"Content-Type": "application/json", **exc.headers})


def read_model_field(body: bytes) -> str:
    """The `model` of a JSON request body, or the 400 that says what is wrong with it."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise invalid_request(
            "We could not parse the JSON body of your request. Send valid JSON with Content-Type: application/json.",
            code="invalid_json",
        ) from None
    if not isinstance(data, dict):
        raise invalid_request("The request body must be a JSON object.", code="invalid_type")
    model = data.get("model")
    if model is None:
        raise invalid_request("Missing required parameter: 'model'.", param="model", code="missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid_request("Invalid value for 'model': expected a non-empty string.", param="model", code="invalid_value")
    return model


class Router:
    """Everything one router process serves; discovery sources publish tables into it."""

    def __init__(self, settings: RouterSettings, keys: ApiKeys, metrics: RouterMetrics | None = None) -> None:
        self.settings = settings
        self.keys = keys
        self.metrics = metrics or RouterMetrics()
        self.balancer = Balancer()
        self.table = RouteTable()
        # False until discovery has read its source once (the file, or the first list of LocalModels).
        self.discovered = False
        self._proxy: Proxy | None = None

    def publish(self, table: RouteTable) -> None:
        """Swap in a new route table (atomic for the hot path: one attribute store)."""
        self.table = table
        self.discovered = True
        ready = sum(1 for e in table.entries if e.ready)
        self.metrics.models.labels("true").set(ready)
        self.metrics.models.labels("false").set(len(table.entries) - ready)
        self.metrics.route_conflicts.set(len(table.conflicts))
        self.balancer.forget_except({url for e in table.entries for url in e.endpoints})

    def server(self) -> web.Server:
        """The aiohttp protocol factory; create it inside the running loop."""
        pool = UpstreamPool(self.settings.connect_timeout, self.settings.read_timeout)
        self._proxy = Proxy(pool, self.balancer, self.metrics)
        loop = asyncio.get_running_loop()
        limit = self.settings.max_body_bytes

        def make_request(message: Any, payload: Any, protocol: Any, writer: Any, task: Any) -> BaseRequest:
            return BaseRequest(message, payload, protocol, writer, task, loop, client_max_size=limit)

        return web.Server(self.handle, request_factory=make_request, handler_cancellation=True, access_log=None)

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.pool.close()

    async def handle(self, request: BaseRequest) -> web.StreamResponse:
        path = request.path
        try:
            if path in INFERENCE_PATHS:
                if request.method != "POST":
                    raise method_not_allowed(request.method, path)
                return await self._inference(request)
            if request.method not in ("GET", "HEAD"):
                if path in (MODELS_PATH, "/healthz", "/readyz", "/metrics") or path.startswith(_MODEL_PREFIX):
                    raise method_not_allowed(request.method, path)
                raise not_found(path)
            if path == MODELS_PATH:
                self.keys.check(request.headers.get("Authorization"))
                return _json(self.table.model_list().model_dump(mode="json"))
            if path.startswith(_MODEL_PREFIX):
                self.keys.check(request.headers.get("Authorization"))
                return self._model(unquote(path[len(_MODEL_PREFIX):]))
            if path == "/healthz":
                return web.Response(text="ok")
            if path == "/readyz":
                if self.discovered:
                    return web.Response(text="ready")
                return web.Response(status=503, text="waiting for the first route table")
            if path == "/metrics":
                return web.Response(body=self.metrics.render(), headers={"Content-Type": self.metrics.content_type})
            raise not_found(path)
        except APIError as exc:
            return error_response(exc)

    def _model(self, model: str) -> web.Response:
        card = self.table.card(model)
        if card is None:
            raise model_not_found(model, self.table.names())
        return _json(card.model_dump(mode="json"))

    async def _inference(self, request: BaseRequest) -> web.StreamResponse:
        started = time.perf_counter()
        label = UNROUTED
        code = 500
        try:
            self.keys.check(request.headers.get("Authorization"))
            body = await self._read_body(request)
            entry = self.table.resolve(read_model_field(body))
            label = entry.name
            header_block = forward_header_block(request.raw_headers)
            routing_seconds, in_flight = self.metrics.for_model(label)
            routing_seconds.observe(time.perf_counter() - started)
            in_flight.inc()
            try:
                assert self._proxy is not None, "Router.server() creates the proxy"
                response = await self._proxy.forward(request, entry, body, header_block)
            finally:
                in_flight.dec()
            code = response.status
            return response
        except APIError as exc:
            code = exc.status_code
            return error_response(exc)
        except (asyncio.CancelledError, ConnectionResetError):
            code = CLIENT_CLOSED
            raise
        except Exception:
            log.exception("unexpected error while routing %s", request.path)
            return error_response(internal_error())
        finally:
            self.metrics.count_request(label, code)

    async def _read_body(self, request: BaseRequest) -> bytes:
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise payload_too_large(limit)
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise payload_too_large(limit) from None


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), headers={"Content-Type": "application/json"})
