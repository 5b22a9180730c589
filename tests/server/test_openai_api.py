"""The OpenAI API of a real localmodel-server on a generated llama model, through the official SDK."""

from __future__ import annotations

import base64
import json

import httpx
import numpy as np
import openai
import pytest

from support.seed import SEED_REQUEST

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def client(chat_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)


def greedy(client: openai.OpenAI, prompt: str, **kwargs) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": prompt}], temperature=0, **kwargs
    )


def test_seed_request_verbatim(chat_server):
    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions", json=SEED_REQUEST, timeout=120)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_chat_through_sdk_reports_length_and_usage(client):
    result = greedy(client, "Hello there", max_tokens=7)
    assert result.model == "tiny-chat"
    assert result.choices[0].finish_reason == "length"
    assert result.usage.completion_tokens == 7
    assert result.usage.total_tokens == result.usage.prompt_tokens + 7


def test_max_completion_tokens_is_honoured(client):
    result = greedy(client, "Hello there", max_completion_tokens=3)
    assert result.usage.completion_tokens == 3


def test_stream_matches_non_stream_and_reports_usage(client):
    full = greedy(client, "Tell me a story", max_tokens=12)
    chunks = list(client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "Tell me a story"}], temperature=0,
        max_tokens=12, stream=True, stream_options={"include_usage": True},
    ))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12


def test_stream_without_include_usage_sends_no_usage(client):
    chunks = list(client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "Hi"}], max_tokens=3, stream=True,
    ))
    assert all(c.usage is None for c in chunks)


def test_stop_string_cuts_the_output_before_it(client):
    reference = greedy(client, "Say something long", max_tokens=24).choices[0].message.content
    words = reference.split()
    assert len(words) >= 3, reference
    stop = words[2]
    result = greedy(client, "Say something long", max_tokens=24, stop=[stop])
    content = result.choices[0].message.content
    assert result.choices[0].finish_reason == "stop"
    assert content == reference[: reference.index(stop)]
    assert stop not in content


def test_seed_makes_sampling_repeatable(client):
    def sample(seed: int) -> str:
        return client.chat.completions.create(
            model="llama3", messages=[{"role": "user", "content": "Pick words"}], temperature=1.0,
            seed=seed, max_tokens=16,
        ).choices[0].message.content

    assert sample(42) == sample(42)
    assert len({sample(s) for s in (1, 2, 3)}) > 1


def test_json_schema_response_format_is_enforced(client):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    result = greedy(client, "Weather?", max_tokens=64,
                    response_format={"type": "json_schema", "json_schema": {"name": "weather", "schema": schema}})
    assert result.choices[0].finish_reason == "stop"
    data = json.loads(result.choices[0].message.content)
    assert data["city"] in ("Paris", "Rome") and isinstance(data["sunny"], bool)
    assert set(data) == {"city", "sunny"}


def test_json_object_response_format_starts_an_object(client):
    result = greedy(client, "JSON please", max_tokens=48, response_format={"type": "json_object"})
    content = result.choices[0].message.content.lstrip()
    assert content.startswith("{")
    if result.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(content), dict)


TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
                       "required": ["city"], "additionalProperties": False},
    }},
    {"type": "function", "function": {
        "name": "get_time", "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    }},
]


def test_named_tool_choice_returns_a_well_formed_call(client):
    result = greedy(client, "Weather in Paris?", max_tokens=64, tools=TOOLS,
                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = result.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Rome")


def test_required_tool_choice_streams_the_call(client):
    chunks = list(client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "Anything"}], temperature=0, max_tokens=64,
        tools=TOOLS, tool_choice="required", stream=True,
    ))
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) == 1 and calls[0].function.name in ("get_weather", "get_time")
    json.loads(calls[0].function.arguments)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_logprobs_describe_the_greedy_choice(client):
    result = greedy(client, "Hello", max_tokens=5, logprobs=True, top_logprobs=3)
    content = result.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # Greedy decoding picks the most likely token.
        assert entry.token == entry.top_logprobs[0].token
        assert entry.logprob == pytest.approx(entry.top_logprobs[0].logprob)
    assert "".join(e.token for e in content) == result.choices[0].message.content


def test_text_completion_stream_and_echo(client):
    plain = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=8, temperature=0)
    assert plain.choices[0].finish_reason == "length" and plain.usage.completion_tokens == 8
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-chat", prompt="Once upon a time", max_tokens=8, temperature=0, stream=True) if c.choices)
    assert streamed == plain.choices[0].text
    echoed = client.completions.create(model="tiny-chat", prompt="Once upon a time", max_tokens=8,
                                       temperature=0, echo=True, logprobs=2)
    assert echoed.choices[0].text == "Once upon a time" + plain.choices[0].text
    assert len(echoed.choices[0].logprobs.tokens) == 8


def test_models_list_includes_aliases(client):
    ids = [m.id for m in client.models.list().data]
    assert ids == ["tiny-chat", "llama3"]
    assert client.models.retrieve("llama3").id == "llama3"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_embeddings_float_and_base64_agree(embed_server):
    client = openai.OpenAI(base_url=f"{embed_server.base_url}/v1", api_key="unused", max_retries=0)
    single = client.embeddings.create(model="tiny-embed", input="hello world")
    vector = np.array(single.data[0].embedding)
    assert vector.shape == (64,) and np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-4)
    many = client.embeddings.create(model="tiny-embed", input=["hello world", "something else"])
    assert [d.index for d in many.data] == [0, 1]
    assert np.allclose(many.data[0].embedding, vector, atol=1e-5)
    assert not np.allclose(many.data[1].embedding, vector, atol=1e-3)
    raw = httpx.post(f"{embed_server.base_url}/v1/embeddings",
                     json={"model": "tiny-embed", "input": "hello world", "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vector, atol=1e-6)
    assert raw["usage"]["prompt_tokens"] == raw["usage"]["total_tokens"] > 0


def test_probes_and_metrics(chat_server):
    assert httpx.get(f"{chat_server.base_url}/healthz").status_code == 200
    assert httpx.get(f"{chat_server.base_url}/readyz").status_code == 200
    httpx.post(f"{chat_server.base_url}/v1/chat/completions",
               json={**SEED_REQUEST, "max_tokens": 2}, timeout=60).raise_for_status()
    text = httpx.get(f"{chat_server.base_url}/metrics").text
    for name in (
        'localmodel_requests_total{endpoint="chat",status="200"}',
        "localmodel_request_duration_seconds_bucket",
        "localmodel_time_to_first_token_seconds_bucket",
        "localmodel_prompt_tokens_total", "localmodel_completion_tokens_total",
        "localmodel_requests_in_flight", "localmodel_queue_depth", "localmodel_busy_slots",
        "localmodel_model_load_seconds",
    ):
        assert name in text, name
    assert chat_server.metric("localmodel_completion_tokens_total") >= 2


def test_auto_tool_choice_streams_prose_as_content(client):
    # The random model answers in prose, so nothing is held back and no call is invented.
    plain = greedy(client, "Chat with me", max_tokens=12).choices[0].message.content
    chunks = list(client.chat.completions.create(
        model="llama3", messages=[{"role": "user", "content": "Chat with me"}], temperature=0, max_tokens=12,
        tools=TOOLS, tool_choice="auto", stream=True,
    ))
    assert not any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed and [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    # The test model's template does not render tools, so the prompt and the greedy text are the same.
    assert streamed == plain
