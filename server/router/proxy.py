"""The hot path: send one request to a model's backends and relay the answer.

Bodies pass through as bytes. A non-streamed answer is read whole and then
sent, so a backend failing at any point before that can be retried; a streamed
answer (no Content-Length, e.g. SSE) is relayed chunk by chunk as it arrives,
and is retried only while its first chunk has not reached the client.
"""

from __future__ import annotations

import logging
import math

import orjson

from localmodel_server.protocol.errors import QUEUE_FULL, APIError, bad_gateway, gateway_timeout, service_unavailable

from .balancer import Balancer, NoEndpoint, parse_retry_after
from .http1 import Exchange
from .metrics import RouterMetrics
from .routes import RouteEntry
from .upstream import ConnectFailed, Response, UpstreamError, UpstreamPool, UpstreamTimeout, find_header

log = logging.getLogger(__name__)

# Backend answers that mean "try another endpoint" (the backend did no work).
RETRY_STATUSES = frozenset({502, 503})
# An endpoint that refused a connection rests this long, so that each request
# until discovery drops it does not pay for a failed connect first.
CONNECT_FAILURE_REST_S = 1.0

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus those
# the router rewrites. Authorization is the router's own credential: backends
# never see a client's key.
_REQUEST_DROP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"proxy-authenticate", b"proxy-authorization",
        b"te", b"trailer", b"transfer-encoding", b"upgrade", b"host", b"content-length",
        b"expect", b"authorization",
    }
)
_RESPONSE_DROP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
        b"upgrade", b"content-length", b"date",
    }
)


def forward_header_block(raw_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The client's end-to-end headers as "Name: value\\r\\n" lines for the backend.

    httptools (llhttp) has already rejected CR/LF in names and values, so the
    lines cannot smuggle a header or a second request.
    """
    return b"".join(b"%s: %s\r\n" % (name, value) for name, value in raw_headers if name.lower() not in _REQUEST_DROP)


def _response_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in _RESPONSE_DROP]


class _BackendRefused(Exception):
    """A backend answered 502/503: kept whole, to be relayed if no other endpoint is left."""

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        super().__init__(f"backend answered {status}")
        self.status = status
        self.headers = headers
        self.body = body

    @property
    def queue_full(self) -> bool:
        """The backend is busy, not unavailable: it takes requests again as soon as one ends."""
        if self.status != 503 or not self.body.startswith(b"{"):
            return False
        try:
            error = orjson.loads(self.body).get("error")
        except orjson.JSONDecodeError:
            return False
        return isinstance(error, dict) and error.get("code") == QUEUE_FULL


class Proxy:
    def __init__(self, pool: UpstreamPool, balancer: Balancer, metrics: RouterMetrics) -> None:
        self.pool = pool
        self.balancer = balancer
        self.metrics = metrics

    async def forward(self, exchange: Exchange, entry: RouteEntry, header_block: bytes) -> None:
        """Answer `exchange` from one of `entry`'s endpoints, trying the next on a safe failure."""
        model = entry.name
        tried: list[str] = []
        refused: _BackendRefused | None = None
        failure: UpstreamError | None = None
        while True:
            try:
                endpoint = self.balancer.pick(entry.endpoints, tried)
            except NoEndpoint as exc:
                if refused is not None:
                    # Every endpoint refused: the last refusal is the most useful answer.
                    exchange.respond(refused.status, _response_headers(refused.headers), refused.body)
                    return
                raise self._exhausted(entry, tried, failure, exc) from None
            if tried:
                self.metrics.retries.labels(model).inc()
            tried.append(endpoint.url)
            endpoint.in_flight += 1
            try:
                return await self._attempt(exchange, endpoint.url, header_block)
            except _BackendRefused as exc:
                refused = exc
                self.metrics.upstream_errors.labels(model, f"status_{exc.status}").inc()
                retry_after = find_header(exc.headers, b"retry-after")
                pause = parse_retry_after(retry_after.decode("latin-1") if retry_after is not None else None)
                # A full queue is relayed as it is; resting the endpoint for its Retry-After would refuse
                # every client in that time, while the backend frees a slot with each finished request.
                if pause is not None and not exc.queue_full:
                    self.balancer.cool_down(endpoint.url, pause, f"its backends asked to retry after {math.ceil(pause)} s")
            except UpstreamTimeout as exc:
                # A slow backend is not a dead one; piling the same work onto another does not help.
                self.metrics.upstream_errors.labels(model, exc.reason).inc()
                raise gateway_timeout(f"The backend for model '{model}' did not answer in time: {exc}.") from None
            except UpstreamError as exc:
                failure = exc
                self.metrics.upstream_errors.labels(model, exc.reason).inc()
                if isinstance(exc, ConnectFailed):
                    self.balancer.cool_down(endpoint.url, CONNECT_FAILURE_REST_S, f"no backend accepted a connection ({exc})")
                log.warning("model %s: %s; %s", model, exc, "retrying on another endpoint" if len(tried) < len(entry.endpoints) else "no endpoint left")
            finally:
                endpoint.in_flight -= 1

    async def _attempt(self, exchange: Exchange, url: str, header_block: bytes) -> None:
        """One try. Raises UpstreamError or _BackendRefused only while the client has seen nothing."""
        upstream = await self.pool.request(url, exchange.method, exchange.target, header_block, exchange.body)
        try:
            if upstream.status in RETRY_STATUSES:
                raise _BackendRefused(upstream.status, upstream.headers, await upstream.read())
            if upstream.header(b"content-length") is not None:
                data = await upstream.read()
                exchange.respond(upstream.status, _response_headers(upstream.headers), data)
            else:
                await self._stream(exchange, upstream)
        finally:
            upstream.close()

    async def _stream(self, exchange: Exchange, upstream: Response) -> None:
        chunk = await upstream.next_chunk()
        exchange.start(upstream.status, _response_headers(upstream.headers))
        # From here on the client has bytes: a failure can only be reported, not retried.
        try:
            while chunk is not None:
                await exchange.write(chunk)
                chunk = await upstream.next_chunk()
        except UpstreamError as exc:
            self._break_stream(exchange, upstream, exc)
            return
        exchange.end()

    def _break_stream(self, exchange: Exchange, upstream: Response, exc: UpstreamError) -> None:
        log.warning("backend failed mid-stream: %s", exc)
        content_type = (upstream.header(b"content-type") or b"").lower()
        if content_type.startswith(b"text/event-stream"):
            exchange.end(bad_gateway(f"The backend failed while streaming the answer: {exc}.").sse_event())
        else:
            # Any other body: cut the connection so the client cannot take a partial body for a whole one.
            exchange.abort()

    def _exhausted(self, entry: RouteEntry, tried: list[str], failure: UpstreamError | None, resting: NoEndpoint) -> APIError:
        if failure is None:
            wait = max(1, math.ceil(resting.retry_after or 1))
            return service_unavailable(
                f"The model '{entry.name}' cannot answer now: {resting.reason or 'no endpoint is available'}.",
                retry_after=wait,
                code="model_busy",
            )
        endpoints = "endpoint" if len(tried) == 1 else f"{len(tried)} endpoints"
        return bad_gateway(f"No backend of model '{entry.name}' answered (tried {endpoints}): {failure}.")

