"""`localmodel up` loads a model on its first request and unloads it when idle: real server processes."""

from __future__ import annotations

import json
import shutil
import signal
import threading
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from support.local_up import Up, alive, manifest, pvc
from support.model_server import wait_for

pytestmark = pytest.mark.llama

NAMES = ("alpha", "beta", "gamma")


@pytest.fixture
def volume(tmp_path: Path, chat_model: Path) -> Path:
    directory = tmp_path / "volume"
    directory.mkdir()
    shutil.copy(chat_model, directory / "chat.gguf")
    return directory


@pytest.fixture
def three_models(tmp_path: Path) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    for name in NAMES:
        (manifests / f"{name}.yaml").write_text(manifest(name, pvc("chat.gguf"), contextSize=4096, parallel=1))
    return manifests


def client(up: Up) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{up.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def ask(up: Up, model: str, max_tokens: int = 2) -> None:
    reply = client(up).chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}],
                                               max_tokens=max_tokens)
    assert reply.usage.completion_tokens == max_tokens


def statuses(up: Up) -> dict[str, str]:
    return {m["id"]: m["status"] for m in httpx.get(f"{up.base_url}/v1/models").json()["data"]}


def test_one_place_serves_three_models_in_turn_evicting_the_least_recent(tmp_path, volume, three_models):
    up = Up(tmp_path, [three_models], "--max-loaded", "1", "--keep-alive", "1h", volume=volume)
    try:
        up.wait_serving()
        assert up.servers() == {}
        assert statuses(up) == dict.fromkeys(NAMES, "unloaded")
        seen = []
        for name in (*NAMES, "alpha"):
            ask(up, name)
            servers = up.servers()
            assert list(servers) == [name]  # the one it needed, and only that one
            seen.append(servers[name])
            assert statuses(up)[name] == "loaded"
        assert len(set(seen)) == 4  # a fresh process each time: the evicted one was stopped
        assert not any(alive(p) for p in seen[:3])
        assert "unloading alpha (evicted to make room for beta (--max-loaded 1))" in up.output()
    finally:
        assert up.stop() == 0


def test_idle_model_unloads_after_its_keep_alive_and_the_next_request_reloads_it(tmp_path, volume, three_models):
    (three_models / "gamma.yaml").write_text(manifest("gamma", pvc("chat.gguf"), keepAlive="-1"))
    up = Up(tmp_path, [three_models], "--keep-alive", "2s", volume=volume)
    try:
        up.wait_serving()
        ask(up, "alpha")
        first = up.servers()["alpha"]  # now: its 2 s may run out while gamma loads
        ask(up, "gamma")
        # Unloaded: the process has exited (not merely lost its command line on the way out) and the
        # model reads as unloaded, which the supervisor writes only after it has reaped the process.
        assert wait_for(lambda: statuses(up)["alpha"] == "unloaded", timeout=15), up.output()
        assert not alive(first)
        assert "alpha" not in up.servers()
        assert "unloading alpha (idle for 2 s)" in up.output()
        assert statuses(up)["gamma"] == "loaded"  # spec.keepAlive -1 overrides --keep-alive
        assert wait_for(lambda: up.state()["models"][0]["status"] == "unloaded", timeout=5)

        ask(up, "alpha")
        assert up.servers()["alpha"] != first
        assert "gamma" in up.servers()
    finally:
        assert up.stop() == 0


