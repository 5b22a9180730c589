"""The static route table format (docs/router.md) and its flag form."""

from __future__ import annotations

import json

import pytest

from localmodel_server.router.static import RoutesFileError, parse_route_flags, parse_routes

YAML = """
models:
  - name: tiny-chat
    aliases: [llama3]
    endpoints: ["http://127.0.0.1:8001/", "http://127.0.0.1:8002"]
  - name: big
    ready: false
    status: downloading 42%
    retryAfter: 15
"""


def test_yaml_table():
    table = parse_routes(YAML)
    chat = table.resolve("llama3")
    assert chat.name == "tiny-chat"
    assert chat.endpoints == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    big = table.lookup("big")
    assert big is not None and not big.ready and big.status == "downloading 42%" and big.retry_after == 15


def test_json_is_accepted_too():
    table = parse_routes(json.dumps({"models": [{"name": "m", "endpoints": ["http://127.0.0.1:9"]}]}))
    assert table.resolve("m").endpoints == ("http://127.0.0.1:9",)


def test_empty_file_is_an_empty_table():
    assert parse_routes("").entries == ()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("models: [{name: m, endpoints: ['https://x:1']}]", "models.0.endpoints: backend URL must be http://host:port"),
        ("models: [{name: m, endpont: []}]", "models.0.endpont: Extra inputs are not permitted"),
        ("models: [{aliases: [a]}]", "models.0.name: Field required"),
        ("models: [{name: m, retryAfter: -1}]", "models.0.retryAfter"),
        ("models: {name: m}", "models: Input should be a valid list"),
        ("models: [", "not valid YAML or JSON"),
    ],
)
def test_invalid_tables_say_where_and_why(text, message):
    with pytest.raises(RoutesFileError) as caught:
        parse_routes(text, "routes.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("routes.yaml: ")


def test_route_flags():
    table = parse_route_flags(["tiny-chat,llama3=http://127.0.0.1:8001,http://127.0.0.1:8002", "embed=http://127.0.0.1:8003"])
    assert table.resolve("llama3").endpoints == ("http://127.0.0.1:8001", "http://127.0.0.1:8002")
    assert table.resolve("embed").name == "embed"


@pytest.mark.parametrize("flag", ["tiny-chat", "=http://x:1", "m=", "m=ftp://x"])
def test_bad_route_flags(flag):
    with pytest.raises(RoutesFileError):
        parse_route_flags([flag])
