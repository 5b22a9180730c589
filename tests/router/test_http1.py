"""The router's own HTTP/1.1 server, spoken to over raw sockets: the cases clients rarely exercise."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from support.model_server import wait_for

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


def test_oversized_headers_are_a_431(router):
    raw = exchange(router, b"GET /healthz HTTP/1.1\r\nHost: r\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 431 ") and b"Request headers are larger than" in raw
    assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_headers_too_large"


def test_too_many_headers_are_a_431(router):
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(5000))
    raw = exchange(router, b"GET /healthz HTTP/1.1\r\nHost: r\r\n" + many + b"\r\n")
    assert raw.startswith(b"HTTP/1.1 431 ") and b"at most 100 headers" in raw


@pytest.mark.parametrize("unterminated", [
    b"GET /" + b"a" * 200_000,  # a URL that never ends
    b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 200_000,  # a header value that never ends
])
def test_a_head_that_never_ends_is_refused_at_the_limit_not_at_the_timeout(router, unterminated):
    # Sent in pieces, as a slow client would; the router must not buffer it until its 75 s deadline.
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        for i in range(0, len(unterminated), 16384):
            try:
                sock.sendall(unterminated[i:i + 16384])
            except (BrokenPipeError, ConnectionResetError):
                break
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    assert raw.startswith(b"HTTP/1.1 431 "), raw[:200]


def test_100_continue_waits_for_the_response_ahead_of_it(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(chunks=4, chunk_delay=0.3)
    router = router_process("--route", f"m={backend.base_url}")
    streamed = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.sendall(post(streamed))
        received = sock.recv(65536)
        while b"data: " not in received:
            received += sock.recv(65536)
        # The first answer is mid-stream when the second request's head arrives.
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: r\r\nExpect: 100-continue\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(BODY))
        while b"100 Continue" not in received:
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
        first, _, _ = received.partition(b"HTTP/1.1 100 Continue\r\n\r\n")
        assert first.endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n"), first[-200:]  # whole, before the 100
        sock.sendall(BODY)
        rest = sock.recv(65536)
        assert rest.startswith(b"HTTP/1.1 200 OK\r\n")


def test_a_client_that_stops_reading_is_cut_off_and_its_backend_freed(fake_backend, router_process):
    backend = fake_backend("m")
    backend.configure(chunks=100_000, chunk_padding=4096)
    router = router_process("--route", f"m={backend.base_url}", "--write-timeout", "1")
    streamed = json.dumps({"model": "m", "messages": [], "stream": True}).encode()
    with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(post(streamed))  # and never read
        assert wait_for(lambda: backend.stats()["cancelled"] == 1, timeout=30)
    assert backend.stats()["finished"] == 0


def test_connections_over_the_cap_are_answered_503(fake_backend, router_process):
    backend = fake_backend("m")
    router = router_process("--route", f"m={backend.base_url}", "--max-connections", "2")
    held = [socket.create_connection(("127.0.0.1", router.port), timeout=10) for _ in range(2)]
    try:
        for sock in held:  # answered, and kept open
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: r\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK\r\n")
        raw = exchange(router, post())
        assert raw.startswith(b"HTTP/1.1 503 "), raw[:200]
        assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "too_many_connections"
    finally:
        held.pop().close()
    # A freed place is taken again.
    assert wait_for(lambda: exchange(router, post(extra=b"Connection: close\r\n")).startswith(b"HTTP/1.1 200 "))
    for sock in held:
        sock.close()


def test_413_reaches_a_client_that_sends_its_body_anyway(router):
    # Without Expect: 100-continue a client sends the whole body before it reads. Closing on the
    # unread body would answer it with a reset, which destroys the 413 on its way.
    body = b"x" * (2 << 20)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", router.port), timeout=10) as sock:
            sender = threading.Thread(target=_send_quietly, args=(sock, post(body)))
            sender.start()
            sender.join(10)
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 413 "), raw[:200]
        assert json.loads(raw.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_too_large"


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    try:
        sock.sendall(data)
    except OSError:
        pass


def test_head_has_no_body(router):
    raw = exchange(router, b"HEAD /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 2\r\n" in raw and raw.endswith(b"\r\n\r\n")
