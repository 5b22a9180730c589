"""Every client mistake gets a 4xx with the OpenAI error envelope: never a 500, never FastAPI's 422."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

pytestmark = pytest.mark.llama

USER = [{"role": "user", "content": "hi"}]

CASES = [
    # (name, path, body (dict, or raw bytes), status, code, param)
    ("malformed json", "/v1/chat/completions", b'{"model": "llama3", "messages": [', 400, "invalid_json", None),
    ("body not an object", "/v1/chat/completions", b"[1, 2]", 400, "invalid_type", None),
    ("missing model", "/v1/chat/completions", {"messages": USER}, 400, "missing_required_parameter", "model"),
    ("missing messages", "/v1/chat/completions", {"model": "llama3"}, 400, "missing_required_parameter", "messages"),
    ("messages wrong type", "/v1/chat/completions", {"model": "llama3", "messages": "hi"}, 400, "invalid_value", "messages"),
    ("empty messages", "/v1/chat/completions", {"model": "llama3", "messages": []}, 400, "invalid_value", "messages"),
    ("bad role", "/v1/chat/completions", {"model": "llama3", "messages": [{"role": "wizard", "content": "x"}]},
     400, "invalid_value", "messages.0.role"),
    ("temperature type", "/v1/chat/completions", {"model": "llama3", "messages": USER, "temperature": "hot"},
     400, "invalid_value", "temperature"),
    ("temperature range", "/v1/chat/completions", {"model": "llama3", "messages": USER, "temperature": 5},
     400, "invalid_value", "temperature"),
    ("max_tokens zero", "/v1/chat/completions", {"model": "llama3", "messages": USER, "max_tokens": 0},
     400, "invalid_value", "max_tokens"),
    ("max_tokens negative", "/v1/completions", {"model": "llama3", "prompt": "x", "max_tokens": -5},
     400, "invalid_value", "max_tokens"),
    ("n above one", "/v1/chat/completions", {"model": "llama3", "messages": USER, "n": 2}, 400, "invalid_value", "n"),
    ("unknown model", "/v1/chat/completions", {"model": "gpt-5", "messages": USER}, 404, "model_not_found", "model"),
    ("unknown model on completions", "/v1/completions", {"model": "gpt-5", "prompt": "x"}, 404, "model_not_found", "model"),
    ("invalid json schema", "/v1/chat/completions",
     {"model": "llama3", "messages": USER, "response_format": {"type": "json_schema", "json_schema": {
         "name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}}}},
     400, "invalid_json_schema", "response_format.json_schema"),
    ("json_schema without schema object", "/v1/chat/completions",
     {"model": "llama3", "messages": USER, "response_format": {"type": "json_schema"}}, 400, "invalid_value", "response_format"),
    ("tool_choice names no tool", "/v1/chat/completions",
     {"model": "llama3", "messages": USER, "tool_choice": {"type": "function", "function": {"name": "f"}}},
     400, "invalid_value", None),
    ("too many stop strings", "/v1/chat/completions", {"model": "llama3", "messages": USER, "stop": ["a"] * 17},
     400, "invalid_value", "stop"),
    ("token id outside vocab", "/v1/completions", {"model": "llama3", "prompt": [1, 99999999]}, 400, None, "prompt"),
    ("logit_bias key not a token", "/v1/chat/completions",
     {"model": "llama3", "messages": USER, "logit_bias": {"hello": 1}}, 400, "invalid_value", "logit_bias"),
    ("embeddings on a chat model", "/v1/embeddings", {"model": "llama3", "input": "x"}, 400, "unsupported_model", "model"),
    ("empty embedding input", "/v1/embeddings", {"model": "llama3", "input": []}, 400, "invalid_value", "input"),
    ("unknown path", "/v1/nothing", {"model": "llama3"}, 404, "not_found", None),
    # Booleans and integers are strict, as OpenAI's are: no "yes", "1" or 1.0 coerced.
    ("stream as a string", "/v1/chat/completions", {"model": "llama3", "messages": USER, "stream": "yes"},
     400, "invalid_value", "stream"),
    ("stream as a number", "/v1/completions", {"model": "llama3", "prompt": "x", "stream": 1},
     400, "invalid_value", "stream"),
    ("max_tokens as a string", "/v1/chat/completions", {"model": "llama3", "messages": USER, "max_tokens": "5"},
     400, "invalid_value", "max_tokens"),
    ("max_tokens as a float", "/v1/completions", {"model": "llama3", "prompt": "x", "max_tokens": 5.0},
     400, "invalid_value", "max_tokens"),
    ("seed as a boolean", "/v1/chat/completions", {"model": "llama3", "messages": USER, "seed": True},
     400, "invalid_value", "seed"),
    ("logprobs as a number", "/v1/chat/completions", {"model": "llama3", "messages": USER, "logprobs": 1},
     400, "invalid_value", "logprobs"),
    ("include_usage as a string", "/v1/chat/completions",
     {"model": "llama3", "messages": USER, "stream": True, "stream_options": {"include_usage": "true"}},
     400, "invalid_value", "stream_options.include_usage"),
    ("echo as a string", "/v1/completions", {"model": "llama3", "prompt": "x", "echo": "true"},
     400, "invalid_value", "echo"),
    ("temperature as a string", "/v1/chat/completions", {"model": "llama3", "messages": USER, "temperature": "0.5"},
     400, "invalid_value", "temperature"),
    ("dimensions as a string", "/v1/embeddings", {"model": "llama3", "input": "x", "dimensions": "3"},
     400, "invalid_value", "dimensions"),
]


def assert_envelope(response: httpx.Response, status: int, code: str | None, param: str | None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    if code is not None:
        assert error["code"] == code, error
    if param is not None:
        assert error["param"] == param, error
    return error


@pytest.mark.parametrize("name,path,body,status,code,param", CASES, ids=[c[0] for c in CASES])
def test_bad_request_gets_openai_error(chat_server, name, path, body, status, code, param):
    url = chat_server.base_url + path
    if isinstance(body, bytes):
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(url, json=body)
    error = assert_envelope(response, status, code, param)
    assert error["type"] == "invalid_request_error"


def test_prompt_longer_than_the_context(chat_server):
    # The shared server has 512 tokens per request.
    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions",
                          json={"model": "llama3", "messages": [{"role": "user", "content": "word " * 800}]})
    error = assert_envelope(response, 400, "context_length_exceeded", "messages")
    assert "maximum context length is 512 tokens" in error["message"]


def test_prompt_plus_max_tokens_over_the_context(chat_server):
    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions",
                          json={"model": "llama3", "messages": USER, "max_tokens": 600})
    assert_envelope(response, 400, "context_length_exceeded", "messages")


def test_oversized_body_is_413(chat_server):
    huge = {"model": "llama3", "messages": [{"role": "user", "content": "x" * (9 * 1024 * 1024)}]}
    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions", json=huge)
    assert_envelope(response, 413, "request_too_large", None)
    # Refused before the app runs, yet sent as every other error is: whole, with its length.
    assert response.headers["content-length"] == str(len(response.content))


def test_oversized_chunked_body_is_413(chat_server):
    def body():
        for _ in range(10):
            yield b"x" * (1024 * 1024)

    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions", content=body(),
                          headers={"content-type": "application/json"})
    assert_envelope(response, 413, "request_too_large", None)


def raw_exchange(server, data: bytes, piece: int = 1 << 20) -> bytes:
    """Send raw bytes in pieces (stopping if the server closes), then read until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        for i in range(0, len(data), piece):
            try:
                sock.sendall(data[i:i + piece])
            except (BrokenPipeError, ConnectionResetError):
                break
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def assert_431(raw: bytes, fragment: bytes) -> None:
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:300]
    assert fragment in raw
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_headers_too_large"


