"""A stand-in kube-apiserver that records PATCH requests, for the status reporter's unit tests.

The real-apiserver test of the status subresource comes with the operator tests;
this one checks what the reporter sends (path, content type, body, cadence).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest


@dataclass(frozen=True)
class CapturedPatch:
    path: str
    content_type: str
    body: dict[str, Any]


class StatusCaptureServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.patches: list[CapturedPatch] = []
        self.fail_with: int | None = None  # answer PATCHes with this status instead of 200
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="status-capture", daemon=True)

    def start(self) -> StatusCaptureServer:
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def write_kubeconfig(self, path: Path) -> Path:
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "capture", "cluster": {"server": self.url}}],
                    "users": [{"name": "puller", "user": {"token": "not-a-secret"}}],
                    "contexts": [{"name": "capture", "context": {"cluster": "capture", "user": "puller"}}],
                    "current-context": "capture",
                }
            )
        )
        return path


class _Handler(BaseHTTPRequestHandler):
    server: StatusCaptureServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_PATCH(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.server.patches.append(CapturedPatch(self.path, self.headers.get("Content-Type", ""), body))
        status = self.server.fail_with or 200
        reply = json.dumps({"kind": "Status", "code": status} if self.server.fail_with else body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


@pytest.fixture
def status_capture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StatusCaptureServer]:
    """The capture server, with KUBECONFIG pointing at it (and no in-cluster config)."""
    server = StatusCaptureServer().start()
    monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
