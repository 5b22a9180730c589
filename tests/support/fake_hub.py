"""A local stand-in for the part of the Hugging Face Hub API that huggingface_hub's download path uses.

Reached through HF_ENDPOINT. Like the real Hub:
- `GET /api/models/{repo}/tree/{revision}` lists files (with `lfs.oid` = sha256);
- `HEAD|GET /{repo}/resolve/{revision}/{file}` answers LFS files with a 302 to a
  CDN on another origin, carrying `X-Repo-Commit`, `X-Linked-Etag` (the sha256),
  `X-Linked-Size` and `ETag`;
- errors carry `X-Error-Code` (RepoNotFound, RevisionNotFound, EntryNotFound,
  GatedRepo); a private repo looks missing (401) without a valid token.
The CDN is an http_faults server, so tests count the bytes it serves, inject
faults, and check that no Authorization header ever reaches it.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from support.http_faults import FaultyHTTPServer

_TREE = re.compile(r"^/api/models/([^/]+/[^/]+)/tree/([^/]+)$")
_RESOLVE = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


@dataclass
class FakeRepo:
    files: dict[str, Path]
    commit: str
    branch: str = "main"
    token: str | None = None  # private: only this bearer token sees it
    gated: bool = False
    sha256: dict[str, str] = field(default_factory=dict)


class FakeHub(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, cdn: FaultyHTTPServer) -> None:
        super().__init__(("127.0.0.1", 0), _HubHandler)
        self.cdn = cdn
        self.repos: dict[str, FakeRepo] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, authorization)
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="fake-hub", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def add_repo(self, repo_id: str, files: dict[str, Path], **options: object) -> FakeRepo:
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        repo = FakeRepo(files=dict(files), commit=commit, **options)  # type: ignore[arg-type]
        for name, path in files.items():
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            repo.sha256[name] = digest
            self.cdn.add_file(f"/lfs/{digest}", path)
        self.repos[repo_id] = repo
        return repo

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _HubHandler(BaseHTTPRequestHandler):
    server: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        path = urlsplit(self.path).path
        self.server.requests.append((self.command, path, self.headers.get("Authorization")))
        if match := _TREE.match(path):
            self._tree(match.group(1), unquote(match.group(2)))
        elif match := _RESOLVE.match(path):
            self._resolve(match.group(1), unquote(match.group(2)), unquote(match.group(3)))
        else:
            self._error(404, "RepoNotFound")

    def _repo(self, repo_id: str, revision: str) -> FakeRepo | None:
        repo = self.server.repos.get(repo_id)
        auth = self.headers.get("Authorization")
        if repo is None:
            self._error(404, "RepoNotFound")
        elif repo.token is not None and auth != f"Bearer {repo.token}":
            if auth is not None:
                self._error(401, None, "Invalid credentials in Authorization header")
            else:
                self._error(401, "RepoNotFound")
        elif repo.gated:
            self._error(403, "GatedRepo")
        elif revision not in (repo.branch, repo.commit):
            self._error(404, "RevisionNotFound")
        else:
            return repo
        return None

    def _tree(self, repo_id: str, revision: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        entries = [
            {
                "type": "file",
                "oid": hashlib.sha1(name.encode()).hexdigest(),
                "size": path.stat().st_size,
                "path": name,
                "lfs": {"oid": repo.sha256[name], "size": path.stat().st_size, "pointerSize": 134},
            }
            for name, path in sorted(repo.files.items())
        ]
        self._send(200, json.dumps(entries).encode(), {"Content-Type": "application/json"})

    def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
        repo = self._repo(repo_id, revision)
        if repo is None:
            return
        if filename not in repo.files:
            self._error(404, "EntryNotFound")
            return
        digest = repo.sha256[filename]
        self._send(
            302,
            b"",
            {
                "Location": f"{self.server.cdn.base_url}/lfs/{digest}",
                "X-Repo-Commit": repo.commit,
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(repo.files[filename].stat().st_size),
                "ETag": f'"{digest}"',
            },
        )

    def _error(self, status: int, code: str | None, message: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        self._send(status, json.dumps({"error": message or code}).encode(), headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeHub]:
    """A fake Hub (with its own CDN) on 127.0.0.1, set as HF_ENDPOINT; no token unless a test sets one."""
    cdn = FaultyHTTPServer().start()
    hub = FakeHub(cdn).start()
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))  # no stored token leaks in
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        yield hub
    finally:
        hub.stop()
        cdn.stop()
