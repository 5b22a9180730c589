"""Requests held while a model scales from zero or loads, with the router in front of a backend that starts late.

The router runs in-process on a real socket (its event loop in a thread); the
test publishes route tables as Kubernetes discovery would, and counts the
wake-ups the router asks for instead of writing /scale (that write is tested
against the real apiserver in tests/operator/test_scale_control_plane.py).
The backend is the fake OpenAI server, started only after the request waits.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest

from localmodel_server.router.app import Router, RouterSettings
from localmodel_server.router.auth import ApiKeys
from localmodel_server.router.routes import RouteEntry, RouteTable
from localmodel_server.router.scaler import attach

REF = ("ns", "tiny")


class InProcessRouter:
    def __init__(self, timeout_s: float = 20.0, max_held: int = 8, keepalive_s: float = 0.2,
                 interval: float = 0.1) -> None:
        self.interval = interval  # of activity reports
        self.wakes: list[tuple[str, str]] = []
        self.reports: list[tuple[str, str, dict[str, Any]]] = []
        self.wake_error: Exception | None = None
        self.loop = asyncio.new_event_loop()
        self.router = Router(RouterSettings(read_timeout=30), ApiKeys())
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self.call(self._start(timeout_s, max_held, keepalive_s))

    async def _start(self, timeout_s: float, max_held: int, keepalive_s: float) -> int:
        async def wake(namespace: str, name: str) -> None:
            self.wakes.append((namespace, name))
            if self.wake_error is not None:
                raise self.wake_error

        async def write(namespace: str, name: str, patch: dict[str, Any]) -> None:
            self.reports.append((namespace, name, patch))

        activity = attach(self.router, wake, write, identity="router-a", interval=self.interval,
                          hold_timeout=timeout_s, max_held=max_held, hold_keepalive=keepalive_s)
        self._reporter = asyncio.create_task(activity.run())
        self.server = await self.loop.create_server(self.router.server(), "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def publish(self, table: RouteTable) -> None:
        async def publish() -> None:
            self.router.publish(table)
        self.call(publish())

    def held(self) -> int:
        async def held() -> int:
            assert self.router.holding is not None
            return self.router.holding.held(REF)
        return self.call(held())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            self._reporter.cancel()
            self.server.close()
            self.router.close()
        self.call(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def router() -> Iterator[InProcessRouter]:
    running = InProcessRouter()
    yield running
    running.close()


def entry(endpoints: tuple[str, ...] = (), replicas: int = 0, wakeable: bool = True, reason: str = "") -> RouteEntry:
    return RouteEntry(name="tiny-chat", endpoints=endpoints, namespace="ns", scale_ref=REF,
                      wakeable=wakeable and not endpoints, scaled_to_zero=replicas == 0,
                      reason=reason or ("scaled to zero (spec.replicas is 0)" if replicas == 0 else "loading the model"))


def table(*entries: RouteEntry) -> RouteTable:
    return RouteTable.build(entries)


def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


CHAT = {"model": "tiny-chat", "messages": [{"role": "user", "content": "hi"}]}


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(fn()), daemon=True)
    thread.start()
    return thread, result


def test_a_request_for_a_model_at_zero_waits_wakes_it_once_and_is_answered_when_a_backend_starts(
    router: InProcessRouter, fake_backend: Any
) -> None:
    router.publish(table(entry(replicas=0)))
    threads = [in_thread(lambda: httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30))
               for _ in range(3)]
    until(lambda: router.held() == 3)
    until(lambda: router.wakes)
    # What the operator's decisions read: held requests count as in flight (keepAlive), and as
    # held, which alone may wake a model at zero.
    until(lambda: any(p["status"]["activity"]["router-a"]["inFlight"] == 3
                      and p["status"]["activity"]["router-a"]["held"] == 3 for _, _, p in router.reports))

    # The scale write went through; the watch now shows 1 replica, still loading.
    router.publish(table(entry(replicas=1)))
    backend = fake_backend("tiny-chat")  # the pod starts only now
    router.publish(table(entry((backend.base_url,), replicas=1)))
    for thread, result in threads:
        thread.join(30)
        assert result and result[0].status_code == 200, result and result[0].text
    assert backend.stats()["requests"] == 3
    assert router.wakes == [REF]  # three waiters, one wake-up
    assert router.held() == 0
    until(lambda: router.reports[-1][2]["status"]["activity"]["router-a"]["inFlight"] == 0)
    assert router.reports[-1][2]["status"]["activity"]["router-a"]["held"] == 0
    assert "lastRequestTime" in router.reports[-1][2]["status"]["activity"]["router-a"]


def test_the_last_held_request_leaving_the_hold_is_reported_at_once(fake_backend: Any) -> None:
    # Reports are an hour apart here: only the release itself can have written held 0.
    router = InProcessRouter(interval=3600)
    try:
        router.publish(table(entry(replicas=0)))
        thread, result = in_thread(lambda: httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30))
        until(lambda: router.wakes)
        activity = router.reports[-1][2]["status"]["activity"]["router-a"]
        assert (activity["inFlight"], activity["held"]) == (1, 1)  # written before the wake-up
        backend = fake_backend("tiny-chat")
        router.publish(table(entry((backend.base_url,), replicas=1)))
        thread.join(30)
        assert result and result[0].status_code == 200
        until(lambda: router.reports[-1][2]["status"]["activity"]["router-a"]["held"] == 0, timeout=5)
    finally:
        router.close()


def test_a_held_stream_gets_sse_comments_then_the_backends_stream(router: InProcessRouter, fake_backend: Any) -> None:
    router.publish(table(entry(replicas=0)))
    lines: list[str] = []

    def stream() -> int:
        with httpx.stream("POST", f"{router.base_url}/v1/chat/completions", json={**CHAT, "stream": True},
                          timeout=30) as response:
            for line in response.iter_lines():
                lines.append(line)
            return response.status_code

    thread, result = in_thread(stream)
    until(lambda: sum(line.startswith(": waiting for model tiny-chat") for line in lines) >= 2)
    backend = fake_backend("tiny-chat")
    router.publish(table(entry((backend.base_url,), replicas=1)))
    thread.join(30)
    assert result == [200]
    data = [line for line in lines if line.startswith("data: ")]
    assert data[-1] == "data: [DONE]" and len(data) >= 2
    assert lines.index(data[0]) > max(i for i, line in enumerate(lines) if line.startswith(":"))


def test_the_openai_client_streams_through_a_cold_start(router: InProcessRouter, fake_backend: Any) -> None:
    router.publish(table(entry(replicas=0)))
    client = openai.OpenAI(base_url=f"{router.base_url}/v1", api_key="unused", max_retries=0)

    def chat() -> str:
        chunks = client.chat.completions.create(model="tiny-chat", messages=CHAT["messages"], stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    thread, result = in_thread(chat)
    until(lambda: router.held() == 1)
    time.sleep(0.5)  # several SSE comments reach the client before any data
    backend = fake_backend("tiny-chat")
    router.publish(table(entry((backend.base_url,), replicas=1)))
    thread.join(30)
    assert result and result[0]


def test_past_the_cap_a_request_gets_503_with_retry_after(fake_backend: Any) -> None:
    router = InProcessRouter(max_held=2)
    try:
        router.publish(table(entry(replicas=0)))
        waiting = [in_thread(lambda: httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30))
                   for _ in range(2)]
        until(lambda: router.held() == 2)
        refused = httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "5"
        error = refused.json()["error"]
        assert error["code"] == "model_loading" and "2 requests already wait" in error["message"]
        backend = fake_backend("tiny-chat")
        router.publish(table(entry((backend.base_url,), replicas=1)))
        for thread, result in waiting:
            thread.join(30)
            assert result[0].status_code == 200
    finally:
        router.close()


def test_past_the_timeout_a_held_request_gets_a_clear_503() -> None:
    router = InProcessRouter(timeout_s=1.0)
    try:
        router.publish(table(entry(replicas=1)))
        answer = httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30)
        assert answer.status_code == 503
        error = answer.json()["error"]
        assert error["code"] == "model_not_ready"
        assert "did not become ready within 1 s (loading the model)" in error["message"]
        assert router.wakes == []  # it had a replica already: nothing to wake

        # A stream that timed out after its comments began gets the same error as an SSE frame.
        with httpx.stream("POST", f"{router.base_url}/v1/chat/completions", json={**CHAT, "stream": True},
                          timeout=30) as response:
            lines = list(response.iter_lines())
        assert response.status_code == 200
        assert any(line.startswith(": waiting") for line in lines)
        assert '"code":"model_not_ready"' in [line for line in lines if line.startswith("data: ")][-1]
        assert router.held() == 0
    finally:
        router.close()


def test_a_wake_up_the_apiserver_forbids_fails_the_held_requests_with_its_reason() -> None:
    router = InProcessRouter()
    try:
        class Forbidden(Exception):
            permanent = True

        router.wake_error = Forbidden('403: localmodels.localmodel.dev "tiny" is forbidden')
        router.publish(table(entry(replicas=0)))
        answer = httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30)
        assert answer.status_code == 503
        assert "could not scale it up: 403" in answer.json()["error"]["message"]
    finally:
        router.close()


def test_models_that_cannot_be_woken_are_refused_at_once(router: InProcessRouter) -> None:
    router.publish(table(entry(replicas=1, wakeable=False, reason="downloading 42%")))
    answer = httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30)
    assert answer.status_code == 503 and "downloading 42%" in answer.json()["error"]["message"]
    assert router.wakes == [] and router.held() == 0


def test_a_table_that_shows_zero_again_while_requests_wait_wakes_the_model_again(
    router: InProcessRouter, fake_backend: Any
) -> None:
    router.publish(table(entry(replicas=0)))
    thread, result = in_thread(lambda: httpx.post(f"{router.base_url}/v1/chat/completions", json=CHAT, timeout=30))
    until(lambda: len(router.wakes) == 1)
    router.publish(table(entry(replicas=1)))
    router.publish(table(entry(replicas=0)))  # the operator scaled it down before seeing the request
    until(lambda: len(router.wakes) == 2)
    backend = fake_backend("tiny-chat")
    router.publish(table(entry((backend.base_url,), replicas=1)))
    thread.join(30)
    assert result[0].status_code == 200
