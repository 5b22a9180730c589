"""Router and fake-backend processes on 127.0.0.1 for the router tests.

Both run as real subprocesses: the router as `python -m
localmodel_server.router.main` (the console script's module), the backend as
tests/support/fake_backend.py, so a test can kill a backend mid-request.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import Process

FAKE_BACKEND = Path(__file__).with_name("fake_backend.py")
_SERVING = re.compile(rb"serving on http://[^:]+:(\d+)")


class FakeBackendProcess(Process):
    def configure(self, **changes: Any) -> None:
        httpx.post(f"{self.base_url}/_fake/config", json=changes, timeout=5).raise_for_status()

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_fake/stats", timeout=5).json()


class RouterProcess(Process):
    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from /metrics (0 when absent), matched on the given labels."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=5).text
        for line in text.splitlines():
            if not line.startswith(name):
                continue
            sample, _, value = line.rpartition(" ")
            sample_name, _, label_text = sample.partition("{")
            if sample_name != name:
                continue
            found = dict(re.findall(r'(\w+)="([^"]*)"', label_text))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(value)
        return 0.0


def _wait_until(check: Callable[[], int | None], proc: subprocess.Popen[bytes], what: str, log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found is not None:
            return found
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not start in {timeout}s:\n{log.read_text(errors='replace')}")


def start_fake_backend(name: str, log_dir: Path, host: str = "127.0.0.1",
                       prefix: list[str] | None = None) -> FakeBackendProcess:
    """`prefix` runs it elsewhere, e.g. `ip netns exec <ns>` on a test host."""
    log_path = log_dir / f"fake-{name}-{time.monotonic_ns()}.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([*(prefix or []), sys.executable, str(FAKE_BACKEND), "--host", host, "--port", "0",
                                 "--name", name],
                                stdout=out, stderr=subprocess.STDOUT)

    def port() -> int | None:
        match = re.search(rb"LISTENING (\d+)", log_path.read_bytes())
        return int(match.group(1)) if match else None

    return FakeBackendProcess(proc, _wait_until(port, proc, "fake backend", log_path, 20), log_path, host)


def start_router(args: list[str], log_dir: Path, env: dict[str, str] | None = None, wait_ready: bool = True) -> RouterProcess:
    log_path = log_dir / f"router-{time.monotonic_ns()}.log"
    command = [sys.executable, "-m", "localmodel_server.router.main", "--host", "127.0.0.1", "--port", "0", *args]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"})

    def port() -> int | None:
        match = _SERVING.search(log_path.read_bytes())
        return int(match.group(1)) if match else None

    router = RouterProcess(proc, _wait_until(port, proc, "localmodel-router", log_path, 20), log_path)
    if wait_ready:

        def ready() -> int | None:
            return 1 if httpx.get(f"{router.base_url}/readyz", timeout=2).status_code == 200 else None

        _wait_until(ready, proc, "localmodel-router /readyz", log_path, 30)
    return router


@pytest.fixture
def fake_backend(tmp_path: Path) -> Iterator[Callable[..., FakeBackendProcess]]:
    """Start fake backends by name (on 127.0.0.1 unless a host is given); all are killed after the test."""
    started: list[FakeBackendProcess] = []

    def start(name: str, host: str = "127.0.0.1", prefix: list[str] | None = None) -> FakeBackendProcess:
        backend = start_fake_backend(name, tmp_path, host, prefix)
        started.append(backend)
        return backend

    yield start
    for backend in started:
        backend.stop(signal.SIGKILL)


@pytest.fixture
def router_process(tmp_path: Path) -> Iterator[Callable[..., RouterProcess]]:
    """Start routers with the given CLI args (host and port are chosen); stopped after the test."""
    started: list[RouterProcess] = []

    def start(*args: str, env: dict[str, str] | None = None, wait_ready: bool = True) -> RouterProcess:
        router = start_router(list(args), tmp_path, env, wait_ready)
        started.append(router)
        return router

    yield start
    for router in started:
        router.stop()
