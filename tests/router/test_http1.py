"""The router's own HTTP/1.1 server, spoken to over raw sockets: the cases clients rarely exercise."""

from __future__ import annotations

import json
import re
import socket

import pytest

BODY = json.dumps({"model": "m", "messages": []}).encode()


@pytest.fixture
def router(fake_backend, router_process):
    backend = fake_backend("m")
    return router_process("--route", f"m={backend.base_url}", "--max-body-bytes", "4096")


def exchange(router, data: bytes, until: bytes = b"", timeout: float = 10) -> bytes:
    """Send raw bytes; read until `until` has been seen or the router closes."""
    with socket.create_connection(("127.0.0.1", router.port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while not (until and until in received):
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return received


def post(body: bytes = BODY, extra: bytes = b"") -> bytes:
    return b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\n%sContent-Length: %d\r\n\r\n%s" % (extra, len(body), body)


def test_pipelined_requests_are_answered_in_order(router):
    second = json.dumps({"model": "nope", "messages": []}).encode()
    raw = exchange(router, post() + post(second) + b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)
    assert statuses == [b"200", b"404", b"200"]
    assert raw.endswith(b"ok")


def test_expect_100_continue(router):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(BODY)
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(head)
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(BODY)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")


def test_chunked_request_body(router):
    raw = exchange(router, b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n"
                           b"Connection: close\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(BODY), BODY))
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"chat.completion" in raw


def test_http10_stream_ends_by_closing(router):
    body = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
    raw = exchange(router, b"POST /v1/chat/completions HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower() and b"connection: close" in head.lower()
    assert payload.endswith(b"data: [DONE]\n\n")


def test_announced_oversized_body_is_refused_before_it_is_sent(router):
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nContent-Length: 1000000000\r\n\r\n"
    raw = exchange(router, head)
    assert raw.startswith(b"HTTP/1.1 413 ")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_too_large"


def test_garbage_is_a_400_envelope(router):
    raw = exchange(router, b"NOT HTTP AT ALL\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ")
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "invalid_http"


def test_oversized_headers_are_a_400(router):
    raw = exchange(router, b"GET /healthz HTTP/1.1\r\nHost: r\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 400 ") and b"Request headers are larger than" in raw


def test_head_has_no_body(router):
    raw = exchange(router, b"HEAD /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 2\r\n" in raw and raw.endswith(b"\r\n\r\n")
