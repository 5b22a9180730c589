"""The route table: names, aliases, conflicts, and the errors a client sees."""

from __future__ import annotations

import pytest

from localmodel_server.protocol.errors import APIError
from localmodel_server.router.routes import RouteEntry, RouteTable

READY = RouteEntry(name="qwen", endpoints=("http://10.0.0.1:8000",), aliases=("llama3", "default"))
LOADING = RouteEntry(name="mistral", endpoints=(), reason="downloading 42%", retry_after=10)


def table() -> RouteTable:
    return RouteTable.build([READY, LOADING])


def test_served_name_and_alias_resolve_to_the_same_entry():
    assert table().resolve("qwen") is READY
    assert table().resolve("llama3") is READY


def test_unknown_model_is_404_naming_every_available_model():
    with pytest.raises(APIError) as caught:
        table().resolve("gpt-4")
    error = caught.value
    assert (error.status_code, error.code, error.param) == (404, "model_not_found", "model")
    assert "gpt-4" in error.message
    for name in ("default", "llama3", "mistral", "qwen"):
        assert name in error.message


def test_known_model_without_endpoints_is_503_with_reason_and_retry_after():
    with pytest.raises(APIError) as caught:
        table().resolve("mistral")
    error = caught.value
    assert (error.status_code, error.code) == (503, "model_not_ready")
    assert "downloading 42%" in error.message
    assert error.headers["Retry-After"] == "10"


def test_disabled_entry_is_not_ready_even_with_endpoints():
    entry = RouteEntry(name="m", endpoints=("http://a:1",), enabled=False, reason="loading")
    with pytest.raises(APIError) as caught:
        RouteTable.build([entry]).resolve("m")
    assert caught.value.status_code == 503 and "loading" in caught.value.message


def test_first_entry_keeps_a_contested_name_and_the_conflict_is_reported():
    other = RouteEntry(name="qwen", endpoints=("http://10.0.0.9:8000",), namespace="b")
    alias_thief = RouteEntry(name="phi", endpoints=("http://10.0.0.8:8000",), aliases=("llama3",))
    built = RouteTable.build([READY, other, alias_thief])
    assert built.resolve("qwen") is READY
    assert built.resolve("llama3") is READY
    assert built.resolve("phi") is alias_thief
    assert len(built.conflicts) == 2
    assert any("b/qwen" in c for c in built.conflicts)


def test_an_alias_never_hides_another_models_served_name():
    aliasing = RouteEntry(name="a", endpoints=("http://x:1",), aliases=("b",))
    served = RouteEntry(name="b", endpoints=("http://y:1",))
    built = RouteTable.build([aliasing, served])
    assert built.resolve("b") is served


def test_model_list_has_every_name_with_readiness_and_alias_roots():
    cards = {card.id: card for card in table().model_list().data}
    assert set(cards) == {"qwen", "llama3", "default", "mistral"}
    assert cards["llama3"].root == "qwen" and cards["qwen"].root is None
    assert cards["qwen"].ready is True and cards["qwen"].status == "ready"
    assert cards["mistral"].ready is False and cards["mistral"].status == "downloading 42%"
