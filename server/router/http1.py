"""The router's HTTP/1.1 server: an asyncio Protocol around httptools' request parser.

Why not aiohttp's or uvicorn's server: per forwarded request the router spent
more CPU in aiohttp's server machinery than the backend spent answering
(measured in bench/router_overhead.py; docs/router.md). The router needs a
small part of HTTP: whole request bodies up to a limit, then either one sized
response or a chunked stream, keep-alive, pipelining in order, and at once
knowing when a client went away (the handler task is cancelled, which closes
the backend request).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import httptools

log = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024
# Pipelined requests waiting behind the current one before reading pauses.
MAX_PIPELINED = 16

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


class _Date:
    """The Date header, formatted once per second rather than per response."""

    def __init__(self) -> None:
        self._second = 0
        self._value = b""

    def __call__(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._value = formatdate(now, usegmt=True).encode()
        return self._value


_date = _Date()


class Exchange:
    """One request, whole, and the means to answer it (once)."""

    __slots__ = ("_conn", "method", "target", "path", "headers", "body", "keep_alive", "http10", "status", "_chunked", "_done")

    def __init__(self, conn: HTTPConnection, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes,
                 keep_alive: bool, http10: bool) -> None:
        self._conn = conn
        self.method = method
        self.target = target  # as sent: path and query, still percent-encoded
        self.path = target.split(b"?", 1)[0].decode("latin-1")
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.http10 = http10
        self.status = 0  # set once the response has started
        self._chunked = False
        self._done = False

    def header(self, name: bytes) -> bytes | None:
        """First value of a header; `name` in lower case."""
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None

    @property
    def started(self) -> bool:
        return self.status != 0

    def respond(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Send a whole response with its Content-Length."""
        self.status = status
        head = self._head(status, headers) + b"content-length: %d\r\n\r\n" % len(body)
        self._conn.write(head if self.method == b"HEAD" else head + body)
        self._finish()

    def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Begin a streamed response: chunked on HTTP/1.1, until close on HTTP/1.0."""
        self.status = status
        if self.http10:
            self.keep_alive = False
            self._conn.write(self._head(status, headers) + b"\r\n")
        else:
            self._chunked = True
            self._conn.write(self._head(status, headers) + b"transfer-encoding: chunked\r\n\r\n")

    async def write(self, chunk: bytes) -> None:
        """Send one piece of a streamed body now; waits only while the client reads slowly."""
        if not chunk:
            return
        self._conn.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if self._chunked else chunk)
        await self._conn.drain()

    def end(self, last: bytes = b"") -> None:
        """Finish a streamed response, with `last` as its final piece."""
        if self._chunked:
            self._conn.write((b"%x\r\n%s\r\n" % (len(last), last) if last else b"") + b"0\r\n\r\n")
        elif last:
            self._conn.write(last)
        self._finish()

    def abort(self) -> None:
        """Cut the connection: the client must not take a partial body for a whole one."""
        self._done = True
        self._conn.abort()

    def _head(self, status: int, headers: list[tuple[bytes, bytes]]) -> bytes:
        lines = [b"HTTP/1.1 %d %s\r\ndate: %s\r\n" % (status, _reason(status), _date())]
        lines.extend(b"%s: %s\r\n" % pair for pair in headers)
        if not self.keep_alive:
            lines.append(b"connection: close\r\n")
        return b"".join(lines)

    def _finish(self) -> None:
        self._done = True
        self._conn.finished(self)


Handler = Callable[[Exchange], Awaitable[None]]
# Answers a request the server itself refuses: (exchange, 400 | 413 | 500, detail).
Refuser = Callable[[Exchange, int, str], None]


class HTTPConnection(asyncio.Protocol):
    """One client connection. Requests are answered in the order they arrived."""

    def __init__(self, server: HTTPServer) -> None:
        self._handler = server.handler
        self._max_body = server.max_body_bytes
        self._refuse = server.refuse
        self._idle_timeout = server.idle_timeout
        self._tracker = server.connections
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Exchange] = deque()
        self._task: asyncio.Task[None] | None = None
        self._current: Exchange | None = None
        self._paused_reading = False
        self._writable: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._closing = False
        self._refusal = ""
        self._reset_message()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._tracker.add(self)
        self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject("Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            # An exception raised in a callback reaches here as "User callback error"; say what it was.
            self._reject(self._refusal or f"Malformed HTTP request: {exc}.")

    def connection_lost(self, exc: Exception | None) -> None:
        self._tracker.discard(self)
        self._closing = True
        self._cancel_timer()
        if self._task is not None and not self._task.done():
            # The client left: cancelling the handler closes its backend request too.
            self._task.cancel()
        self.resume_writing()  # wakes a writer waiting in drain(), which then sees the close

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # httptools callbacks

    def _reset_message(self) -> None:
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._header_bytes = 0
        self._body: list[bytes] = []
        self._body_bytes = 0

    def on_message_begin(self) -> None:
        self._reset_message()
        # A request must arrive whole within the idle timeout: a client trickling
        # headers or body cannot hold a connection forever.
        self._arm(self._abort_slow_request)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = f"Request headers are larger than {MAX_HEADER_BYTES} bytes."
            raise httptools.HttpParserError(self._refusal)
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        length = next((v for k, v in self._headers if k.lower() == b"content-length"), None)
        if length is not None and length.isdigit() and int(length) > self._max_body:
            self._refuse_body()
        elif any(k.lower() == b"expect" and v.lower() == b"100-continue" for k, v in self._headers):
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        if self._closing:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            self._refuse_body()  # a chunked upload, found too large on the way
        else:
            self._body.append(body)

    def _refuse_body(self) -> None:
        """413 now, without reading the rest of the body, and close."""
        if self._current is None and not self._queue:
            exchange = Exchange(self, self._parser.get_method(), self._url, self._headers, b"", False, False)
            self._current = exchange
            self._refuse(exchange, 413, "")
        else:
            self.abort()  # an oversized upload pipelined behind another request
        self._closing = True

    def on_message_complete(self) -> None:
        self._cancel_timer()
        if self._closing:
            return
        exchange = Exchange(
            self, self._parser.get_method(), self._url, self._headers, b"".join(self._body),
            self._parser.should_keep_alive(), self._parser.get_http_version() == "1.0",
        )
        self._queue.append(exchange)
        if len(self._queue) > MAX_PIPELINED and not self._paused_reading and self._transport is not None:
            self._paused_reading = True
            self._transport.pause_reading()
        self._next()

    # used by Exchange

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    async def drain(self) -> None:
        if self._writable is not None and not self._writable.done():
            await self._writable
        if self._closing:
            raise ConnectionResetError("client disconnected")

    def abort(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.abort()

    def finished(self, exchange: Exchange) -> None:
        if exchange is not self._current:
            return
        self._current = None
        if not exchange.keep_alive or self._closing:
            self._closing = True
            if self._transport is not None:
                self._transport.close()
            return
        self._next()

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after the current response."""
        if self._current is None and not self._queue:
            self._closing = True
            if self._transport is not None:
                self._transport.close()
        else:
            for exchange in [self._current, *self._queue]:
                if exchange is not None:
                    exchange.keep_alive = False

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._queue)

    # internals

    def _next(self) -> None:
        if self._current is not None or self._closing:
            return
        if not self._queue:
            self._arm_idle()
            return
        exchange = self._queue.popleft()
        if self._paused_reading and len(self._queue) <= MAX_PIPELINED // 2 and self._transport is not None:
            self._paused_reading = False
            self._transport.resume_reading()
        self._current = exchange
        self._task = self._loop.create_task(self._run(exchange))

    async def _run(self, exchange: Exchange) -> None:
        try:
            await self._handler(exchange)
        except (asyncio.CancelledError, ConnectionResetError):
            return
        except Exception:
            log.exception("unexpected error while answering %s", exchange.path)
            if not exchange.started:
                self._refuse(exchange, 500, "")
            else:
                exchange.abort()
            return
        if not exchange._done:  # a handler that forgot to finish must not hang the connection
            exchange.abort()

    def _reject(self, message: str) -> None:
        """400 for a request that cannot be parsed, then close (the stream cannot be resynchronised)."""
        self._queue.clear()
        if self._current is None:
            exchange = Exchange(self, b"GET", b"/", [], b"", False, False)
            self._current = exchange
            self._refuse(exchange, 400, message)
        else:
            self.abort()
        self._closing = True

    def _arm_idle(self) -> None:
        self._arm(self._idle_expired)

    def _arm(self, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(self._idle_timeout, callback)

    def _abort_slow_request(self) -> None:
        log.info("closing a connection whose request did not arrive within %g s", self._idle_timeout)
        self.abort()

    def _idle_expired(self) -> None:
        if self._current is None and not self._queue and self._transport is not None:
            self._closing = True
            self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None



class HTTPServer:
    """The protocol factory for `loop.create_server`, and graceful shutdown of its connections."""

    def __init__(self, handler: Handler, refuse: Refuser, max_body_bytes: int, idle_timeout: float = 75.0) -> None:
        self.handler = handler
        self.refuse = refuse
        self.max_body_bytes = max_body_bytes
        # Above common client and load-balancer idle timeouts, so they close first (no reuse race).
        self.idle_timeout = idle_timeout
        self.connections: set[HTTPConnection] = set()

    def __call__(self) -> HTTPConnection:
        return HTTPConnection(self)

    async def shutdown(self, timeout: float) -> None:
        """Close idle connections now; let busy ones finish their responses for up to `timeout` s."""
        for conn in list(self.connections):
            conn.shutdown()
        deadline = asyncio.get_running_loop().time() + timeout
        while any(conn.busy for conn in self.connections) and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()
