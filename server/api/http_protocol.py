"""uvicorn's httptools protocol, with the request-head limits the router keeps.

uvicorn's httptools protocol (what `http="auto"` picks when httptools is
installed) puts no limit on a request's head: it accepted a 2 MiB header and
5,000 headers, buffered whole. `h11_max_incomplete_event_size` bounds only the
pure-Python h11 protocol, which would cost every streamed token more CPU. A
server pod is reachable inside the cluster without the router in front, so the
server keeps the router's limits itself: the same constants, from
server/http_limits.py.

What must hold: the head (request line and headers) is counted as its bytes
arrive, so a head that never ends is refused at the limit rather than
buffered; a refusal is a 431 in the OpenAI envelope, after which the
connection half-closes and drops input for a moment, so the client reads the
431 instead of a reset.
"""

from __future__ import annotations

from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..http_limits import MAX_HEADER_BYTES, MAX_HEADER_COUNT
from ..protocol import errors

# How long a refused connection keeps dropping what the client still sends.
LINGER_S = 5.0


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0  # bytes fed while the current head is incomplete
        self._header_count = 0
        self._refusal: str | None = None
        self._refused = False

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a 431: drop the rest
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)  # an over-limit callback raises into its 400 path, sent as 431 below
        if self._refused or self.transport.is_closing():
            return
        if self._in_head and self._head_bytes > MAX_HEADER_BYTES:
            self._refuse(f"Request headers are larger than {MAX_HEADER_BYTES} bytes.")

    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADER_COUNT:
            self._refusal = f"A request may carry at most {MAX_HEADER_COUNT} headers."
            raise httptools.HttpParserError(self._refusal)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            self._refuse(self._refusal)
        else:
            super().send_400_response(msg)

    def _refuse(self, message: str) -> None:
        self._refused = True
        error = errors.headers_too_large(message)
        body = error.body_bytes()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        head += [b"%s: %s\r\n" % pair for pair in (*self.server_state.default_headers, *error.raw_headers())]
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self.transport.close()
