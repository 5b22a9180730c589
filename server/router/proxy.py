"""The hot path: send one request to a model's backends and relay the answer.

Bodies pass through as bytes: a non-streamed answer is read whole and then
sent; a streamed one (no Content-Length, e.g. SSE) is relayed chunk by chunk.

A request is sent to another endpoint only when the first cannot have done
any of its work: the connection was never made, or the backend refused it
with 503 and Retry-After before any body. A backend that received the request
and then failed (closed, crashed, timed out, answered 5xx) may have acted on
it, so its failure is the client's answer: a POST is never replayed, and a
request that crashes backends cannot walk through every replica. Retries are
bounded to one more endpoint, as KubeAI's proxy bounds its own.
"""

from __future__ import annotations

import logging
import math
from enum import Enum

import orjson

from localmodel_server.protocol.errors import QUEUE_FULL, APIError, bad_gateway, gateway_timeout, service_unavailable

from .balancer import Balancer, NoEndpoint, parse_retry_after
from .exchange import Exchange
from .metrics import RouterMetrics
from .routes import RouteEntry
from .upstream import ConnectFailed, Response, UpstreamError, UpstreamPool, UpstreamTimeout, find_header

log = logging.getLogger(__name__)



class Outcome(Enum):
    """How one try at an endpoint failed, as far as trying another is concerned."""

    CONNECT_FAILED = "connect"  # no connection: not a byte of the request left
    REFUSED = "refused"  # 503 with Retry-After, before any body: the backend did no work
    DISCONNECTED = "disconnect"  # the request was sent and the backend broke off: it may have acted
    TIMED_OUT = "timeout"  # the request was sent and the backend went silent: it may still be acting


# The outcomes after which another endpoint may be tried: those where the first did no work.
RETRYABLE = frozenset({Outcome.CONNECT_FAILED, Outcome.REFUSED})
# Endpoints one request may reach: the first, and one more.
MAX_ENDPOINTS_PER_REQUEST = 2


def may_try_another(outcome: Outcome, endpoints_tried: int) -> bool:
    return outcome in RETRYABLE and endpoints_tried < MAX_ENDPOINTS_PER_REQUEST


def is_refusal(status: int, headers: list[tuple[bytes, bytes]]) -> bool:
    """A 503 that says when to come back: the backend turned the request away without working on it."""
    return status == 503 and find_header(headers, b"retry-after") is not None

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
    """A backend refused (503 + Retry-After): kept whole, to be relayed if no other endpoint takes the request."""

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
        """Answer `exchange` from one of `entry`'s endpoints; another is tried only after a failure in RETRYABLE."""
        model = entry.name
        tried: list[str] = []
        refused: _BackendRefused | None = None
        failure: ConnectFailed | None = None
        while True:
            try:
                endpoint = self.balancer.pick(entry.endpoints, tried)
            except NoEndpoint as exc:
                if refused is not None:
                    self._relay_refusal(exchange, refused)
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
                self._rest_if_asked(endpoint.url, exc)
                if not may_try_another(Outcome.REFUSED, len(tried)):
                    self._relay_refusal(exchange, exc)
                    return
            except ConnectFailed as exc:
                failure = exc
                self.metrics.upstream_errors.labels(model, exc.reason).inc()
                self.balancer.cool_down(endpoint.url, CONNECT_FAILURE_REST_S, f"no backend accepted a connection ({exc})")
                if not may_try_another(Outcome.CONNECT_FAILED, len(tried)):
                    if refused is not None:
                        self._relay_refusal(exchange, refused)
                        return
                    raise self._exhausted(entry, tried, failure, None) from None
                log.warning("model %s: %s; trying another endpoint", model, exc)
            except UpstreamTimeout as exc:
                # A slow backend is not a dead one, and it may still be working on the request.
                self.metrics.upstream_errors.labels(model, exc.reason).inc()
                raise gateway_timeout(f"The backend for model '{model}' did not answer in time: {exc}.") from None
            except UpstreamError as exc:
                # The backend had the request: it may have acted on it (or crashed on it), so no replay.
                self.metrics.upstream_errors.labels(model, exc.reason).inc()
                log.warning("model %s: %s after the request was sent; not retried", model, exc)
                raise bad_gateway(f"The backend of model '{model}' failed before answering: {exc}. "
                                  "The request was not retried, as the backend may have acted on it.") from None
            finally:
                endpoint.in_flight -= 1

    def _rest_if_asked(self, url: str, refusal: _BackendRefused) -> None:
        retry_after = find_header(refusal.headers, b"retry-after")
        pause = parse_retry_after(retry_after.decode("latin-1") if retry_after is not None else None)
        # A full queue keeps its endpoint in rotation: resting it for its Retry-After would refuse
        # every client in that time, while the backend frees a slot with each finished request.
        if pause is not None and not refusal.queue_full:
            self.balancer.cool_down(url, pause, f"its backends asked to retry after {math.ceil(pause)} s")

    @staticmethod
    def _relay_refusal(exchange: Exchange, refusal: _BackendRefused) -> None:
        # The backend's own 503 says best when to come back.
        exchange.respond(refusal.status, _response_headers(refusal.headers), refusal.body)

    async def _attempt(self, exchange: Exchange, url: str, header_block: bytes) -> None:
        """One try. Raises UpstreamError or _BackendRefused only while the client has seen nothing."""
        upstream = await self.pool.request(url, exchange.method, exchange.target, header_block, exchange.body)
        try:
            if is_refusal(upstream.status, upstream.headers):
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

    def _exhausted(self, entry: RouteEntry, tried: list[str], failure: ConnectFailed | None,
                   resting: NoEndpoint | None) -> APIError:
        if failure is None:
            assert resting is not None
            wait = max(1, math.ceil(resting.retry_after or 1))
            return service_unavailable(
                f"The model '{entry.name}' cannot answer now: {resting.reason or 'no endpoint is available'}.",
                retry_after=wait,
                code="model_busy",
            )
        endpoints = "endpoint" if len(tried) == 1 else f"{len(tried)} endpoints"
        return bad_gateway(f"No backend of model '{entry.name}' answered (tried {endpoints}): {failure}.")

