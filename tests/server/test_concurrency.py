"""Continuous batching, queueing and cancellation on a real server."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import ollama
import openai
import pytest

from support.model_server import open_stream, wait_for

pytestmark = pytest.mark.llama

PROMPTS = ["What is the capital of France?", "Write a poem about the sea", "List three colours", "2 + 2 ="]


async def stream_tokens(client: openai.AsyncOpenAI, prompt: str, max_tokens: int, events: list, tag: int) -> None:
    stream = await client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=max_tokens, stream=True,
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            events.append(("token", tag))
        if chunk.choices and chunk.choices[0].finish_reason:
            events.append(("done", tag))


def test_two_streams_produce_tokens_before_either_finishes(chat_server):
    async def run() -> list:
        client = openai.AsyncOpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)
        events: list = []
        await asyncio.gather(stream_tokens(client, PROMPTS[0], 60, events, 0),
                             stream_tokens(client, PROMPTS[1], 60, events, 1))
        return events

    events = asyncio.run(run())
    first_done = next(i for i, e in enumerate(events) if e[0] == "done")
    before = {tag for kind, tag in events[:first_done] if kind == "token"}
    assert before == {0, 1}, events


def test_greedy_output_is_identical_alone_and_beside_three_others(chat_server):
    client = openai.OpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)

    def complete(prompt: str) -> str:
        return client.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": prompt}], temperature=0, max_tokens=32,
        ).choices[0].message.content

    alone = [complete(p) for p in PROMPTS]

    async def together() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)
        results = await asyncio.gather(*(aclient.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": p}], temperature=0, max_tokens=32,
        ) for p in PROMPTS))
        return [r.choices[0].message.content for r in results]

    assert asyncio.run(together()) == alone
    # A second round reuses each slot's cached prefix; the output must not change.
    assert asyncio.run(together()) == alone


def test_repeated_prompt_reuses_the_cached_prefix(chat_server):
    before = chat_server.metric("localmodel_cached_prompt_tokens_total")
    body = {"model": "llama3", "messages": [{"role": "user", "content": "cache me " * 20}], "max_tokens": 2}
    for _ in range(2):
        httpx.post(f"{chat_server.base_url}/v1/chat/completions", json=body, timeout=60).raise_for_status()
    assert chat_server.metric("localmodel_cached_prompt_tokens_total") - before >= 40


@pytest.fixture
def one_slot_server(server_factory, chat_model):
    server = server_factory(chat_model, "--served-name", "llama3", "--context-size", "4096",
                            "--parallel", "1", "--queue-size", "1")
    yield server
    server.stop()


def test_full_queue_answers_503_with_retry_after(one_slot_server):
    running = open_stream(one_slot_server)
    try:
        queued = httpx.AsyncClient(base_url=one_slot_server.base_url, timeout=60)

        async def scenario() -> httpx.Response:
            waiting = asyncio.create_task(queued.post("/v1/chat/completions", json={
                "model": "llama3", "messages": [{"role": "user", "content": "q"}], "max_tokens": 2}))
            await asyncio.sleep(0)
            assert await asyncio.to_thread(wait_for, lambda: one_slot_server.metric("localmodel_queue_depth") == 1)
            refused = await asyncio.to_thread(httpx.post, f"{one_slot_server.base_url}/v1/chat/completions",
                                              json={"model": "llama3", "messages": [{"role": "user", "content": "r"}]})
            waiting.cancel()
            return refused

        refused = asyncio.run(scenario())
        assert refused.status_code == 503
        # Nothing has finished yet: the wait is at least a second, jittered, and the
        # millisecond header that OpenAI's SDKs read first agrees with Retry-After.
        wait_ms = int(refused.headers["retry-after-ms"])
        assert 500 <= wait_ms <= 60_000
        assert refused.headers["retry-after"] == str(max(1, -(-wait_ms // 1000)))
        assert refused.json()["error"]["code"] == "queue_full"
    finally:
        running.close()


def test_a_full_server_refuses_before_the_body_is_read(one_slot_server):
    # The slot and the one queue place are taken; a third request is refused before any work
    # is spent on it, so even a body that is not JSON gets the 503, not a 400.
    running, waiting = open_stream(one_slot_server), open_stream(one_slot_server)
    try:
        assert wait_for(lambda: one_slot_server.metric("localmodel_queue_depth") == 1)
        refused = httpx.post(f"{one_slot_server.base_url}/v1/chat/completions", content=b"{not json",
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "queue_full"
        assert int(refused.headers["retry-after-ms"]) >= 50
        # Ollama's API is refused the same way, in Ollama's shape.
        with pytest.raises(ollama.ResponseError) as refused_ollama:
            ollama.Client(host=one_slot_server.base_url).chat(
                model="llama3", messages=[{"role": "user", "content": "hi"}])
        assert refused_ollama.value.status_code == 503
        assert "queue is full" in refused_ollama.value.error
    finally:
        running.close()
        waiting.close()
    # Both places are given back when their responses end.
    assert wait_for(lambda: one_slot_server.metric("localmodel_busy_slots") == 0, timeout=5)
    for _ in range(3):
        response = httpx.post(f"{one_slot_server.base_url}/v1/chat/completions", timeout=30, json={
            "model": "llama3", "messages": [{"role": "user", "content": "next"}], "max_tokens": 3})
        assert response.status_code == 200


def test_stream_disconnect_frees_the_slot(one_slot_server):
    sock = open_stream(one_slot_server)
    assert one_slot_server.metric("localmodel_busy_slots") == 1
    sock.close()
    assert wait_for(lambda: one_slot_server.metric("localmodel_busy_slots") == 0, timeout=5)
    # The slot serves the next request at once.
    response = httpx.post(f"{one_slot_server.base_url}/v1/chat/completions", timeout=30,
                          json={"model": "llama3", "messages": [{"role": "user", "content": "next"}], "max_tokens": 3})
    assert response.status_code == 200


def test_non_stream_disconnect_frees_the_slot(one_slot_server):
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000}).encode()
    sock = socket.create_connection(("127.0.0.1", one_slot_server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert wait_for(lambda: one_slot_server.metric("localmodel_busy_slots") == 1)
    generated_before = one_slot_server.metric("localmodel_completion_tokens_total")
    sock.close()
    assert wait_for(lambda: one_slot_server.metric("localmodel_busy_slots") == 0, timeout=5)
    # Nothing was counted as completed: the request was abandoned, not finished.
    assert one_slot_server.metric("localmodel_completion_tokens_total") == generated_before


def test_more_slots_than_the_batch_size_serves_every_slot(server_factory, chat_model):
    # Each generating slot adds a token to every step: 64 of them overflow a 32-token batch
    # unless the engine sizes its batch for the slots (llama.cpp aborts the process otherwise).
    server = server_factory(chat_model, "--served-name", "llama3", "--context-size", "256",
                            "--parallel", "64", "--batch-size", "32")
    try:
        async def run() -> list[str]:
            client = openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
            results = await asyncio.gather(*(client.chat.completions.create(
                model="llama3", messages=[{"role": "user", "content": f"hello {i}"}], max_tokens=8,
            ) for i in range(64)))
            return [r.choices[0].finish_reason for r in results]

        assert asyncio.run(run()) == ["length"] * 64
        assert server.proc.poll() is None
    finally:
        server.stop()
