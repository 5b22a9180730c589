"""An HTTP file server on 127.0.0.1 with Range support and injectable faults.

Used by the puller tests and by bench/puller_throughput.py. It counts the body
bytes it serves per path, so tests can prove that a resume fetched only the
rest. A path without faults is served with os.sendfile, so the server is not the
bottleneck when the benchmark compares the puller with curl.
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")
_CHUNK = 1 << 16


@dataclass
class Faults:
    """What goes wrong when a path is requested. Counters say how often it still may."""

    status: int | None = None  # answer every GET/HEAD with this status and no body
    drop_after: int | None = None  # close the connection after this many body bytes ...
    drop_times: int = 1  # ... on this many responses
    truncate_at: int | None = None  # every response ends (connection closed) at this file offset
    stall_after: int | None = None  # stop sending for stall_seconds after this many body bytes ...
    stall_seconds: float = 5.0
    stall_times: int = 1  # ... on this many responses
    ignore_range: bool = False  # always answer 200 with the whole body
    bearer_token: str | None = None  # 401 unless `Authorization: Bearer <token>`
    redirect_to: str | None = None  # answer 302 with this Location
    rate_bytes_per_s: int | None = None  # throttle the body (to kill a pull midway)


@dataclass
class ServedFile:
    path: Path
    etag: str
    faults: Faults = field(default_factory=Faults)
    bytes_served: int = 0
    requests: list[dict[str, str]] = field(default_factory=list)
    body_bytes: list[int] = field(default_factory=list)  # per response with a body, in order


class FaultyHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.files: dict[str, ServedFile] = {}
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="http-faults", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://{self.server_address[0]}:{self.server_address[1]}"

    def add_file(self, url_path: str, file: Path, faults: Faults | None = None) -> ServedFile:
        stat = file.stat()
        served = ServedFile(file, f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"', faults or Faults())
        self.files[url_path] = served
        return served

    def start(self) -> FaultyHTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up mid-body is an expected event here, not an error to print."""


class _Handler(BaseHTTPRequestHandler):
    server: FaultyHTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        # An absolute URL means we are used as a plain-HTTP proxy: serve its path all the same.
        served = self.server.files.get(urlsplit(self.path).path)
        if served is None:
            self._empty(404)
            return
        with self.server.lock:
            request = {k.lower(): v for k, v in self.headers.items()}
            served.requests.append(request | {":method": self.command, ":target": self.path})
        faults = served.faults
        if faults.status is not None:
            self._empty(faults.status)
            return
        if faults.redirect_to is not None:
            self.send_response(302)
            self.send_header("Location", faults.redirect_to)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if faults.bearer_token is not None and self.headers.get("Authorization") != f"Bearer {faults.bearer_token}":
            self._empty(401)
            return
        size = served.path.stat().st_size
        start, end = self._requested_range(served, size)
        if start is not None and start >= size:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200 if start is None else 206)
        first, last = (0, size - 1) if start is None else (start, end)
        if start is not None:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("ETag", served.etag)
        self.send_header("Accept-Ranges", "none" if faults.ignore_range else "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self._send_body(served, first, last - first + 1)

    def _requested_range(self, served: ServedFile, size: int) -> tuple[int | None, int]:
        header = self.headers.get("Range")
        if served.faults.ignore_range or header is None:
            return None, size - 1
        if_range = self.headers.get("If-Range")
        if if_range is not None and if_range != served.etag:
            return None, size - 1
        match = _RANGE.match(header.strip())
        if match is None:
            return None, size - 1
        start = int(match.group(1))
        end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
        return start, end

    def _send_body(self, served: ServedFile, offset: int, length: int) -> None:
        faults = served.faults
        cut = self._take(faults, "drop")
        if faults.truncate_at is not None:
            cut = min(cut if cut is not None else length, max(0, faults.truncate_at - offset))
        stall = self._take(faults, "stall")
        plain = cut is None and stall is None and faults.rate_bytes_per_s is None
        with self.server.lock:
            response = len(served.body_bytes)
            served.body_bytes.append(0)
        sent = 0
        with served.path.open("rb") as f:
            try:
                if plain:
                    self._sendfile(f, offset, length, served, response)
                    return
                f.seek(offset)
                while sent < length:
                    if cut is not None and sent >= cut:
                        self.close_connection = True
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    if stall is not None and sent >= stall:
                        time.sleep(faults.stall_seconds)
                        stall = None
                    limits = [_CHUNK, length - sent] + [x - sent for x in (cut, stall) if x is not None]
                    data = f.read(min(limits))
                    self.wfile.write(data)
                    self._count(served, response, len(data))
                    sent += len(data)
                    if faults.rate_bytes_per_s:
                        time.sleep(len(data) / faults.rate_bytes_per_s)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    def _sendfile(self, f, offset: int, length: int, served: ServedFile, response: int) -> None:  # type: ignore[no-untyped-def]
        self.wfile.flush()
        sent = 0
        while sent < length:
            n = os.sendfile(self.connection.fileno(), f.fileno(), offset + sent, min(length - sent, 1 << 30))
            if n == 0:
                break
            sent += n
            self._count(served, response, n)

    def _take(self, faults: Faults, kind: str) -> int | None:
        """Arm a counted fault (drop or stall) for this response, if any are left."""
        with self.server.lock:
            after = getattr(faults, f"{kind}_after")
            times = getattr(faults, f"{kind}_times")
            if after is None or times <= 0:
                return None
            setattr(faults, f"{kind}_times", times - 1)
            return int(after)

    def _count(self, served: ServedFile, response: int, n: int) -> None:
        with self.server.lock:
            served.bytes_served += n
            served.body_bytes[response] += n

    def _empty(self, status: int) -> None:
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()


@pytest.fixture
def http_faults() -> Iterator[FaultyHTTPServer]:
    """A fresh fault-injecting file server on 127.0.0.1 for one test."""
    server = FaultyHTTPServer().start()
    try:
        yield server
    finally:
        server.stop()
