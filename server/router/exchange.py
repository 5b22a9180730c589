"""One HTTP/1.1 request, whole, and the means to answer it: the handler's side of http1.py."""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .http1 import HTTPConnection

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
