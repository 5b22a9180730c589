"""A small pooled HTTP/1.1 client for the router's backends.

Why not aiohttp's ClientSession: measured on this router's hot path it cost
more than the whole backend answer (bench/router_overhead.py; docs/router.md).
The router needs only a narrow slice of HTTP: one POST with a known body, a
response whose body is forwarded as it arrives, keep-alive reuse, and an
immediate close when the client goes away. That is an asyncio Protocol around
httptools' C parser (llhttp, the parser Node.js uses).
"""

from __future__ import annotations

import asyncio
import select
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

from localmodel_server.http_limits import POOLED_REUSE_S

# Reading pauses while this much of a response waits for a slow client.
_HIGH_WATER = 1 << 20
# An idle pooled connection older than this is closed rather than reused: it stays
# inside the model server's keep-alive, which both sides take from one setting.
IDLE_REUSE_S = POOLED_REUSE_S
_MAX_IDLE_PER_ORIGIN = 256


class UpstreamError(Exception):
    """The backend could not be reached or broke off its answer."""

    reason = "error"


class ConnectFailed(UpstreamError):
    reason = "connect"


class UpstreamClosed(UpstreamError):
    reason = "disconnect"


class UpstreamTimeout(UpstreamError):
    reason = "timeout"


@dataclass(frozen=True)
class Origin:
    host: str
    port: int
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Origin:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"backend URL must be http://host:port, got {url!r}")
        port = parts.port or 80
        return cls(parts.hostname, port, parts.netloc.encode("ascii"))


def find_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """First value of header `name` (lower case) in a raw header list."""
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


