"""Ollama's native API (/api/*) through the router.

Requests that name a `model` are routed exactly as /v1 ones are (same table,
balancer, proxy and retries); /api/tags and /api/ps ask one endpoint of every
ready model and merge the answers under the router's names and aliases.
Errors the router itself raises leave in Ollama's `{"error": "..."}` shape;
the backends' own answers (already in that shape) pass through untouched.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from localmodel_server.protocol.errors import APIError, method_not_allowed, not_found
from localmodel_server.protocol.ollama import OLLAMA_API_VERSION, error_body

from .metrics import UNROUTED
from .proxy import forward_header_block
from .routes import RouteEntry, not_ready

if TYPE_CHECKING:
    from .app import Router
    from .exchange import Exchange

log = logging.getLogger(__name__)

PREFIX = "/api/"
MODEL_PATHS = frozenset({"/api/chat", "/api/generate", "/api/embed", "/api/embeddings", "/api/show"})
LIST_PATHS = frozenset({"/api/tags", "/api/ps"})
# /api/tags must answer even when a backend hangs; its part of the list is then built from the table.
LIST_TIMEOUT_S = 5.0
_JSON = [(b"content-type", b"application/json")]


def send_ollama_error(exchange: Exchange, exc: APIError) -> None:
    exchange.respond(exc.status_code, exc.raw_headers(), error_body(exc.message))


def model_not_found(name: str) -> APIError:
    return APIError(404, f'model "{name}" not found, try pulling it first', param="model", code="model_not_found")


def read_model(body: bytes) -> str:
    """The body's `model` (or the older `name` of /api/show)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise APIError(400, "invalid JSON body", code="invalid_json") from None
    model = data.get("model") or data.get("name") if isinstance(data, dict) else None
    if not isinstance(model, str) or not model:
        raise APIError(400, "model is required", param="model", code="missing_required_parameter")
    return model


class OllamaFront:
    def __init__(self, router: Router) -> None:
        self.router = router

    def lookup(self, name: str) -> RouteEntry:
        table = self.router.table
        entry = table.lookup(name)
        base, sep, tag = name.rpartition(":")
        if entry is None and sep and tag == "latest":
            entry = table.lookup(base)  # Ollama clients add the implied tag
        if entry is None:
            raise model_not_found(name)
        return entry

    async def handle(self, exchange: Exchange) -> None:
        path, method = exchange.path, exchange.method
        try:
            if path in MODEL_PATHS:
                if method != b"POST":
                    raise method_not_allowed(method.decode("latin-1"), path)
                await self._routed(exchange)
                return
            if path in LIST_PATHS or path == "/api/version":
                if method not in (b"GET", b"HEAD"):
                    raise method_not_allowed(method.decode("latin-1"), path)
                if path == "/api/version":
                    exchange.respond(200, _JSON, orjson.dumps({"version": OLLAMA_API_VERSION}))
                    return
                self.router._check_key(exchange)
                exchange.respond(200, _JSON, orjson.dumps({"models": await self._merged(path, exchange)}))
                return
            raise not_found(path)
        except APIError as exc:
            self.router.metrics.count_request(UNROUTED, exc.status_code)
            send_ollama_error(exchange, exc)

    async def _routed(self, exchange: Exchange) -> None:
        router = self.router
        started = time.perf_counter()
        label = UNROUTED
        try:
            router._check_key(exchange)
            name = read_model(exchange.body)
            entry = self.lookup(name)
            key = entry.scale_ref
            activity = router.activity if key is not None else None
            if activity is not None:
                activity.begin(key)  # type: ignore[arg-type]
            try:
                # Held without keep-alive lines: Ollama streams are NDJSON, which has no comments.
                if router.holding is not None and entry.wakeable and not entry.ready:
                    entry = await router.holding.hold(exchange, entry.name, entry)
                elif not entry.ready:
                    raise not_ready(name, entry)
                label = entry.name
                routing_seconds, in_flight = router.metrics.for_model(label)
                routing_seconds.observe(time.perf_counter() - started)
                in_flight.inc()
                try:
                    assert router._proxy is not None, "Router.server() creates the proxy"
                    await router._proxy.forward(exchange, entry, forward_header_block(exchange.headers))
                finally:
                    in_flight.dec()
            finally:
                if activity is not None:
                    activity.end(key)  # type: ignore[arg-type]
        except APIError as exc:
            send_ollama_error(exchange, exc)
        except (asyncio.CancelledError, ConnectionResetError):
            router.metrics.count_request(label, 499)
            raise
        router.metrics.count_request(label, exchange.status)

    async def _merged(self, path: str, exchange: Exchange) -> list[dict[str, Any]]:
        """Every model's entries of /api/tags or /api/ps, renamed to the router's names."""
        entries = self.router.table.entries
        header_block = forward_header_block(exchange.headers)
        answers = await asyncio.gather(*(self._ask(e, path, header_block) for e in entries))
        merged: list[dict[str, Any]] = []
        for entry, models in zip(entries, answers):
            if models is None:
                if path == "/api/ps":
                    continue  # not running anywhere we can see
                models = [_placeholder(entry)]
            if not models:
                continue
            for name in (entry.name, *entry.aliases):
                merged.append({**models[0], "name": name, "model": name})
        return merged

    async def _ask(self, entry: RouteEntry, path: str, header_block: bytes) -> list[dict[str, Any]] | None:
        proxy = self.router._proxy
        if not entry.ready or proxy is None:
            return None
        url = entry.endpoints[0]
        try:
            async with asyncio.timeout(LIST_TIMEOUT_S):
                upstream = await proxy.pool.request(url, b"GET", path.encode(), header_block, b"")
                try:
                    body = await upstream.read()
                finally:
                    upstream.close()
            if upstream.status != 200:
                raise ValueError(f"status {upstream.status}")
            models = orjson.loads(body)["models"]
            return [m for m in models if isinstance(m, dict)]
        except Exception as exc:  # noqa: BLE001 - one failing backend must not hide the others
            log.warning("model %s: %s from %s failed: %s", entry.name, path, url, exc)
            return None


def _placeholder(entry: RouteEntry) -> dict[str, Any]:
    """A listed model the router cannot ask (not ready, or its backend did not answer)."""
    return {"name": entry.name, "model": entry.name, "modified_at": "1970-01-01T00:00:00Z", "size": 0, "digest": "",
            "details": {"parent_model": "", "format": "gguf", "family": "", "families": [], "parameter_size": "",
                        "quantization_level": ""}}
