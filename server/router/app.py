"""The router's HTTP front: dispatch, auth, the `model` lookup and the error envelope.

It runs on the small HTTP/1.1 server in http1.py; the router has eight fixed
paths, so dispatch is a few comparisons.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import orjson

from localmodel_server.protocol.errors import (
    APIError,
    headers_too_large,
    internal_error,
    invalid_request,
    method_not_allowed,
    model_not_found,
    not_found,
    payload_too_large,
    service_unavailable,
)

from .auth import ApiKeys
from .activity import Activity
from .balancer import Balancer
from .exchange import Exchange
from .holding import Holding
from .http1 import HTTPServer
from .metrics import UNROUTED, RouterMetrics
from .ollama import PREFIX as OLLAMA_PREFIX, OllamaFront
from .proxy import Proxy, forward_header_block
from .routes import RouteTable
from .upstream import UpstreamPool

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
    write_timeout: float = 60.0
    max_connections: int = 10_000


_JSON = [(b"content-type", b"application/json")]
_TEXT = [(b"content-type", b"text/plain; charset=utf-8")]


def send_error(exchange: Exchange, exc: APIError) -> None:
    exchange.respond(exc.status_code, exc.raw_headers(), exc.body_bytes())


def send_json(exchange: Exchange, data: Any) -> None:
    exchange.respond(200, _JSON, orjson.dumps(data))


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
        self.ollama = OllamaFront(self)
        # With --kubernetes (scaler.enable): hold requests for models at 0 replicas or loading, and
        # report each model's requests into its status.activity.
        self.holding: Holding | None = None
        self.activity: Activity | None = None

    def publish(self, table: RouteTable) -> None:
        """Swap in a new route table (atomic for the hot path: one attribute store)."""
        self.table = table
        self.discovered = True
        ready = sum(1 for e in table.entries if e.ready)
        self.metrics.models.labels("true").set(ready)
        self.metrics.models.labels("false").set(len(table.entries) - ready)
        self.metrics.route_conflicts.set(len(table.conflicts))
        self.balancer.forget_except({url for e in table.entries for url in e.endpoints})
        if self.holding is not None:
            self.holding.table_changed()

    def server(self) -> HTTPServer:
        """The protocol factory for `loop.create_server`; create it inside the running loop."""
        pool = UpstreamPool(self.settings.connect_timeout, self.settings.read_timeout)
        self._proxy = Proxy(pool, self.balancer, self.metrics)
        return HTTPServer(self.handle, self.refuse, self.settings.max_body_bytes,
                          write_timeout=self.settings.write_timeout, max_connections=self.settings.max_connections)

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy.pool.close()

    async def handle(self, exchange: Exchange) -> None:
        path = exchange.path
        method = exchange.method
        try:
            if path in INFERENCE_PATHS:
                if method != b"POST":
                    raise method_not_allowed(method.decode("latin-1"), path)
                await self._inference(exchange)
                return
            if path.startswith(OLLAMA_PREFIX):
                await self.ollama.handle(exchange)
                return
            if method not in (b"GET", b"HEAD"):
                if path in (MODELS_PATH, "/healthz", "/readyz", "/metrics") or path.startswith(_MODEL_PREFIX):
                    raise method_not_allowed(method.decode("latin-1"), path)
                raise not_found(path)
            if path == MODELS_PATH:
                self._check_key(exchange)
                send_json(exchange, self.table.model_list().model_dump(mode="json"))
            elif path.startswith(_MODEL_PREFIX):
                self._check_key(exchange)
                send_json(exchange, self._model(unquote(path[len(_MODEL_PREFIX):])))
            elif path == "/healthz":
                exchange.respond(200, _TEXT, b"ok")
            elif path == "/readyz":
                if self.discovered:
                    exchange.respond(200, _TEXT, b"ready")
                else:
                    exchange.respond(503, _TEXT, b"waiting for the first route table")
            elif path == "/metrics":
                exchange.respond(200, [(b"content-type", self.metrics.content_type.encode())], self.metrics.render())
            else:
                raise not_found(path)
        except APIError as exc:
            send_error(exchange, exc)

    def refuse(self, exchange: Exchange, status: int, detail: str) -> None:
        """Requests the HTTP layer turns away itself: too large, unparsable, over capacity, or a handler bug."""
        if status == 413:
            error = payload_too_large(self.settings.max_body_bytes)
        elif status == 431:
            error = headers_too_large(detail)
        elif status == 400:
            error = invalid_request(detail, code="invalid_http")
        elif status == 503:
            error = service_unavailable(f"{detail} Retry shortly.", code="too_many_connections")
        else:
            error = internal_error()
        self.metrics.count_request(UNROUTED, status)
        send_error(exchange, error)

    def _check_key(self, exchange: Exchange) -> None:
        if self.keys.enabled:
            value = exchange.header(b"authorization")
            self.keys.check(value.decode("latin-1") if value is not None else None)

    def _model(self, model: str) -> dict[str, Any]:
        card = self.table.card(model)
        if card is None:
            raise model_not_found(model, self.table.names())
        return card.model_dump(mode="json")

    async def _inference(self, exchange: Exchange) -> None:
        started = time.perf_counter()
        label = UNROUTED
        try:
            self._check_key(exchange)
            name = read_model_field(exchange.body)
            entry = self.table.lookup(name) or self.table.resolve(name)
            key = entry.scale_ref
            activity = self.activity if key is not None else None
            if activity is not None:
                activity.begin(key)  # type: ignore[arg-type]
            try:
                if self.holding is not None and entry.wakeable and not entry.ready:
                    exchange = self.holding.wrap(exchange)  # type: ignore[assignment]
                    entry = await self.holding.hold(exchange, name, entry)
                else:
                    entry = self.table.resolve(name)
                label = entry.name
                header_block = forward_header_block(exchange.headers)
                routing_seconds, in_flight = self.metrics.for_model(label)
                routing_seconds.observe(time.perf_counter() - started)
                in_flight.inc()
                try:
                    assert self._proxy is not None, "Router.server() creates the proxy"
                    await self._proxy.forward(exchange, entry, header_block)
                finally:
                    in_flight.dec()
            finally:
                if activity is not None:
                    activity.end(key)  # type: ignore[arg-type]
        except APIError as exc:
            send_error(exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError):
            self.metrics.count_request(label, CLIENT_CLOSED)
            raise
        self.metrics.count_request(label, exchange.status)
