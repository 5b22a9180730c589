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
from collections import deque
from collections.abc import Awaitable, Callable

import httptools

from localmodel_server.http_limits import MAX_HEADER_BYTES, MAX_HEADER_COUNT

from .exchange import Exchange

log = logging.getLogger(__name__)

# Pipelined requests waiting behind the current one before reading pauses.
MAX_PIPELINED = 16
# After a refusal sent before the request was read whole (413, 431, 400, 503), the
# connection is half-closed and what the client still sends is read and dropped for
# up to this long: closing with unread data would answer it with a reset, which
# often destroys the refusal before the client reads it (nginx's lingering close).
LINGER_S = 5.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

Handler = Callable[[Exchange], Awaitable[None]]
# Answers a request the server itself refuses: (exchange, 400 | 413 | 431 | 500 | 503, detail).
Refuser = Callable[[Exchange, int, str], None]


class HTTPConnection(asyncio.Protocol):
    """One client connection. Requests are answered in the order they arrived."""

    def __init__(self, server: HTTPServer) -> None:
        self._handler = server.handler
        self._max_body = server.max_body_bytes
        self._refuse = server.refuse
        self._idle_timeout = server.idle_timeout
        self._write_timeout = server.write_timeout
        self._tracker = server.connections
        # Over the server's connection cap: the first request is refused with 503.
        self._over_capacity = len(server.connections) >= server.max_connections
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
        self._lingering = False
        self._refusal: tuple[int, str] | None = None
        # Bytes of the request head (line and headers) read so far, counted as they arrive,
        # so that a head that never ends is refused at the limit, not buffered until a timeout.
        self._in_head = True
        self._head_bytes = 0
        self._continue_pending = False
        self._reset_message()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._tracker.add(self)
        if self._over_capacity:
            self._arm(self.abort, LINGER_S)  # a refused connection is not held for the idle timeout
        else:
            self._arm_idle()

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return  # refused: what still arrives is dropped while the connection lingers
        if self._in_head:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reject(400, "Protocol upgrades are not supported.")
        except httptools.HttpParserError as exc:
            # An exception raised in a callback reaches here as "User callback error"; say what it was.
            self._reject(*(self._refusal or (400, f"Malformed HTTP request: {exc}.")))
        else:
            if self._in_head and self._head_bytes > MAX_HEADER_BYTES and not self._closing:
                self._reject(431, f"Request headers are larger than {MAX_HEADER_BYTES} bytes.")

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
        self._arm(self._abort_slow_request, LINGER_S if self._over_capacity else None)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._header_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEADER_BYTES:
            self._refusal = (431, f"Request headers are larger than {MAX_HEADER_BYTES} bytes.")
            raise httptools.HttpParserError(self._refusal[1])
        if len(self._headers) >= MAX_HEADER_COUNT:
            self._refusal = (431, f"A request may carry at most {MAX_HEADER_COUNT} headers.")
            raise httptools.HttpParserError(self._refusal[1])
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        length = next((v for k, v in self._headers if k.lower() == b"content-length"), None)
        if self._over_capacity:
            self._refuse_early(503, "The router is at its connection limit.")
        elif length is not None and length.isdigit() and int(length) > self._max_body:
            self._refuse_early(413, "")
        elif any(k.lower() == b"expect" and v.lower() == b"100-continue" for k, v in self._headers):
            # Between responses only: a pipelined request ahead may still be mid-answer.
            if self.busy:
                self._continue_pending = True
            else:
                self.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._closing:
            return
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            self._refuse_early(413, "")  # a chunked upload, found too large on the way
        else:
            self._body.append(body)

    def _refuse_early(self, status: int, detail: str) -> None:
        """Refuse now, without reading the rest of the request; the connection then lingers and closes."""
        self._continue_pending = False
        if self._current is None and not self._queue:
            exchange = Exchange(self, self._parser.get_method(), self._url, self._headers, b"", False, False)
            self._current = exchange
            self._lingering = True
            self._refuse(exchange, status, detail)
        else:
            self.abort()  # refused behind a pipelined request still being answered
        self._closing = True

    def on_message_complete(self) -> None:
        self._cancel_timer()
        self._in_head = True
        self._head_bytes = 0
        self._continue_pending = False  # the body came without it
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
        """Wait while the client's buffer is full; a client that stops reading is cut off after the write timeout."""
        if self._writable is not None and not self._writable.done():
            try:
                async with asyncio.timeout(self._write_timeout):
                    await asyncio.shield(self._writable)
            except TimeoutError:
                log.info("closing a connection whose client read nothing for %g s", self._write_timeout)
                self.abort()
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
        if self._lingering:
            self._linger()
            return
        if not exchange.keep_alive or self._closing:
            self._closing = True
            if self._transport is not None:
                self._transport.close()
            return
        self._next()

    def _linger(self) -> None:
        """Half-close after a refusal, keep dropping input for LINGER_S, then close."""
        self._closing = True
        if self._transport is None or self._transport.is_closing():
            return
        if not self._transport.can_write_eof():
            self._transport.close()
            return
        self._transport.write_eof()  # sent after the refusal: the client reads it, then our FIN
        self._arm(self._transport.close, LINGER_S)

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
            if self._continue_pending:  # the request being read may send its body now
                self._continue_pending = False
                self.write(_CONTINUE)
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

    def _reject(self, status: int, message: str) -> None:
        """400 (431 for an oversized head) for a request that cannot be parsed, then close:
        the stream cannot be resynchronised."""
        self._queue.clear()
        if self._current is None:
            exchange = Exchange(self, b"GET", b"/", [], b"", False, False)
            self._current = exchange
            self._lingering = True
            self._refuse(exchange, status, message)
        else:
            self.abort()
        self._closing = True

    def _arm_idle(self) -> None:
        self._arm(self._idle_expired)

    def _arm(self, callback: Callable[[], None], delay: float | None = None) -> None:
        self._cancel_timer()
        self._timer = self._loop.call_later(self._idle_timeout if delay is None else delay, callback)

    def _abort_slow_request(self) -> None:
        log.info("closing a connection whose request did not arrive within %g s", self._idle_timeout)
        self.abort()

    def _idle_expired(self) -> None:
        if self._current is None and not self._queue and self._transport is not None:
            self._closing = True
            if self._transport.get_write_buffer_size():
                self._transport.abort()  # an answer the client never read: close() would wait for it forever
            else:
                self._transport.close()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None



class HTTPServer:
    """The protocol factory for `loop.create_server`, and graceful shutdown of its connections."""

    def __init__(self, handler: Handler, refuse: Refuser, max_body_bytes: int, idle_timeout: float = 75.0,
                 write_timeout: float = 60.0, max_connections: int = 10_000) -> None:
        self.handler = handler
        self.refuse = refuse
        self.max_body_bytes = max_body_bytes
        # Above common client and load-balancer idle timeouts, so they close first (no reuse race).
        self.idle_timeout = idle_timeout
        # A client that reads nothing of a stream for this long is cut off, which frees its backend
        # (nginx's send_timeout is 60 s).
        self.write_timeout = write_timeout
        # Open connections beyond this are answered 503: each costs a descriptor and buffers, and a
        # router out of descriptors cannot accept anyone.
        self.max_connections = max_connections
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
