"""`source.ollama` and `source.oci`: one OCI-distribution client for both.

Ollama's registry is an OCI-distribution registry whose manifests carry
Ollama's own layer types; Docker Model Runner pushes GGUF as OCI artifacts to
any registry. Both resolve the same way:
- GET /v2/<repository>/manifests/<tag> (an index is followed to its first manifest);
- a 401 is answered by the `WWW-Authenticate` challenge: a Bearer token from
  its realm (with the Docker config's credentials, if any), or Basic auth;
- the model layer's digest is its sha256, so the shared transfer engine
  verifies the download (a mismatch is ChecksumMismatch) and its size sizes
  the claim; the blob is fetched, resumed and retried like every other source;
- Ollama's `params` layer (stop sequences, default options) is read into
  the defaults the model server applies.

Credentials come from a Docker config file (`$DOCKER_CONFIG/config.json`,
else `~/.docker/config.json`): the operator mounts a `.dockerconfigjson`
Secret there, and on one machine `docker login` has written it already.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .errors import PullError, Reason
from .http_client import TransportError, open_get
from .oci_names import DOCKER_HUB, Reference
from .remote import RemoteFile
from .transfer import HttpRequest, RetryPolicy

log = logging.getLogger(__name__)

OLLAMA_MODEL = "application/vnd.ollama.image.model"
OLLAMA_PARAMS = "application/vnd.ollama.image.params"
DOCKER_GGUF = "application/vnd.docker.ai.gguf.v3"
MODEL_MEDIA_TYPES = (OLLAMA_MODEL, DOCKER_GGUF)
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_ACCEPT = ", ".join((
    "application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
    *_INDEX_TYPES,
))
_MAX_SMALL_BODY = 4 << 20  # manifests, tokens and params layers are small; never read a blob this way
_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_SHA256_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
# Refresh a Bearer token this long before the registry said it expires.
_TOKEN_MARGIN_S = 30.0


@dataclass(frozen=True)
class Layer:
    media_type: str
    digest: str
    size: int

    @property
    def sha256(self) -> str:
        match = _SHA256_DIGEST.match(self.digest)
        if match is None:
            raise PullError(Reason.INVALID_MODEL, f"layer digest {self.digest!r} is not a sha256 digest")
        return match.group(1)


def docker_credentials(host: str) -> tuple[str, str] | None:
    """user and password for `host` from the Docker config file, if it has them."""
    directory = os.environ.get("DOCKER_CONFIG")
    path = Path(directory) / "config.json" if directory else Path.home() / ".docker" / "config.json"
    try:
        auths = json.loads(path.read_text()).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    keys = [host, f"https://{host}", f"http://{host}"]
    if host == DOCKER_HUB:
        keys += ["https://index.docker.io/v1/", "index.docker.io", "registry-1.docker.io"]
    for key in keys:
        entry = auths.get(key) if isinstance(auths, dict) else None
        if not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def model_layers(manifest: dict[str, Any], display: str) -> tuple[list[Layer], Layer | None]:
    """The GGUF layers (every shard, in order) and Ollama's params layer, if any."""
    layers = [Layer(str(l.get("mediaType", "")), str(l.get("digest", "")), int(l.get("size", 0)))
              for l in manifest.get("layers", []) if isinstance(l, dict)]
    models = [l for l in layers if l.media_type in MODEL_MEDIA_TYPES]
    if not models:
        kinds = ", ".join(sorted({l.media_type for l in layers})) or "no layers"
        raise PullError(Reason.INVALID_MODEL, f"{display} holds no GGUF model layer (it has: {kinds})")
    params = next((l for l in layers if l.media_type == OLLAMA_PARAMS), None)
    return models, params


