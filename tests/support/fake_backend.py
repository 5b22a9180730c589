"""A minimal OpenAI-shaped backend for the router's tests and benchmark.

It answers /v1/chat/completions, /v1/completions (plain or SSE), /v1/embeddings
and /v1/models instantly, so the router benchmark measures the router and not a
model. Tests steer it over HTTP, because it runs as a separate process (so it
can be killed mid-request):

- `POST /_fake/config` with any of `Config`'s fields changes how it answers
  (slow streams, 503 + Retry-After, dying on a request or mid-stream);
- `GET /_fake/stats` says what it saw: requests, in flight, finished,
  cancelled (the client went away before the answer ended), the last body and
  headers.

Run: `python tests/support/fake_backend.py --port 0 --name NAME`; it prints
`LISTENING <port>` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import orjson
from aiohttp import web


@dataclass
class Config:
    status: int | None = None  # answer every /v1 POST with this status and an error body
    retry_after: int | None = None  # Retry-After header sent with `status`
    error_code: str | None = None  # the error envelope's "code" sent with `status`
    chunks: int = 3  # SSE chunks of a streamed answer
    chunk_delay: float = 0.0  # seconds between SSE chunks
    chunk_padding: int = 0  # bytes of filler in each SSE chunk (to fill a client's buffers fast)
    response_delay: float = 0.0  # seconds before a non-streamed answer
    die_after_chunks: int | None = None  # kill this process after sending so many chunks
    die_on_request: bool = False  # kill this process as soon as a /v1 request body has arrived


@dataclass
class Stats:
    requests: int = 0
    in_flight: int = 0
    finished: int = 0
    cancelled: int = 0
    last_body: Any = None
    last_headers: dict[str, str] | None = None  # names lower-cased


_COMPLETION_FIXED = orjson.dumps(
    {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": "MODEL",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }
)


class FakeBackend:
    def __init__(self, name: str) -> None:
        self.name = name
        self.config = Config()
        self.stats = Stats()
        # The benchmark's hot answer is built once, as a real server's cached
        # template would be; only the model name differs per backend.
        self._chat_body = _COMPLETION_FIXED.replace(b"MODEL", name.encode())

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/embeddings", self.embeddings)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.ok)
        app.router.add_post("/_fake/config", self.set_config)
        app.router.add_get("/_fake/stats", self.get_stats)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "chat.completion")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._answer(request, "text_completion")

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await self._begin(request)
        try:
            if self.config.status is not None:
                return self._error_response()
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) and inputs and isinstance(inputs[0], str) else 1
            data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(count)]
            payload = {"object": "list", "data": data, "model": self.name, "usage": {"prompt_tokens": 1, "total_tokens": 1}}
            self.stats.finished += 1
            return web.Response(body=orjson.dumps(payload), content_type="application/json")
        finally:
            self.stats.in_flight -= 1

    async def models(self, request: web.Request) -> web.Response:
        card = {"id": self.name, "object": "model", "created": 0, "owned_by": "fake", "ready": True}
        return web.json_response({"object": "list", "data": [card]})

    async def ok(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        known = {f.name for f in fields(Config)}
        unknown = set(changes) - known
        if unknown:
            raise web.HTTPBadRequest(text=f"unknown config fields: {sorted(unknown)}")
        for key, value in changes.items():
            setattr(self.config, key, value)
        return web.json_response(asdict(self.config))

    async def get_stats(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(asdict(self.stats)), content_type="application/json")

    async def _begin(self, request: web.Request) -> dict[str, Any]:
        raw = await request.read()
        if self.config.die_on_request:
            os._exit(1)  # a request that crashes its server
        self.stats.requests += 1
        self.stats.in_flight += 1
        body = orjson.loads(raw)
        self.stats.last_body = body
        self.stats.last_headers = {k.lower(): v for k, v in request.headers.items()}
        return body

    def _error_response(self) -> web.Response:
        status = self.config.status or 500
        headers = {"Retry-After": str(self.config.retry_after)} if self.config.retry_after is not None else {}
        body = {"error": {"message": f"fake backend {self.name} answers {status}", "type": "server_error", "param": None, "code": self.config.error_code}}
        return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)

    async def _answer(self, request: web.Request, kind: str) -> web.StreamResponse:
        body = await self._begin(request)
        try:
            if self.config.status is not None:
                return self._error_response()
            if body.get("stream"):
                return await self._stream(request, kind)
            if self.config.response_delay:
                await asyncio.sleep(self.config.response_delay)
            self.stats.finished += 1
            if kind == "chat.completion":
                return web.Response(body=self._chat_body, content_type="application/json")
            completion = {
                "id": "cmpl-fake", "object": kind, "created": 0, "model": self.name,
                "choices": [{"index": 0, "text": " Paris.", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
            }
            return web.Response(body=orjson.dumps(completion), content_type="application/json")
        except asyncio.CancelledError:
            self.stats.cancelled += 1
            raise
        finally:
            self.stats.in_flight -= 1

    async def _stream(self, request: web.Request, kind: str) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        for i in range(self.config.chunks):
            if i and self.config.chunk_delay:
                await asyncio.sleep(self.config.chunk_delay)
            if self.config.die_after_chunks is not None and i >= self.config.die_after_chunks:
                os._exit(1)
            chunk = self._chunk(kind, i)
            if self.config.chunk_padding:
                chunk["pad"] = "x" * self.config.chunk_padding
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self.stats.finished += 1
        return response

    def _chunk(self, kind: str, index: int) -> dict[str, Any]:
        # The send time lets the benchmark measure what the router adds per chunk.
        sent = time.time()
        if kind == "chat.completion":
            delta = {"role": "assistant", "content": f"tok{index} "} if index == 0 else {"content": f"tok{index} "}
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            return {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": self.name, "choices": [choice], "sent": sent}
        choice = {"index": 0, "text": f"tok{index} ", "finish_reason": None}
        return {"id": "cmpl-fake", "object": "text_completion", "created": 0, "model": self.name, "choices": [choice], "sent": sent}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="fake")
    args = parser.parse_args(argv)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # uvloop is optional; the plain loop is only slower
        run = asyncio.run
    run(_serve(FakeBackend(args.name), args.host, args.port))


async def _serve(backend: FakeBackend, host: str, port: int) -> None:
    runner = web.AppRunner(backend.app(), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"LISTENING {bound}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    main(sys.argv[1:])