def test_streams_in_flight_are_never_cut_by_eviction_or_keep_alive(tmp_path, volume, three_models):
    # Keep-alive 0: alpha would unload the moment it is idle, and beta needs its place.
    up = Up(tmp_path, [three_models], "--max-loaded", "1", "--keep-alive", "0", volume=volume)
    try:
        up.wait_serving()
        ask(up, "alpha")
        assert wait_for(lambda: up.servers() == {}, timeout=10)  # keep-alive 0: unloaded after the request
        stream = client(up).chat.completions.create(
            model="alpha", messages=[{"role": "user", "content": "go"}], max_tokens=300, stream=True,
            stream_options={"include_usage": True})
        chunks = iter(stream)
        next(chunks)

        beta: dict[str, object] = {}
        waiting = threading.Thread(target=lambda: beta.update(result=ask(up, "beta")))
        waiting.start()
        # beta found alpha busy (an idle alpha would have been evicted at once) and waits
        assert wait_for(lambda: "beta waits for a place (--max-loaded 1; loaded: alpha)" in up.output(), timeout=10)
        assert waiting.is_alive() and list(up.servers()) == ["alpha"]

        rest = list(chunks)
        assert rest[-1].usage.completion_tokens == 300
        assert [c for c in rest if c.choices and c.choices[0].finish_reason][-1].choices[0].finish_reason == "length"
        waiting.join(timeout=60)
        assert not waiting.is_alive() and "result" in beta
        assert up.output().rindex("unloading alpha") > up.output().index("beta waits for a place")
    finally:
        assert up.stop() == 0


def test_a_streamed_request_gets_loading_comments_while_its_model_loads(tmp_path, volume, three_models):
    up = Up(tmp_path, [three_models], "--loading-heartbeat", "0.05", volume=volume)
    try:
        up.wait_serving()
        body = {"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "stream": True}
        with httpx.stream("POST", f"{up.base_url}/v1/chat/completions", json=body, timeout=120) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            text = "".join(response.iter_text())
        assert text.startswith(": loading\n\n")
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
        assert text.rstrip().endswith("data: [DONE]")

        # The official client reads through the comments as SSE says it must.
        chunks = list(client(up).chat.completions.create(
            model="beta", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True))
        assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 3
    finally:
        assert up.stop() == 0


def test_a_model_that_fails_to_load_gets_a_503_naming_why_and_is_tried_again(tmp_path, volume, three_models):
    (three_models / "beta.yaml").write_text(manifest("beta", pvc("chat.gguf"), args=["--no-such-flag"]))
    up = Up(tmp_path, [three_models], volume=volume)
    try:
        up.wait_serving()
        for attempt in (1, 2):
            with pytest.raises(openai.InternalServerError) as caught:
                ask(up, "beta")
            assert caught.value.status_code == 503
            assert "failed to load" in caught.value.message and "exited with status" in caught.value.message
            assert caught.value.response.headers["retry-after"]
            assert up.output().count("loading beta") == attempt
        assert statuses(up)["beta"].startswith("failed:")
        with pytest.raises(openai.NotFoundError):
            ask(up, "delta")  # unknown: still an immediate 404
        ask(up, "alpha")
    finally:
        assert up.stop() == 0


def test_ctrl_c_while_a_model_loads_leaves_no_child(tmp_path, volume, three_models):
    up = Up(tmp_path, [three_models], volume=volume)
    up.wait_serving()
    result: dict[str, object] = {}

    def request() -> None:
        try:
            result["status"] = httpx.post(f"{up.base_url}/v1/chat/completions", timeout=60, json={
                "model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}).status_code
        except httpx.HTTPError as exc:
            result["error"] = exc

    held = threading.Thread(target=request)
    held.start()
    assert wait_for(lambda: "loading alpha" in up.output(), timeout=10)
    children = psutil.Process(up.proc.pid).children(recursive=True)
    assert up.stop(signal.SIGINT) == 0, up.output()
    held.join(timeout=30)
    assert result.get("status") == 503 or "error" in result
    assert not any(alive(c.pid) for c in children)


@pytest.mark.slow
def test_done_when_three_manifests_max_loaded_1_keep_alive_5s(tmp_path, volume, three_models):
    """The issue's acceptance: each model is served in turn and unloads after its idle time."""
    up = Up(tmp_path, [three_models], "--max-loaded", "1", "--keep-alive", "5s", volume=volume)
    try:
        up.wait_serving()
        for name in NAMES:
            ask(up, name)
            assert list(up.servers()) == [name]
            assert wait_for(lambda: up.servers() == {}, timeout=20), up.output()
            assert f"unloading {name} (idle for 5 s)" in up.output()
        assert statuses(up) == dict.fromkeys(NAMES, "unloaded")
    finally:
        assert up.stop() == 0
