"""Pure request handling: API keys, the `model` field, the headers sent on to a backend."""

from __future__ import annotations

import pytest

from localmodel_server.protocol.errors import APIError
from localmodel_server.router.app import read_model_field
from localmodel_server.router.auth import ApiKeys, parse_keys_env, parse_keys_text
from localmodel_server.router.proxy import forward_header_block


def test_auth_off_lets_everything_through():
    ApiKeys().check(None)


@pytest.mark.parametrize(
    ("header", "fragment"),
    [(None, "Missing API key"), ("Basic abc", "Malformed"), ("Bearer ", "Malformed"), ("Bearer nope", "Invalid API key")],
)
def test_auth_rejects_with_401_authentication_error(header, fragment):
    with pytest.raises(APIError) as caught:
        ApiKeys(["sk-one", "sk-two"]).check(header)
    error = caught.value
    assert (error.status_code, error.type) == (401, "authentication_error")
    assert fragment in error.message
    assert "sk-one" not in error.message and "nope" not in error.message


def test_auth_accepts_every_configured_key_and_case_of_scheme():
    keys = ApiKeys(["sk-one", "sk-two"])
    keys.check("Bearer sk-one")
    keys.check("bearer sk-two")
    keys.replace([])
    assert not keys.enabled


def test_key_sources():
    assert parse_keys_text("# comment\n sk-a \n\nsk-b\n") == ["sk-a", "sk-b"]
    assert parse_keys_env(" sk-a, ,sk-b") == ["sk-a", "sk-b"]


def test_model_field():
    assert read_model_field(b'{"model": "llama3", "messages": []}') == "llama3"


@pytest.mark.parametrize(
    ("body", "code"),
    [(b'{"model": ', "invalid_json"), (b"[1]", "invalid_type"), (b'{"messages": []}', "missing_required_parameter"),
     (b'{"model": 3}', "invalid_value"), (b'{"model": ""}', "invalid_value"), (b"", "invalid_json")],
)
def test_bad_bodies_are_400(body, code):
    with pytest.raises(APIError) as caught:
        read_model_field(body)
    assert (caught.value.status_code, caught.value.code) == (400, code)


def test_forwarded_headers_drop_hop_by_hop_and_the_clients_key():
    raw = ((b"Host", b"router"), (b"Authorization", b"Bearer sk-secret"), (b"Content-Type", b"application/json"),
           (b"Connection", b"keep-alive"), (b"Content-Length", b"12"), (b"X-Request-Id", b"abc"), (b"Transfer-Encoding", b"chunked"))
    assert forward_header_block(raw) == b"Content-Type: application/json\r\nX-Request-Id: abc\r\n"
