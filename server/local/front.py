"""`localmodel up`'s front door: the router, with requests held while their model loads.

The router (server/router/app.py) does everything it does in a cluster: the
`model` lookup, proxying, retries, Ollama's API and the error envelope. This
layer runs in the same process, in front of `Router.handle`, and adds only what
one machine needs:
- a request that names a known model waits in `Scheduler.hold` until that
  model's server is up, and counts as in flight until its answer is relayed,
  so eviction and idle unload never cut it;
- a streamed /v1 request that waits longer than a heartbeat gets its SSE
  response started with `: loading` comment lines, so clients and proxies keep
  the connection (SSE clients ignore comment lines);
- /v1/models lists every model with whether it is loaded.
Unknown models, bad bodies and everything else pass straight to the router,
which answers them as it always does (an unknown model is an immediate 404).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from localmodel_server.protocol.errors import APIError, model_not_found, sse_error_event
from localmodel_server.protocol.models import ModelCard, ModelList
from localmodel_server.router.app import INFERENCE_PATHS, MODELS_PATH, Router, send_error, send_json
from localmodel_server.router.exchange import Exchange
from localmodel_server.router.ollama import MODEL_PATHS as OLLAMA_MODEL_PATHS, send_ollama_error

from .ondemand import Scheduler

LOADING_COMMENT = b": loading\n\n"
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                (b"x-accel-buffering", b"no")]
_MODEL_PREFIX = MODELS_PATH + "/"


class Front:
    def __init__(self, router: Router, scheduler: Scheduler, describe: Callable[[str], tuple[bool, str]],
                 heartbeat: float = 2.0) -> None:
        self.router = router
        self.scheduler = scheduler
        # served name -> (can it answer a request, "loaded" | "unloaded" | "loading" | ... ) for /v1/models
        self.describe = describe
        self.heartbeat = heartbeat

    async def handle(self, exchange: Exchange) -> None:
        path, method = exchange.path, exchange.method
        if method == b"POST" and (path in INFERENCE_PATHS or path in OLLAMA_MODEL_PATHS):
            request = _peek(exchange.body)
            name = self._served_name(request, ollama=path not in INFERENCE_PATHS)
            if name is not None:
                await self._held(exchange, name, stream=path in INFERENCE_PATHS and request.get("stream") is True)
                return
        elif method in (b"GET", b"HEAD") and (path == MODELS_PATH or path.startswith(_MODEL_PREFIX)):
            try:
                send_json(exchange, self._models(path))
            except APIError as exc:
                send_error(exchange, exc)
            return
        await self.router.handle(exchange)

    def _served_name(self, request: dict[str, Any], *, ollama: bool) -> str | None:
        model = request.get("model") or (request.get("name") if ollama else None)
        if not isinstance(model, str) or not model:
            return None
        table = self.router.table
        entry = table.lookup(model)
        if entry is None and ollama and model.endswith(":latest"):
            entry = table.lookup(model.removesuffix(":latest"))  # as the router's Ollama front resolves it
        if entry is None or entry.name not in self.scheduler.slots:
            return None
        return entry.name

    async def _held(self, exchange: Exchange, name: str, *, stream: bool) -> None:
        ollama = exchange.path not in INFERENCE_PATHS
        scheduler = self.scheduler
        try:
            if stream and scheduler.slots[name].phase != "loaded":
                answering = await self._acquire_with_heartbeat(exchange, name)
            else:
                await scheduler.acquire(name)
                answering = exchange
        except APIError as exc:
            if exchange.started:  # the loading comments began a 200 stream: the error goes in it
                exchange.end(exc.sse_event())
            elif ollama:
                send_ollama_error(exchange, exc)
            else:
                send_error(exchange, exc)
            return
        try:
            await self.router.handle(answering)  # type: ignore[arg-type]
        finally:
            scheduler.release(name)

    async def _acquire_with_heartbeat(self, exchange: Exchange, name: str) -> Exchange | StartedStream:
        acquiring = asyncio.ensure_future(self.scheduler.acquire(name))
        try:
            while True:
                done, _ = await asyncio.wait({acquiring}, timeout=self.heartbeat)
                if done:
                    acquiring.result()  # raises the APIError
                    return StartedStream(exchange) if exchange.started else exchange
                if not exchange.started:
                    exchange.start(200, _SSE_HEADERS)
                await exchange.write(LOADING_COMMENT)
        except BaseException:
            if not acquiring.done():
                acquiring.cancel()
            elif not acquiring.cancelled() and acquiring.exception() is None:
                self.scheduler.release(name)  # acquired, but the client left before it could be used
            with contextlib.suppress(BaseException):
                await acquiring
            raise

    def _models(self, path: str) -> dict[str, Any]:
        table = self.router.table
        if path == MODELS_PATH:
            return ModelList(data=[self._card(c) for n in table.names() if (c := table.card(n)) is not None]).model_dump(mode="json")
        model = unquote(path[len(_MODEL_PREFIX):])
        card = table.card(model)
        if card is None:
            raise model_not_found(model, table.names())
        return self._card(card).model_dump(mode="json")

    def _card(self, card: ModelCard) -> ModelCard:
        ready, status = self.describe(card.root or card.id)
        return card.model_copy(update={"ready": ready, "status": status})


class StartedStream:
    """The exchange as the router sees it after loading comments started a 200 SSE response.

    The backend's own status line and headers cannot be sent any more: its body
    continues the stream, and an error answer becomes an SSE error event, the
    form OpenAI's SDKs raise from mid-stream.
    """

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exchange, name)

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        pass  # already started

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if status >= 400 and body.startswith(b"{"):
            self._exchange.end(sse_error_event(body))
        else:
            self._exchange.end(body)


def _peek(body: bytes) -> dict[str, Any]:
    """The JSON body as far as routing needs it; anything unparsable is left to the router to refuse."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