class RegistryClient:
    """GETs against one repository of one registry, authenticating as its challenge asks."""

    def __init__(self, ref: Reference, policy: RetryPolicy) -> None:
        self.ref = ref
        self.policy = policy
        self._credentials = docker_credentials(ref.host)
        self._authorization: str | None = None
        self._challenge: str | None = None
        self._expires = float("inf")

    def authorization(self) -> dict[str, str]:
        """The Authorization header to send now; a Bearer token about to expire is renewed first."""
        if self._challenge is not None and time.monotonic() > self._expires - _TOKEN_MARGIN_S:
            self._authenticate(self._challenge)
        return {"Authorization": self._authorization} if self._authorization else {}

    def get(self, url: str, accept: str) -> tuple[int, bytes]:
        """Status and body of a small GET, retried on transient failures, after at most one challenge."""
        failures = 0
        challenged = False
        while True:
            headers = {"Accept": accept, "User-Agent": "localmodel-pull", **self.authorization()}
            try:
                response = open_get(url, headers, self.policy.connect_timeout, self.policy.stall_timeout)
            except TransportError as err:
                if not err.retryable:
                    raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: {err}") from None
                failures = self._backoff(failures, str(err))
                continue
            try:
                status = response.status
                if status == 401 and not challenged and (challenge := response.getheader("WWW-Authenticate")):
                    challenged = True
                    self._authenticate(challenge)
                    continue
                if status in _RETRYABLE:
                    failures = self._backoff(failures, f"HTTP {status}")
                    continue
                return status, response.read(_MAX_SMALL_BODY)
            except (OSError, TimeoutError) as err:
                failures = self._backoff(failures, f"the connection broke ({type(err).__name__})")
            finally:
                response.close()

    def _backoff(self, failures: int, why: str) -> int:
        failures += 1
        if failures >= self.policy.attempts:
            raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: {why} (gave up after {failures} attempts)")
        time.sleep(self.policy.backoff(failures))
        return failures

    def _authenticate(self, challenge: str) -> None:
        scheme, _, rest = challenge.partition(" ")
        params = dict(_CHALLENGE_PARAM.findall(rest))
        basic = None
        if self._credentials is not None:
            basic = "Basic " + base64.b64encode(":".join(self._credentials).encode()).decode()
        if scheme.lower() == "basic":
            if basic is None:
                raise self._denied("asks for a user and password")
            self._authorization = basic
            return
        realm = params.get("realm")
        if scheme.lower() != "bearer" or not realm:
            raise PullError(Reason.UNAUTHORIZED, f"{self.ref.host} asks for an authentication we do not speak: {scheme}")
        query = {"scope": params.get("scope") or f"repository:{self.ref.repository}:pull"}
        if "service" in params:
            query["service"] = params["service"]
        headers = {"User-Agent": "localmodel-pull", **({"Authorization": basic} if basic else {})}
        try:
            response = open_get(f"{realm}?{urlencode(query)}", headers, self.policy.connect_timeout,
                                self.policy.stall_timeout)
        except TransportError as err:
            raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: token service: {err}") from None
        try:
            if response.status in (401, 403):
                raise self._denied("refused the credentials")
            if response.status != 200:
                raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: token service answered HTTP {response.status}")
            body = json.loads(response.read(_MAX_SMALL_BODY))
        except ValueError:
            raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: the token service sent no JSON") from None
        finally:
            response.close()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise PullError(Reason.NETWORK_ERROR, f"{self.ref.host}: the token service sent no token")
        self._authorization = f"Bearer {token}"
        self._challenge = challenge
        self._expires = time.monotonic() + float(body.get("expires_in") or 60)

    def _denied(self, what: str) -> PullError:
        hint = "" if self._credentials else " (no credentials were given: set secretRef to a .dockerconfigjson Secret)"
        return PullError(Reason.UNAUTHORIZED, f"{self.ref.host} {what} for {self.ref.display}{hint}")


def resolve_oci(ref: Reference, policy: RetryPolicy | None = None) -> RemoteFile:
    """The model layer of `ref` as a RemoteFile for the transfer engine, with Ollama's params as defaults."""
    client = RegistryClient(ref, policy or RetryPolicy())
    manifest = _manifest(client, ref.manifest_url)
    if manifest.get("mediaType") in _INDEX_TYPES or "manifests" in manifest:
        entries = [m for m in manifest.get("manifests", []) if isinstance(m, dict) and m.get("digest")]
        if not entries:
            raise PullError(Reason.INVALID_MODEL, f"{ref.display}: the index lists no manifest")
        manifest = _manifest(client, f"{ref.api_base}/v2/{ref.repository}/manifests/{entries[0]['digest']}")
    models, params = model_layers(manifest, ref.display)
    if len(models) > 1:
        raise PullError(Reason.INVALID_MODEL, f"{ref.display} is a GGUF split into {len(models)} shards; "
                                              "only single-file models can be pulled yet")
    layer = models[0]
    sha256 = layer.sha256
    url = ref.blob_url(layer.digest)

    def request() -> HttpRequest:
        return HttpRequest(url, {"User-Agent": "localmodel-pull", **client.authorization()})

    defaults = _params(client, ref, params) if params is not None else None
    return RemoteFile(request=request, size=layer.size or None, sha256=sha256, version=layer.digest,
                      defaults=defaults)


def _manifest(client: RegistryClient, url: str) -> dict[str, Any]:
    ref = client.ref
    status, body = client.get(url, MANIFEST_ACCEPT)
    if status == 404:
        raise PullError(Reason.SOURCE_NOT_FOUND, f"model {ref.display} not found in {ref.host}")
    if status in (401, 403):
        raise client._denied(f"refused access (HTTP {status})")
    if status != 200:
        raise PullError(Reason.NETWORK_ERROR, f"{ref.host}: manifest of {ref.display}: HTTP {status}")
    try:
        manifest = json.loads(body)
    except ValueError:
        raise PullError(Reason.INVALID_MODEL, f"{ref.display}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise PullError(Reason.INVALID_MODEL, f"{ref.display}: the manifest is not a JSON object")
    return manifest


def _params(client: RegistryClient, ref: Reference, layer: Layer) -> dict[str, Any]:
    """Ollama's params layer: a small JSON object of options (stop, temperature...), verified like any blob."""
    status, body = client.get(ref.blob_url(layer.digest), "application/octet-stream")
    if status != 200:
        raise PullError(Reason.NETWORK_ERROR, f"{ref.host}: params layer of {ref.display}: HTTP {status}")
    digest = hashlib.sha256(body).hexdigest()
    if digest != layer.sha256:
        raise PullError(Reason.CHECKSUM_MISMATCH, f"params layer of {ref.display} hashes to {digest}, "
                                                  f"expected {layer.sha256}")
    try:
        params = json.loads(body)
    except ValueError:
        raise PullError(Reason.INVALID_MODEL, f"{ref.display}: the params layer is not JSON") from None
    if not isinstance(params, dict):
        raise PullError(Reason.INVALID_MODEL, f"{ref.display}: the params layer is not a JSON object")
    return params