# The router's limits, kept by the server too: a server pod is reachable without the router.
def test_a_2_mib_header_is_refused_with_431(chat_server):
    raw = raw_exchange(chat_server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (2 << 20) + b"\r\n\r\n")
    assert_431(raw, b"larger than 65536 bytes")


def test_5000_headers_are_refused_with_431(chat_server):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    assert_431(raw_exchange(chat_server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n"), b"at most 100 headers")


def test_a_head_that_never_ends_is_refused_at_the_limit(chat_server):
    # Trickled and never finished: refused once 64 KiB arrived, not held until a timeout.
    raw = raw_exchange(chat_server, b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200_000, piece=16384)
    assert_431(raw, b"larger than")


def test_headers_inside_the_limits_are_served(chat_server):
    headers = {f"x-h{i}": "v" * 500 for i in range(90)}  # 90 headers, about 46 KiB
    response = httpx.get(f"{chat_server.base_url}/v1/models", headers=headers)
    assert response.status_code == 200


def test_chat_on_an_embedding_model(embed_server):
    response = httpx.post(f"{embed_server.base_url}/v1/chat/completions", json={"model": "tiny-embed", "messages": USER})
    assert_envelope(response, 400, "unsupported_model", "model")


def test_sdk_maps_errors_to_typed_exceptions(chat_server):
    client = openai.OpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="nope", messages=USER)
    assert not_found.value.code == "model_not_found"
    assert "tiny-chat" in not_found.value.message and "llama3" in not_found.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="llama3", messages=[])
    assert bad.value.param == "messages"


def test_sdk_gets_400_for_a_non_boolean_stream(chat_server):
    client = openai.OpenAI(base_url=f"{chat_server.base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model="llama3", messages=USER, max_tokens=2, extra_body={"stream": "yes"})
    assert bad.value.param == "stream"
    assert bad.value.type == "invalid_request_error"


def test_integral_numbers_are_accepted_where_floats_are_expected(chat_server):
    response = httpx.post(f"{chat_server.base_url}/v1/chat/completions", json={
        "model": "llama3", "messages": USER, "max_tokens": 2, "temperature": 1, "top_p": 1, "logit_bias": {"5": 1}})
    assert response.status_code == 200, response.text
