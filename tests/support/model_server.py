"""Real `localmodel-server` processes on 127.0.0.1 for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from .processes import Process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess(Process):
    """A localmodel-server process."""

    def metric(self, name: str) -> float:
        """Current value of an unlabelled Prometheus sample."""
        text = httpx.get(f"{self.base_url}/metrics").text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        raise KeyError(name)


def start_server(model: Path, log_dir: Path, *extra: str, ready_timeout: float = 60) -> ServerProcess:
    port = free_port()
    args = [
        sys.executable, "-m", "localmodel_server.main", "--model-path", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--threads", "2", *extra,
    ]
    log_path = log_dir / f"server-{port}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    server = ServerProcess(proc, port, log_path)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"localmodel-server exited with {proc.returncode}:\n{server.log()}")
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"localmodel-server was not ready in {ready_timeout}s:\n{server.log()}")


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServerProcess]]:
    """Start servers on demand; every one still running is stopped at the end of the session."""
    started: list[ServerProcess] = []
    log_dir = tmp_path_factory.mktemp("server-logs")

    def start(model: Path, *extra: str) -> ServerProcess:
        server = start_server(model, log_dir, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def chat_server(server_factory: Callable[..., ServerProcess], chat_model: Path) -> ServerProcess:
    """The shared chat server: served as `tiny-chat`, with the alias `llama3`, 4 slots."""
    return server_factory(chat_model, "--served-name", "tiny-chat", "--aliases", "llama3",
                          "--context-size", "512", "--parallel", "4")


@pytest.fixture(scope="session")
def embed_server(server_factory: Callable[..., ServerProcess], embed_model: Path) -> ServerProcess:
    return server_factory(embed_model, "--served-name", "tiny-embed", "--parallel", "4")


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def open_stream(server: ServerProcess, max_tokens: int = 4000) -> socket.socket:
    """Start a streaming chat request on a raw socket and wait for its response headers."""
    body = json.dumps({"model": "llama3", "messages": [{"role": "user", "content": "go"}],
                       "max_tokens": max_tokens, "stream": True}).encode()
    sock = socket.create_connection(("127.0.0.1", server.port))
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    return sock
