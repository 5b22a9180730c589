"""The load/evict/unload decisions of `localmodel up`, as a table over state and a fake clock."""

from __future__ import annotations

import pytest

from localmodel_server.local.schedule import (
    AwaitLoad,
    AwaitRoom,
    Load,
    ModelState,
    Use,
    admit,
    evictable,
    expired,
    next_deadline,
    unload_at,
)
from localmodel_server.contract import parse_keep_alive


def loaded(last_used: float, in_flight: int = 0, keep_alive: float | None = 300.0) -> ModelState:
    return ModelState("loaded", in_flight, last_used, keep_alive)


UNLOADED = ModelState()


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0), ("1h30m", 5400.0), ("250ms", 0.25), ("2.5s", 2.5),
    ("0", 0.0), ("300", 300.0), ("-1", None), ("-5m", None),
])
def test_keep_alive_reads_ollamas_syntax(text, seconds):
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["", "forever", "5 m", "m5", "1d", "--1", "1.2.3"])
def test_keep_alive_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_keep_alive(text)


@pytest.mark.parametrize(("models", "max_loaded", "decision"), [
    ({"a": loaded(1)}, 1, Use()),
    ({"a": ModelState("loading")}, 1, AwaitLoad()),
    ({"a": ModelState("unloading")}, 0, AwaitRoom()),
    ({"a": UNLOADED, "b": loaded(1)}, 0, Load()),
    ({"a": UNLOADED, "b": loaded(1)}, 2, Load()),
    # the least recently used idle model makes room
    ({"a": UNLOADED, "b": loaded(5), "c": loaded(2)}, 2, Load(evict=("c",))),
    # a busy model is never evicted: the idle one goes even though it was used later
    ({"a": UNLOADED, "b": loaded(1, in_flight=1), "c": loaded(9)}, 2, Load(evict=("c",))),
    # nothing idle: wait
    ({"a": UNLOADED, "b": loaded(1, in_flight=2)}, 1, AwaitRoom()),
    # a model still loading holds its place and cannot be evicted
    ({"a": UNLOADED, "b": ModelState("loading")}, 1, AwaitRoom()),
    # room is already being made by a model that is stopping
    ({"a": UNLOADED, "b": ModelState("unloading")}, 1, AwaitRoom()),
    # pinned models (keep-alive -1) go last
    ({"a": UNLOADED, "b": loaded(1, keep_alive=None), "c": loaded(9)}, 2, Load(evict=("c",))),
    ({"a": UNLOADED, "b": loaded(1, keep_alive=None)}, 1, Load(evict=("b",))),
])
def test_admit(models, max_loaded, decision):
    assert admit(models, "a", max_loaded) == decision


def test_eviction_order_is_unpinned_lru_first():
    models = {"p": loaded(0, keep_alive=None), "old": loaded(1), "new": loaded(8), "busy": loaded(0, in_flight=1)}
    assert evictable(models) == ["old", "new", "p"]


def test_idle_unload_follows_the_clock():
    clock = 100.0
    models = {"a": loaded(clock, keep_alive=2.0), "b": loaded(clock - 1, keep_alive=5.0),
              "busy": loaded(0, in_flight=1, keep_alive=1.0), "pinned": loaded(0, keep_alive=None),
              "off": UNLOADED}
    assert next_deadline(models) == 102.0
    assert expired(models, 101.9) == []
    assert expired(models, 102.0) == ["a"]
    assert expired(models, 104.0) == ["a", "b"]
    # never the busy, pinned or unloaded ones, however late
    assert expired(models, 1e9) == ["a", "b"]


def test_keep_alive_zero_unloads_as_the_last_request_ends():
    state = loaded(50.0, keep_alive=0.0)
    assert unload_at(state) == 50.0
    assert unload_at(loaded(50.0, in_flight=1, keep_alive=0.0)) is None


def test_no_deadline_without_idle_models():
    assert next_deadline({"a": UNLOADED, "b": loaded(0, in_flight=1)}) is None
