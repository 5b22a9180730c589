"""A small OCI-distribution registry, for the puller's ollama and oci sources: on 127.0.0.1,
or on the node's address for the cluster tier (tests/e2e/test_registries.py).

It speaks what a pull needs: manifests by tag or digest, blobs with Range
(served by http_faults.py's file server, so drops and stalls can be injected),
a 401 Bearer challenge answered by a /token endpoint that checks Basic
credentials, 404 for an unknown repository or tag, and, on request, a blob
whose bytes do not match its digest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from .http_faults import Faults, FaultyHTTPServer, ServedFile, _Handler

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
_MANIFEST_PATH = re.compile(r"^/v2/(?P<repo>.+)/manifests/(?P<ref>[^/]+)$")
_REPO_PATH = re.compile(r"^/v2/(?P<repo>.+)/(manifests|blobs)/")


@dataclass(frozen=True)
class Pushed:
    manifest: dict[str, Any]
    digest: str  # of the manifest
    blobs: dict[str, ServedFile]  # media type -> what serves that layer


class FakeRegistry(FaultyHTTPServer):
    def __init__(self, blob_dir: Path, host: str = "127.0.0.1") -> None:
        super().__init__(host)
        self.RequestHandlerClass = _RegistryHandler
        self.blob_dir = blob_dir
        self.manifests: dict[tuple[str, str], tuple[str, bytes]] = {}
        self.credentials: tuple[str, str] | None = None
        self.token = "fake-token"
        self.token_requests: list[dict[str, str]] = []

    @property
    def host(self) -> str:
        return f"{self.server_address[0]}:{self.server_address[1]}"

    def require_login(self, user: str, password: str) -> None:
        """From now on every /v2/ request needs the Bearer token that /token gives for these credentials."""
        self.credentials = (user, password)

    def push(self, repo: str, tag: str, layers: list[tuple[str, bytes | Path]], *, corrupt: str | None = None,
             media_type: str = OCI_MANIFEST, faults: dict[str, Faults] | None = None) -> Pushed:
        """Store `layers` (media type, content) as `repo:tag`.

        `corrupt` names a layer served with bytes that do not match its digest; `faults` (by media type)
        injects transfer faults into a layer's blob.
        """
        entries, blobs = [], {}
        for kind, content in layers:
            if isinstance(content, Path) and kind != corrupt:
                # Served from where it lies (the benchmark's GiB-sized blobs are never read into memory).
                with content.open("rb") as f:
                    digest = "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()
                path, size = content, content.stat().st_size
            else:
                data = content.read_bytes() if isinstance(content, Path) else content
                digest = "sha256:" + hashlib.sha256(data).hexdigest()
                if kind == corrupt:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])  # still a GGUF: only the digest can tell
                path, size = self.blob_dir / digest.replace(":", "-"), len(data)
                path.write_bytes(data)
            blobs[kind] = self.add_file(f"/v2/{repo}/blobs/{digest}", path, (faults or {}).get(kind))
            entries.append({"mediaType": kind, "digest": digest, "size": size})
        config = b"{}"
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        (self.blob_dir / config_digest.replace(":", "-")).write_bytes(config)
        manifest = {"schemaVersion": 2, "mediaType": media_type,
                    "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                               "digest": config_digest, "size": len(config)},
                    "layers": entries}
        body = json.dumps(manifest).encode()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        self.manifests[(repo, tag)] = self.manifests[(repo, digest)] = (media_type, body)
        return Pushed(manifest, digest, blobs)


class _RegistryHandler(_Handler):
    server: FakeRegistry

    def _serve(self, body: bool) -> None:
        path = urlsplit(self.path).path
        if path == "/token":
            self._token()
            return
        if path.startswith("/v2/") and not self._authorized(path):
            return
        if path == "/v2/":
            self._json(200, {})
            return
        match = _MANIFEST_PATH.match(path)
        if match is not None:
            found = self.server.manifests.get((match["repo"], match["ref"]))
            if found is None:
                self._json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})
                return
            media_type, data = found
            self.send_response(200)
            self.send_header("Content-Type", media_type)
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(data).hexdigest())
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)
            return
        super()._serve(body)

    def _authorized(self, path: str) -> bool:
        if self.server.credentials is None or self.headers.get("Authorization") == f"Bearer {self.server.token}":
            return True
        match = _REPO_PATH.match(path)
        scope = f',scope="repository:{match["repo"]}:pull"' if match else ""
        self.send_response(401)
        self.send_header("WWW-Authenticate",
                         f'Bearer realm="{self.server.base_url}/token",service="fake-registry"{scope}')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _token(self) -> None:
        self.server.token_requests.append({"path": self.path, "authorization": self.headers.get("Authorization", "")})
        user, password = self.server.credentials or ("", "")
        expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._json(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            return
        self._json(200, {"token": self.server.token, "expires_in": 300})

    def _json(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def fake_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeRegistry]:
    """A fresh registry on 127.0.0.1 for one test."""
    registry = FakeRegistry(tmp_path_factory.mktemp("registry-blobs"))
    registry.start()
    try:
        yield registry
    finally:
        registry.stop()
