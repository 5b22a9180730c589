"""Ollama's native API of a real localmodel-server, through the official `ollama` client."""

from __future__ import annotations

import json

import httpx
import ollama
import openai
import pytest

from support.seed import SEED_REQUEST

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def client(chat_server) -> ollama.Client:
    return ollama.Client(host=chat_server.base_url, timeout=120)


@pytest.fixture(scope="module")
def openai_client(chat_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)


def test_seed_question_through_ollama_chat(client):
    response = client.chat(model=SEED_REQUEST["model"], messages=SEED_REQUEST["messages"], stream=False)
    assert response.message.role == "assistant"
    assert isinstance(response.message.content, str) and response.message.content
    assert response.done and response.done_reason in ("stop", "length")
    assert response.prompt_eval_count > 0 and response.eval_count > 0
    assert response.total_duration >= response.eval_duration > 0


def test_chat_matches_v1_greedy_output(client, openai_client):
    messages = [{"role": "user", "content": "Tell me a story"}]
    v1 = openai_client.chat.completions.create(model="llama3", messages=messages, temperature=0, max_tokens=12)
    api = client.chat(model="llama3", messages=messages, options={"temperature": 0, "num_predict": 12})
    assert api.message.content == v1.choices[0].message.content
    assert api.done_reason == "length" and api.eval_count == 12
    assert api.prompt_eval_count == v1.usage.prompt_tokens


