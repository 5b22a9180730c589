"""Holding requests for a model that has no endpoint yet but will: scaled to zero, or loading.

Rules this module keeps:
- Only `wakeable` entries are held (kube_routes.wakeable): a model still
  downloading its first weights, or failed, is refused at once as before.
- A held request proceeds as soon as a route table with a ready endpoint is
  published; every published table wakes every waiter, which re-reads it.
- At most `max_held` requests wait per model; the next gets 503 with Retry-After.
  Past `timeout_s` a held request gets a 503 that says what the model is doing.
- A model at 0 replicas is woken (`wake`, at most one call at a time per
  model, again at most every WAKE_RETRY_S while requests wait), so a table
  that still shows 0 replicas after the operator scaled down again re-wakes it.
- A stream that waits gets its 200 and SSE comment lines every `keepalive_s`,
  so clients and proxies see bytes; the backend's answer then continues the
  same response (HeldStream). A request that is not a stream just waits.
- A model that becomes ready within the first `keepalive_s` is forwarded as if
  it had never waited: nothing was sent yet.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from localmodel_server.protocol.errors import APIError, bad_gateway, model_not_found, service_unavailable, sse_error_event

from .exchange import Exchange
from .routes import RouteEntry, RouteTable, not_ready

log = logging.getLogger(__name__)

# Sized for an 8B model: pod start, image already on the node, ~5 GB of weights read from a
# network volume and loaded to the GPU or CPU; docs/router.md.
DEFAULT_HOLD_TIMEOUT_S = 600.0
DEFAULT_MAX_HELD = 256
DEFAULT_KEEPALIVE_S = 5.0
WAKE_RETRY_S = 2.0
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]

Wake = Callable[[str, str], Awaitable[object]]  # what it returns is not read


def wants_stream(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("stream") is True


class HeldStream:
    """An Exchange whose SSE response may already have begun with comment lines.

    Before the first comment it is the exchange itself. After it, the backend's
    status line and headers are dropped (the client has ours), its body continues
    the stream, and a whole error answer becomes an SSE `data:` frame carrying the
    OpenAI error envelope, which OpenAI's SDKs raise as an APIError."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange
        self.opened = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exchange, name)

    async def comment(self, text: str) -> None:
        if not self.opened:
            self.opened = True
            self._exchange.start(200, _SSE_HEADERS)
        await self._exchange.write(b": " + text.encode() + b"\n\n")

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        if not self.opened:
            self._exchange.start(status, headers)

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        if not self.opened:
            self._exchange.respond(status, headers, body)
        elif status < 300:
            self._exchange.end(body)
        else:
            if body.startswith(b"{"):
                self._exchange.end(sse_error_event(body))
            else:
                self._exchange.end(bad_gateway(f"The backend answered {status}.").sse_event())


class Holding:
    def __init__(self, table: Callable[[], RouteTable], wake: Wake, timeout_s: float = DEFAULT_HOLD_TIMEOUT_S,
                 max_held: int = DEFAULT_MAX_HELD, keepalive_s: float = DEFAULT_KEEPALIVE_S,
                 *, released: Callable[[tuple[str, str]], None]) -> None:
        self._table = table
        self._wake = wake
        self._released = released  # called when a model's last held request leaves the hold
        self.timeout_s = timeout_s
        self.max_held = max_held
        self.keepalive_s = keepalive_s
        self._changed = asyncio.Event()
        self._held: dict[tuple[str, str], int] = {}
        self._waking: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._woken_at: dict[tuple[str, str], float] = {}
        self._wake_error: dict[tuple[str, str], Exception] = {}

    def held(self, key: tuple[str, str]) -> int:
        return self._held.get(key, 0)

    def table_changed(self) -> None:
        """Called with every published table: every waiter looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    def wrap(self, exchange: Exchange) -> Exchange | HeldStream:
        return HeldStream(exchange) if wants_stream(exchange.body) else exchange

    async def hold(self, exchange: Exchange | HeldStream, model: str, entry: RouteEntry) -> RouteEntry:
        """Waits until `model` has a ready endpoint; the entry to forward to, or the APIError to answer."""
        key = entry.scale_ref or (entry.namespace or "", entry.name)
        if self.held(key) >= self.max_held:
            raise service_unavailable(
                f"The model '{model}' is loading and {self.held(key)} requests already wait for it. "
                f"Retry after {entry.retry_after} s.", retry_after=entry.retry_after, code="model_loading")
        self._held[key] = self.held(key) + 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.timeout_s
        next_comment = started + self.keepalive_s
        try:
            while True:
                current = self._table().lookup(model)
                if current is None:
                    raise model_not_found(model, self._table().names())
                if current.ready:
                    return current
                if not current.wakeable:
                    raise not_ready(model, current)
                if current.scaled_to_zero:
                    self._start_wake(key, loop.time())
                error = self._wake_error.get(key)
                if error is not None:
                    raise service_unavailable(
                        f"The model '{model}' is scaled to zero and the router could not scale it up: {error}.",
                        retry_after=60, code="model_not_ready")
                now = loop.time()
                if now >= deadline:
                    raise service_unavailable(
                        f"The model '{model}' did not become ready within {self.timeout_s:g} s "
                        f"({current.status}). Retry later; the model keeps loading.",
                        retry_after=max(entry.retry_after, 5), code="model_not_ready")
                if isinstance(exchange, HeldStream) and now >= next_comment:
                    await exchange.comment(f"waiting for model {model} to load ({math.floor(now - started)} s)")
                    next_comment = now + self.keepalive_s
                wait = min(deadline, next_comment if isinstance(exchange, HeldStream) else deadline,
                           now + WAKE_RETRY_S) - now
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), timeout=max(wait, 0.01))
                except TimeoutError:
                    pass
        finally:
            self._held[key] -= 1
            if not self._held[key]:
                del self._held[key]
                self._wake_error.pop(key, None)
                self._released(key)

    def _start_wake(self, key: tuple[str, str], now: float) -> None:
        task = self._waking.get(key)
        if task is not None and not task.done():
            return
        if now - self._woken_at.get(key, -math.inf) < WAKE_RETRY_S:
            return
        self._woken_at[key] = now
        self._waking[key] = asyncio.create_task(self._run_wake(key))

    async def _run_wake(self, key: tuple[str, str]) -> None:
        try:
            await self._wake(*key)
        except Exception as exc:
            log.warning("waking %s/%s failed: %s", key[0], key[1], exc)
            if getattr(exc, "permanent", False):
                self._wake_error[key] = exc
        finally:
            self._waking.pop(key, None)
            self.table_changed()
