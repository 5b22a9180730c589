"""Ollama's native API through the router, in front of real `localmodel-server` processes."""

from __future__ import annotations

import httpx
import ollama
import pytest

from support.seed import SEED_REQUEST

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def routes_file(tmp_path_factory, chat_server, embed_server):
    path = tmp_path_factory.mktemp("routes") / "routes.yaml"
    path.write_text(
        "models:\n"
        f"  - name: tiny-chat\n    aliases: [llama3]\n    endpoints: [{chat_server.base_url}]\n"
        f"  - name: tiny-embed\n    endpoints: [{embed_server.base_url}]\n"
        "  - name: offline\n    endpoints: []\n"
    )
    return path


@pytest.fixture
def router(router_process, routes_file):
    return router_process("--routes", str(routes_file))


@pytest.fixture
def client(router) -> ollama.Client:
    return ollama.Client(host=router.base_url, timeout=120)


def test_list_merges_every_model_under_the_routers_names(client):
    models = {m.model: m for m in client.list().models}
    assert set(models) == {"tiny-chat", "llama3", "tiny-embed", "offline"}
    assert models["tiny-chat"].details.family == "llama" and models["tiny-embed"].details.family == "bert"
    assert models["llama3"].digest == models["tiny-chat"].digest != ""
    assert models["offline"].size == 0  # listed from the table: nothing to ask
    assert {m.model for m in client.ps().models} == {"tiny-chat", "llama3", "tiny-embed"}


def test_seed_question_streamed_and_not(client, chat_server):
    whole = client.chat(model=SEED_REQUEST["model"], messages=SEED_REQUEST["messages"],
                        options={"temperature": 0, "num_predict": 10})
    assert whole.message.content and whole.eval_count > 0
    parts = list(client.chat(model="llama3:latest", messages=SEED_REQUEST["messages"],
                             options={"temperature": 0, "num_predict": 10}, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert parts[-1].done and parts[-1].eval_count == whole.eval_count
    direct = ollama.Client(host=chat_server.base_url).chat(
        model="llama3", messages=SEED_REQUEST["messages"], options={"temperature": 0, "num_predict": 10})
    assert direct.message.content == whole.message.content


def test_generate_show_and_embed(client):
    assert client.generate(model="tiny-chat", prompt="Hi", options={"num_predict": 3}).eval_count == 3
    assert client.show("tiny-chat").modelinfo["general.architecture"] == "llama"
    vectors = client.embed(model="tiny-embed", input=["a", "b"]).embeddings
    assert len(vectors) == 2 and len(vectors[0]) > 0
    # alone rather than in a batch of two: summed in another order, equal up to float32 rounding
    assert client.embeddings(model="tiny-embed", prompt="a").embedding == pytest.approx(vectors[0], rel=1e-4, abs=1e-6)


def test_router_errors_are_in_ollamas_shape(client, router):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "missing" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="offline", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 503
    r = httpx.post(f"{router.base_url}/api/chat", content=b"{nope")
    assert r.status_code == 400 and set(r.json()) == {"error"}
    assert httpx.get(f"{router.base_url}/api/chat").status_code == 405
    assert httpx.get(f"{router.base_url}/api/version").json()["version"]