def test_streamed_chat_is_ndjson_and_matches_non_streamed(client, chat_server):
    messages = [{"role": "user", "content": "Say something"}]
    options = {"temperature": 0, "num_predict": 10}
    whole = client.chat(model="llama3", messages=messages, options=options)
    parts = list(client.chat(model="llama3", messages=messages, options=options, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content
    assert [p.done for p in parts].count(True) == 1 and parts[-1].done
    assert parts[-1].done_reason == "length" and parts[-1].eval_count == 10
    # Streaming is the default when the body does not say.
    with httpx.stream("POST", f"{chat_server.base_url}/api/chat", timeout=60,
                      json={"model": "llama3", "messages": messages, "options": options}) as r:
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert len(lines) > 1 and lines[-1]["done"] is True


def test_stop_and_seed_options(client):
    messages = [{"role": "user", "content": "Say something long"}]
    reference = client.chat(model="llama3", messages=messages, options={"temperature": 0, "num_predict": 24})
    words = reference.message.content.split()
    assert len(words) >= 3
    cut = client.chat(model="llama3", messages=messages,
                      options={"temperature": 0, "num_predict": 24, "stop": [words[2]]})
    assert words[2] not in cut.message.content and cut.done_reason == "stop"
    seeded = [client.chat(model="llama3", messages=messages, options={"seed": 7, "num_predict": 8}).message.content
              for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_num_ctx_bounds_prompt_plus_completion(client):
    response = client.chat(model="llama3", messages=[{"role": "user", "content": "Hi"}],
                           options={"temperature": 0, "num_ctx": 40})
    assert response.done_reason == "length"
    assert response.prompt_eval_count + response.eval_count == 40


def test_generate_applies_the_chat_template_unless_raw(client, openai_client):
    templated = client.generate(model="llama3", prompt="Hello", options={"temperature": 0, "num_predict": 6})
    chat = client.chat(model="llama3", messages=[{"role": "user", "content": "Hello"}],
                       options={"temperature": 0, "num_predict": 6})
    assert templated.response == chat.message.content
    raw = client.generate(model="llama3", prompt="Hello", raw=True, options={"temperature": 0, "num_predict": 6})
    v1 = openai_client.completions.create(model="llama3", prompt="Hello", temperature=0, max_tokens=6)
    assert raw.response == v1.choices[0].text
    streamed = list(client.generate(model="llama3", prompt="Hello", raw=True, stream=True,
                                    options={"temperature": 0, "num_predict": 6}))
    assert "".join(p.response for p in streamed) == raw.response and streamed[-1].eval_count == 6


def test_empty_generate_loads_the_model(client):
    response = client.generate(model="llama3")
    assert response.done and response.done_reason == "load"


def test_format_json_and_schema(client):
    messages = [{"role": "user", "content": "Give me JSON"}]
    plain = client.chat(model="llama3", messages=messages, format="json", options={"num_predict": 60})
    if plain.done_reason == "stop":
        assert isinstance(json.loads(plain.message.content), dict)
    else:
        assert plain.message.content.lstrip().startswith("{")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    shaped = client.chat(model="llama3", messages=messages, format=schema, options={"num_predict": 60})
    assert shaped.done_reason == "stop"
    assert isinstance(json.loads(shaped.message.content)["ok"], bool)


def test_tools_answer_with_tool_calls(client):
    tool = {"type": "function", "function": {
        "name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }}
    # The tiny model rarely calls on its own; the template must at least accept the tools and a tool turn.
    response = client.chat(model="llama3", tools=[tool], options={"num_predict": 8}, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                            "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ])
    assert response.done
    for call in response.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)


def test_list_show_ps_and_version(client):
    names = [m.model for m in client.list().models]
    assert names == ["tiny-chat", "llama3"]
    listed = client.list().models[0]
    assert listed.details.family == "llama" and listed.details.format == "gguf"
    assert listed.details.quantization_level == "F16" and listed.size > 0 and len(listed.digest) == 64
    shown = client.show("llama3:latest")
    assert shown.modelinfo["general.architecture"] == "llama"
    assert shown.modelinfo["llama.context_length"] == 4096
    assert "<|im_start|>" in shown.template and "completion" in shown.capabilities
    running = client.ps().models
    assert [m.model for m in running] == ["tiny-chat"] and running[0].context_length > 0
    assert httpx.get(f"{client._client.base_url}/api/version").json()["version"]


def test_unknown_model_is_ollamas_404(client, chat_server):
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404
    assert caught.value.error == 'model "nope" not found, try pulling it first'
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nope")
    assert caught.value.status_code == 404
    r = httpx.post(f"{chat_server.base_url}/api/generate", json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json() == {"error": 'model "nope" not found, try pulling it first'}


def test_client_mistakes_are_400_in_ollamas_shape(chat_server):
    url = f"{chat_server.base_url}/api/chat"
    for body in ({"messages": []}, {"model": "llama3", "messages": [{"role": "user", "content": "x"}],
                                    "options": {"temperature": 9}}, "not json"):
        r = httpx.post(url, content=body if isinstance(body, str) else json.dumps(body),
                       headers={"content-type": "application/json"})
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"} and isinstance(r.json()["error"], str)
    r = httpx.post(url, json={"model": "llama3", "think": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "thinking" in r.json()["error"]


def test_embed_on_a_generative_model_is_400(client):
    with pytest.raises(ollama.ResponseError) as caught:
        client.embed(model="llama3", input="hi")
    assert caught.value.status_code == 400


def same_vector(expected: list[float]) -> object:
    """Equal up to float32 rounding: a text embedded in a batch of two and alone is summed in another
    order, which moves the last digits (by about 1e-10 on some CPUs' kernels)."""
    return pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_embed_and_legacy_embeddings(embed_server):
    client = ollama.Client(host=embed_server.base_url)
    vectors = client.embed(model="tiny-embed", input=["one", "two words"]).embeddings
    v1 = httpx.post(f"{embed_server.base_url}/v1/embeddings", json={"model": "tiny-embed", "input": ["one"]}).json()
    assert len(vectors) == 2 and vectors[0] == same_vector(v1["data"][0]["embedding"])
    assert vectors[0] != same_vector(vectors[1])
    single = client.embeddings(model="tiny-embed:latest", prompt="one").embedding
    assert single == same_vector(vectors[0])
    assert client.embed(model="tiny-embed", input="one", dimensions=8).embeddings[0] == same_vector(vectors[0][:8])


def test_marker_defaults_apply_to_both_apis_unless_the_request_sets_them(server_factory, chat_model, tmp_path):
    # The puller writes an Ollama model's params layer into the marker beside model.gguf.
    model = tmp_path / "model.gguf"
    model.symlink_to(chat_model)
    (tmp_path / "model.gguf.json").write_text(json.dumps({"defaults": {"num_predict": 4, "temperature": 0}}))
    server = server_factory(model, "--served-name", "tiny-chat", "--context-size", "256", "--parallel", "1")
    v1 = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Tell me a long story"}]
    assert v1.chat.completions.create(model="tiny-chat", messages=messages).usage.completion_tokens == 4
    assert v1.chat.completions.create(model="tiny-chat", messages=messages, max_tokens=6).usage.completion_tokens == 6
    assert v1.completions.create(model="tiny-chat", prompt="Once").usage.completion_tokens == 4
    api = ollama.Client(host=server.base_url)
    assert api.chat(model="tiny-chat", messages=messages).eval_count == 4
    assert api.chat(model="tiny-chat", messages=messages, options={"num_predict": 6}).eval_count == 6
    assert "num_predict    4" in api.show("tiny-chat").parameters