class Response:
    """A backend's answer; its body arrives through `read()` or `next_chunk()`.

    It holds its connection only until the message is complete: from then on the
    connection is back in the pool and belongs to the next request, so nothing a
    slow reader of this answer does (resume reading, abort) may reach it.
    """

    def __init__(self, conn: _Connection, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self._conn: _Connection | None = conn
        self.status = status
        self.headers = headers
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._complete = False
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None

    def header(self, name: bytes) -> bytes | None:
        return find_header(self.headers, name)

    @property
    def complete(self) -> bool:
        return self._complete

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet read: bounded near _HIGH_WATER by pausing the connection."""
        return self._buffered

    async def next_chunk(self) -> bytes | None:
        """The next piece of the body as the backend sent it; None at its end."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < _HIGH_WATER and self._conn is not None:
            self._conn.resume()
        return chunk

    async def read(self) -> bytes:
        parts = []
        while (chunk := await self.next_chunk()) is not None:
            parts.append(chunk)
        return b"".join(parts)

    def close(self) -> None:
        """Abort the connection unless the whole answer arrived (frees the backend's slot)."""
        if self._conn is not None:
            self._conn.abort()
            self._conn = None

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        if self._buffered >= _HIGH_WATER and self._conn is not None:
            self._conn.pause()
        self._wake()

    def _finish(self) -> None:
        """The message is complete: let go of the connection before the pool hands it on."""
        self._complete = True
        self._conn = None
        self._wake()

    def _fail(self, error: UpstreamError) -> None:
        if not self._complete:
            self._error = error
            self._conn = None
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, pool: UpstreamPool, origin: Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head: asyncio.Future[Response] | None = None
        self._response: Response | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._paused = False
        self.closed = False
        self.idle_since = 0.0

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._last_activity = self._pool.loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._break(UpstreamClosed(f"invalid HTTP from backend {self.origin.host}:{self.origin.port}: {exc}"))
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_watchdog()
        self._break(UpstreamClosed(f"backend {self.origin.host}:{self.origin.port} closed the connection"))

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = Response(self, self._parser.get_status_code(), self._headers)
        self._response = response
        if self._head is not None and not self._head.done():
            self._head.set_result(response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        response, self._response = self._response, None
        self._stop_watchdog()
        if response is not None:
            response._finish()
        # The last packet may have paused reading on its way in; the next request needs it.
        self.resume()
        if self._parser.should_keep_alive() and not self.closed:
            self._pool.release(self)
        else:
            self.abort()

    # used by the pool and the response

    def send(self, data: list[bytes], read_timeout: float) -> asyncio.Future[Response]:
        loop = self._pool.loop
        self._headers = []
        self._head = loop.create_future()
        self._last_activity = loop.time()
        self._watchdog = loop.call_later(read_timeout, self._check_idle, read_timeout)
        assert self._transport is not None
        self._transport.writelines(data)
        return self._head

    def abort(self) -> None:
        self.closed = True
        self._stop_watchdog()
        if self._transport is not None:
            self._transport.abort()

    def readable(self) -> bool:
        """Whether the idle socket has something to read that the loop has not seen yet.

        An idle connection has nothing to say, so that something is the server's close
        (or garbage): the connection must not carry a request. One poll(2), as urllib3
        checks a pooled connection before it reuses it.
        """
        sock = self._transport.get_extra_info("socket") if self._transport is not None else None
        if sock is None:
            return False
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None and not self.closed:
            self._paused = False
            self._transport.resume_reading()

    def _check_idle(self, read_timeout: float) -> None:
        # One timer per request, re-armed lazily: cheaper than resetting it per packet.
        idle = self._pool.loop.time() - self._last_activity
        if idle >= read_timeout:
            self._break(UpstreamTimeout(f"backend {self.origin.host}:{self.origin.port} sent nothing for {read_timeout:g} s"))
            self.abort()
        else:
            self._watchdog = self._pool.loop.call_later(read_timeout - idle, self._check_idle, read_timeout)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _break(self, error: UpstreamError) -> None:
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        if self._response is not None:
            self._response._fail(error)
            self._response = None


class UpstreamPool:
    """Keep-alive connections per backend origin, reused LIFO (warm sockets first)."""

    def __init__(self, connect_timeout: float = 5.0, read_timeout: float = 600.0) -> None:
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: dict[Origin, list[_Connection]] = {}
        self._origins: dict[str, Origin] = {}
        self.loop = asyncio.get_running_loop()

    def origin(self, url: str) -> Origin:
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = Origin.parse(url)
        return origin

    async def request(self, url: str, method: bytes, target: bytes, header_block: bytes, body: bytes) -> Response:
        """Send one request to the backend at `url`; returns once its status and headers arrived.

        `header_block` is the already-filtered "Name: value\\r\\n" lines to forward.
        The request is written once: a failure after that (UpstreamClosed, UpstreamTimeout)
        is raised, never replayed here, because the backend may have received it. What
        keeps a reused connection from failing is checking it before the write.
        """
        origin = self.origin(url)
        head = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n" % (
            method, target, origin.host_header, header_block, len(body),
        )
        # One write for small bodies (one segment on the wire); big ones are not copied.
        data = [head + body] if len(body) < 65536 else [head, body]
        conn = self._take_idle(origin) or await self._connect(origin)
        return await self._exchange(conn, data)

    def release(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) >= _MAX_IDLE_PER_ORIGIN:
            conn.abort()
            return
        conn.idle_since = self.loop.time()
        idle.append(conn)

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.abort()
        self._idle.clear()

    async def _exchange(self, conn: _Connection, data: list[bytes]) -> Response:
        try:
            return await conn.send(data, self.read_timeout)
        except BaseException:
            # Cancelled (the client left) or failed: never reuse a half-used connection.
            conn.abort()
            raise

    def _take_idle(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = self.loop.time()
        while idle:
            conn = idle.pop()
            if not conn.closed and now - conn.idle_since < IDLE_REUSE_S and not conn.readable():
                return conn
            conn.abort()
        return None

    async def _connect(self, origin: Origin) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await self.loop.create_connection(
                    lambda: _Connection(self, origin), origin.host, origin.port
                )
        except TimeoutError as exc:
            raise ConnectFailed(f"connecting to backend {origin.host}:{origin.port} timed out after {self.connect_timeout:g} s") from exc
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to backend {origin.host}:{origin.port}: {exc.strerror or exc}") from exc
        return conn

