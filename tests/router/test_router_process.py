"""A real router process in front of fake backend processes (tests/support/fake_backend.py)."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from support.model_server import wait_for
from support.seed import SEED_REQUEST as SEED

def write_routes(path: Path, models: list[dict]) -> None:
    # Written beside and renamed over, as single-machine mode does, so the router never reads half a file.
    partial = path.with_suffix(".partial")
    partial.write_text(json.dumps({"models": models}))
    partial.replace(path)


def post(router, body, **kwargs) -> httpx.Response:
    return httpx.post(f"{router.base_url}/v1/chat/completions", json=body, timeout=30, **kwargs)


@pytest.fixture
def one_model(fake_backend, router_process):
    backend = fake_backend("tiny-chat")
    router = router_process("--route", f"tiny-chat,llama3={backend.base_url}")
    return backend, router


def test_seed_request_through_an_alias_passes_bodies_through_unchanged(one_model):
    backend, router = one_model
    direct = httpx.post(f"{backend.base_url}/v1/chat/completions", json=SEED)
    routed = post(router, SEED, headers={"X-Request-Id": "abc-1", "Authorization": "Bearer sk-client"})
    assert routed.status_code == 200
    assert routed.content == direct.content
    seen = backend.stats()
    assert seen["last_body"] == SEED
    assert seen["last_headers"]["x-request-id"] == "abc-1"
    # The router is the credential boundary: a client's key never reaches a backend.
    assert "authorization" not in seen["last_headers"]


def test_sse_is_forwarded_chunk_by_chunk(one_model):
    backend, router = one_model
    backend.configure(chunks=4, chunk_delay=1.0)
    body = {**SEED, "stream": True}
    with httpx.stream("POST", f"{router.base_url}/v1/chat/completions", json=body, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = response.iter_lines()
        first = next(line for line in events if line)
        # The first chunk is here while the backend is still producing the rest: nothing was buffered.
        assert json.loads(first.removeprefix("data: "))["choices"][0]["delta"]["content"] == "tok0 "
        assert backend.stats()["finished"] == 0
        rest = [line for line in events if line]
    assert rest[-1] == "data: [DONE]" and len(rest) == 4


def test_unknown_model_is_404_naming_available_models(one_model):
    _, router = one_model
    response = post(router, {**SEED, "model": "gpt-4o"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert "llama3" in error["message"] and "tiny-chat" in error["message"]


@pytest.mark.parametrize(
    ("body", "code"),
    [(b'{"model": "llama3", "messages": [', "invalid_json"), (b'{"messages": []}', "missing_required_parameter"),
     (b'"llama3"', "invalid_type")],
)
def test_bad_bodies_are_400(one_model, body, code):
    backend, router = one_model
    response = httpx.post(f"{router.base_url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert backend.stats()["requests"] == 0


def test_body_over_the_limit_is_413(fake_backend, router_process):
    backend = fake_backend("m")
    router = router_process("--route", f"m={backend.base_url}", "--max-body-bytes", "1000")
    big = {"model": "m", "messages": [{"role": "user", "content": "x" * 2000}]}
    response = post(router, big)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    # Also when the length is not announced up front (chunked upload).
    chunked = httpx.post(f"{router.base_url}/v1/chat/completions", content=iter([json.dumps(big).encode()]))
    assert chunked.status_code == 413
    assert post(router, {"model": "m", "messages": []}).status_code == 200


def test_unknown_path_and_wrong_method_use_the_error_envelope(one_model):
    _, router = one_model
    missing = httpx.get(f"{router.base_url}/v1/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    wrong = httpx.get(f"{router.base_url}/v1/chat/completions")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_models_list_and_one_model(one_model):
    _, router = one_model
    models = httpx.get(f"{router.base_url}/v1/models").json()
    cards = {card["id"]: card for card in models["data"]}
    assert set(cards) == {"tiny-chat", "llama3"}
    assert cards["llama3"]["root"] == "tiny-chat" and cards["llama3"]["ready"] is True
    one = httpx.get(f"{router.base_url}/v1/models/llama3")
    assert one.status_code == 200 and one.json()["id"] == "llama3"
    assert httpx.get(f"{router.base_url}/v1/models/nope").json()["error"]["code"] == "model_not_found"


def test_routes_file_not_ready_then_ready_then_gone(fake_backend, router_process, tmp_path):
    backend = fake_backend("big")
    routes = tmp_path / "routes.json"
    write_routes(routes, [{"name": "big", "aliases": ["llama3"], "ready": False, "status": "downloading 42%", "retryAfter": 7}])
    router = router_process("--routes", str(routes))
    waiting = post(router, SEED)
    assert waiting.status_code == 503
    assert waiting.headers["Retry-After"] == "7"
    assert "downloading 42%" in waiting.json()["error"]["message"]
    card = httpx.get(f"{router.base_url}/v1/models/big").json()
    assert card["ready"] is False and card["status"] == "downloading 42%"

    write_routes(routes, [{"name": "big", "aliases": ["llama3"], "endpoints": [backend.base_url]}])
    assert wait_for(lambda: post(router, SEED).status_code == 200)

    routes.write_text("models: [")  # a broken rewrite keeps the last good table
    assert wait_for(lambda: "keeping the previous routes" in router.log())
    assert post(router, SEED).status_code == 200

    write_routes(routes, [])
    assert wait_for(lambda: post(router, SEED).status_code == 404)


def test_auth_on(fake_backend, router_process, tmp_path):
    backend = fake_backend("m")
    keys = tmp_path / "keys"
    keys.write_text("# router keys\nsk-file-key\n")
    router = router_process("--route", f"m={backend.base_url}", "--api-keys-file", str(keys),
                            env={"LOCALMODEL_ROUTER_API_KEYS": "sk-env-key"})
    body = {"model": "m", "messages": []}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "sk-file-key"}):
        response = post(router, body, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["type"] == "authentication_error"
    assert httpx.get(f"{router.base_url}/v1/models").status_code == 401
    for key in ("sk-file-key", "sk-env-key"):
        assert post(router, body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    # Probes and metrics stay open.
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(router.base_url + path).status_code == 200
    # A rotated key file (a Secret mount updating) takes effect without a restart.
    keys.write_text("sk-rotated\n")
    assert wait_for(lambda: post(router, body, headers={"Authorization": "Bearer sk-rotated"}).status_code == 200)
    assert post(router, body, headers={"Authorization": "Bearer sk-file-key"}).status_code == 401
    assert backend.stats()["requests"] == 3
    for key in ("sk-file-key", "sk-env-key", "sk-rotated", "wrong"):
        assert key not in router.log()


def test_auth_off_accepts_any_or_no_key(one_model):
    _, router = one_model
    assert post(router, SEED).status_code == 200
    assert post(router, SEED, headers={"Authorization": "Bearer anything"}).status_code == 200


def test_503_with_retry_after_moves_to_another_endpoint_and_backs_off(fake_backend, router_process):
    busy, idle = fake_backend("m"), fake_backend("m")
    busy.configure(status=503, retry_after=30)
    router = router_process("--route", f"m={busy.base_url},{idle.base_url}")
    for _ in range(6):
        assert post(router, {"model": "m", "messages": []}).status_code == 200
    # The busy backend was asked once, then left alone for its Retry-After.
    assert busy.stats()["requests"] == 1
    assert idle.stats()["requests"] == 6
    assert router.metric("localmodel_router_upstream_errors_total", model="m", reason="status_503") == 1
    assert router.metric("localmodel_router_retries_total", model="m") == 1


def test_503_from_the_only_endpoint_reaches_the_client_with_its_retry_after(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(status=503, retry_after=2)
    router = router_process("--route", f"m={backend.base_url}")
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == 503 and response.headers["Retry-After"] == "2"
    assert "answers 503" in response.json()["error"]["message"]
    # While it cools down the router answers for it, without asking.
    again = post(router, {"model": "m", "messages": []})
    assert again.status_code == 503 and again.json()["error"]["code"] == "model_busy"
    assert "asked to retry after 2 s" in again.json()["error"]["message"]
    assert int(again.headers["Retry-After"]) in (1, 2)
    assert backend.stats()["requests"] == 1


def test_a_full_queue_is_relayed_and_keeps_the_endpoint_in_rotation(fake_backend, router_process):
    # A full queue frees with the next finished request: the router must not answer for the
    # backend during its Retry-After, or every client waits that long while slots sit idle.
    backend = fake_backend("m")
    backend.configure(status=503, retry_after=30, error_code="queue_full")
    router = router_process("--route", f"m={backend.base_url}")
    refused = post(router, {"model": "m", "messages": []})
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
    assert refused.headers["Retry-After"] == "30"
    backend.configure(status=None)
    assert post(router, {"model": "m", "messages": []}).status_code == 200
    assert backend.stats()["requests"] == 2


def test_dead_backend_is_skipped(fake_backend, router_process):
    dead, alive = fake_backend("m"), fake_backend("m")
    router = router_process("--route", f"m={dead.base_url},{alive.base_url}")
    dead.stop(signal.SIGKILL)
    for _ in range(4):
        assert post(router, {"model": "m", "messages": []}).status_code == 200
    # The refused endpoint rests after its first failure instead of costing every request a connect.
    assert router.metric("localmodel_router_upstream_errors_total", model="m", reason="connect") == 1


def test_all_backends_dead_is_a_clean_502(fake_backend, router_process):
    backend = fake_backend("m")
    router = router_process("--route", f"m={backend.base_url}")
    backend.stop(signal.SIGKILL)
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "bad_gateway" and "cannot connect" in error["message"]
    # Right after, the resting endpoint is reported as unavailable for a moment.
    again = post(router, {"model": "m", "messages": []})
    assert again.status_code in (502, 503)
    assert "connect" in again.json()["error"]["message"]


def test_backend_killed_after_receiving_the_request_is_not_replayed(fake_backend, router_process):
    # It may have acted on the POST: only the client can decide whether to send it again.
    slow, fast = fake_backend("m"), fake_backend("m")
    slow.configure(response_delay=60)
    router = router_process("--route", f"m={slow.base_url},{fast.base_url}")
    results: list[httpx.Response] = []
    # Ties rotate, so keep sending until one request is stuck on the slow backend.
    while slow.stats()["in_flight"] == 0:
        thread = threading.Thread(target=lambda: results.append(post(router, {"model": "m", "messages": []})))
        thread.start()
        wait_for(lambda: slow.stats()["in_flight"] == 1 or len(results) > 0, timeout=5)
        if slow.stats()["in_flight"] == 1:
            break
        thread.join()
        results.clear()
    asked_before = fast.stats()["requests"]
    slow.stop(signal.SIGKILL)
    thread.join(30)
    assert [r.status_code for r in results] == [502]
    error = results[0].json()["error"]
    assert error["code"] == "bad_gateway" and "not retried" in error["message"]
    assert fast.stats()["requests"] == asked_before
    assert router.metric("localmodel_router_upstream_errors_total", model="m", reason="disconnect") == 1
    assert router.metric("localmodel_router_retries_total", model="m") == 0


def test_a_request_that_crashes_its_backend_does_not_walk_through_the_replicas(fake_backend, router_process):
    backends = [fake_backend("m") for _ in range(3)]
    for backend in backends:
        backend.configure(die_on_request=True)
    router = router_process("--route", "m=" + ",".join(b.base_url for b in backends))
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == 502 and response.json()["error"]["code"] == "bad_gateway"
    time.sleep(0.5)  # let any replay reach (and kill) a second replica before counting
    assert sum(b.proc.poll() is not None for b in backends) == 1


def test_retries_stop_after_one_more_endpoint(fake_backend, router_process):
    backends = [fake_backend("m") for _ in range(3)]
    for backend in backends:
        backend.configure(status=503, retry_after=30)
    router = router_process("--route", "m=" + ",".join(b.base_url for b in backends))
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == 503 and response.headers["Retry-After"] == "30"
    assert sorted(b.stats()["requests"] for b in backends) == [0, 1, 1]
    assert router.metric("localmodel_router_retries_total", model="m") == 1


def test_connect_failures_stop_after_one_more_endpoint(fake_backend, router_process):
    backends = [fake_backend("m") for _ in range(3)]
    router = router_process("--route", "m=" + ",".join(b.base_url for b in backends))
    for backend in backends:
        backend.stop(signal.SIGKILL)
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == 502 and "tried 2 endpoints" in response.json()["error"]["message"]
    assert router.metric("localmodel_router_upstream_errors_total", model="m", reason="connect") == 2


@pytest.mark.parametrize("status", [502, 503])
def test_an_error_without_retry_after_is_the_answer_not_a_reason_to_retry(fake_backend, router_process, status):
    # Only a 503 with Retry-After says the backend did no work; any other 5xx may come after some.
    backends = [fake_backend("m") for _ in range(2)]
    for backend in backends:
        backend.configure(status=status)
    router = router_process("--route", "m=" + ",".join(b.base_url for b in backends))
    response = post(router, {"model": "m", "messages": []})
    assert response.status_code == status and "answers" in response.json()["error"]["message"]
    assert sum(b.stats()["requests"] for b in backends) == 1


def test_a_full_queue_is_tried_once_on_another_endpoint_and_stays_in_rotation(fake_backend, router_process):
    full, free = fake_backend("m"), fake_backend("m")
    full.configure(status=503, retry_after=30, error_code="queue_full")
    router = router_process("--route", f"m={full.base_url},{free.base_url}")
    for _ in range(4):
        assert post(router, {"model": "m", "messages": []}).status_code == 200
    # Refused with nothing done, so safe to send elsewhere; and not rested, since a slot frees soon.
    assert full.stats()["requests"] >= 2
    assert free.stats()["requests"] == 4


def test_backend_dying_mid_stream_is_a_clean_error_event(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(chunks=5, die_after_chunks=2)
    router = router_process("--route", f"m={backend.base_url}")
    client = openai.OpenAI(base_url=f"{router.base_url}/v1", api_key="none", max_retries=0)
    received = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True):
            received.append(chunk.choices[0].delta.content)
    assert received == ["tok0 ", "tok1 "]
    assert "failed while streaming" in str(caught.value)


def test_client_disconnect_mid_stream_frees_the_backend(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(chunks=1000, chunk_delay=0.2)
    router = router_process("--route", f"m={backend.base_url}")
    body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert b"data: " in sock.recv(65536) or b"data: " in sock.recv(65536)
    assert backend.stats()["in_flight"] == 1
    sock.close()
    assert wait_for(lambda: backend.stats()["cancelled"] == 1, timeout=5)
    assert backend.stats()["in_flight"] == 0 and backend.stats()["finished"] == 0
    assert wait_for(lambda: router.metric("localmodel_router_in_flight_requests", model="m") == 0)


def test_client_disconnect_while_waiting_for_a_plain_answer_frees_the_backend(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(response_delay=60)
    router = router_process("--route", f"m={backend.base_url}")
    body = json.dumps({"model": "m", "messages": []}).encode()
    sock = socket.create_connection(("127.0.0.1", router.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert wait_for(lambda: backend.stats()["in_flight"] == 1)
    sock.close()
    assert wait_for(lambda: backend.stats()["cancelled"] == 1, timeout=5)
    assert router.metric("localmodel_router_requests_total", model="m", code="499") == 1


def test_metrics_count_requests_by_model_and_status(one_model):
    _, router = one_model
    post(router, SEED)
    post(router, {**SEED, "model": "nope"})
    assert router.metric("localmodel_router_requests_total", model="tiny-chat", code="200") == 1
    assert router.metric("localmodel_router_requests_total", model="", code="404") == 1
    assert router.metric("localmodel_router_routing_seconds_count", model="tiny-chat") == 1
    assert router.metric("localmodel_router_models", ready="true") == 1


def test_bad_routes_file_is_a_clear_startup_error(router_process, tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text("models: [{name: m, endpoints: ['ftp://x']}]")
    with pytest.raises(RuntimeError) as caught:
        router_process("--routes", str(routes))
    assert "backend URL must be http://host:port" in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_sigterm_lets_requests_in_flight_finish(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(response_delay=1.5)
    router = router_process("--route", f"m={backend.base_url}")
    results: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: results.append(post(router, {"model": "m", "messages": []})))
    thread.start()
    assert wait_for(lambda: backend.stats()["in_flight"] == 1)
    assert router.stop(signal.SIGTERM) == 0
    thread.join(10)
    assert [r.status_code for r in results] == [200]
    assert "waiting up to 30 s for requests in flight" in router.log()
