"""SIGTERM drains: readiness fails at once, new work gets 503, in-flight work finishes, the process exits."""

from __future__ import annotations

import signal
import socket
import time

import httpx
import pytest

from support.model_server import open_stream, wait_for

pytestmark = pytest.mark.llama


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_sigterm_drains_in_flight_requests(server_factory, chat_model):
    server = server_factory(chat_model, "--served-name", "llama3", "--context-size", "4096", "--drain-timeout", "60")
    sock = open_stream(server, max_tokens=800)
    server.proc.send_signal(signal.SIGTERM)

    assert wait_for(lambda: httpx.get(f"{server.base_url}/readyz").status_code == 503, timeout=5)
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200
    refused = httpx.post(f"{server.base_url}/v1/chat/completions",
                         json={"model": "llama3", "messages": [{"role": "user", "content": "late"}]})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "server_draining"
    assert "retry-after" in refused.headers

    body = read_until_closed(sock, timeout=120)
    assert b'"finish_reason":"length"' in body and b"data: [DONE]" in body
    assert server.proc.wait(30) == 0


def test_drain_timeout_bounds_the_shutdown(server_factory, chat_model):
    server = server_factory(chat_model, "--served-name", "llama3", "--context-size", "4096", "--drain-timeout", "1")
    sock = open_stream(server, max_tokens=4000)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0
    # Drain timeout (1 s) plus the bounded close of open connections (2 s), with slack for a busy machine.
    assert time.monotonic() - started < 15
    body = read_until_closed(sock, timeout=5)
    assert b"data: [DONE]" not in body
