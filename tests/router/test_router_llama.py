"""The router in front of real `localmodel-server` processes on tiny generated models."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import httpx
import openai
import pytest

from support.model_server import wait_for

pytestmark = pytest.mark.llama

SEED_CURL_BODY = ('{"model": "llama3", "messages": [{"role": "system", "content": "You are a helpful assistant."}, '
                  '{"role": "user", "content": "What is the capital of France?"}]}')


@pytest.fixture(scope="module")
def routes_file(tmp_path_factory, chat_server, embed_server):
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    path.write_text(
        "models:\n"
        f"  - name: tiny-chat\n    aliases: [llama3]\n    endpoints: [{chat_server.base_url}]\n"
        f"  - name: tiny-embed\n    endpoints: [{embed_server.base_url}]\n"
    )
    return path


@pytest.fixture
def router(router_process, routes_file):
    return router_process("--routes", str(routes_file))


@pytest.fixture
def client(router):
    return openai.OpenAI(base_url=f"{router.base_url}/v1", api_key="not-needed", max_retries=0)


def test_models_list_shows_both_models_and_the_alias(client):
    cards = {model.id: model for model in client.models.list()}
    assert set(cards) == {"tiny-chat", "llama3", "tiny-embed"}
    assert cards["llama3"].model_extra["root"] == "tiny-chat"
    assert all(card.model_extra["ready"] for card in cards.values())


def test_chat_completions_and_embeddings_through_one_base_url(client):
    chat = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "Hello"}], max_tokens=5)
    assert chat.object == "chat.completion" and chat.model == "tiny-chat"
    assert chat.usage.completion_tokens > 0

    completion = client.completions.create(model="llama3", prompt="Once upon a time", max_tokens=5)
    assert completion.object == "text_completion" and completion.choices[0].text

    embeddings = client.embeddings.create(model="tiny-embed", input=["first text", "second text"])
    assert [e.index for e in embeddings.data] == [0, 1]
    assert len(embeddings.data[0].embedding) > 0


def test_streaming_chat(client):
    stream = client.chat.completions.create(model="llama3", messages=[{"role": "user", "content": "Count"}], max_tokens=8, stream=True)
    chunks = list(stream)
    assert len(chunks) >= 2
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert "".join(c.choices[0].delta.content or "" for c in chunks)


def test_seed_curl_request_verbatim_with_llama3_as_an_alias(router):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    out = subprocess.run(
        [curl, "-sS", f"{router.base_url}/v1/chat/completions", "-H", "Content-Type: application/json", "-d", SEED_CURL_BODY],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    answer = json.loads(out)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["role"] == "assistant"


def test_unknown_model_through_the_sdk(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert "tiny-chat" in caught.value.message


@pytest.fixture
def long_stream_server(server_factory, chat_model):
    """One slot and a long context, so a stream outlives the test's checks."""
    server = server_factory(chat_model, "--served-name", "long", "--context-size", "4096", "--parallel", "1")
    yield server
    server.stop()


def test_client_disconnect_mid_stream_frees_the_servers_slot(router_process, long_stream_server):
    router = router_process("--route", f"long={long_stream_server.base_url}")
    body = json.dumps({"model": "long", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    assert wait_for(lambda: long_stream_server.metric("localmodel_busy_slots") == 1)
    sock.close()
    assert wait_for(lambda: long_stream_server.metric("localmodel_busy_slots") == 0, timeout=5)
    # The router's own view agrees: nothing in flight for the model.
    assert wait_for(lambda: router.metric("localmodel_router_in_flight_requests", model="long") == 0)
    # The freed slot answers the next request through the router at once.
    response = httpx.post(f"{router.base_url}/v1/chat/completions", timeout=60,
                          json={"model": "long", "messages": [{"role": "user", "content": "next"}], "max_tokens": 3})
    assert response.status_code == 200


def test_server_answers_pass_through_unchanged(router, chat_server):
    # A validation error from the server reaches the client as the server wrote it.
    bad = {"model": "llama3", "messages": [{"role": "user", "content": "x"}], "temperature": 9}
    direct = httpx.post(f"{chat_server.base_url}/v1/chat/completions", json=bad)
    routed = httpx.post(f"{router.base_url}/v1/chat/completions", json=bad)
    assert routed.status_code == direct.status_code == 400
    assert routed.content == direct.content
