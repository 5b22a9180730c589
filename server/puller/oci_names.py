"""Model names as Ollama and OCI registries spell them, resolved to registry coordinates.

Ollama (`ollama pull` and its ParseName): `[host/namespace/]` or
`[namespace/]` then `model[:tag]`; a single segment is in `library/`, the
tag defaults to `latest`, the host to registry.ollama.ai.

OCI (docker's reference grammar, the part models use):
`[domain/]path[:tag][@sha256:hex]`; the first segment is a domain when it has
a '.' or a ':' or is `localhost`; the default is Docker Hub, where a single
segment is in `library/`.

The regular expressions below are, character for character, the ones the
CRD's CEL rules use (crds/localmodel.dev_localmodels.yaml; a test keeps them
in step). They avoid backslashes ('[.]', not an escaped dot) so the YAML
holds them verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

OLLAMA_REGISTRY = "registry.ollama.ai"
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"

_HOST = r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]{1,5})?"
_NS = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
OLLAMA_NAME = re.compile(rf"^({_HOST}/{_NS}/|{_NS}/)?{_NS}(:{_TAG})?$")

_COMPONENT = r"[a-z0-9]+(([.]|_|__|-+)[a-z0-9]+)*"
# A domain has a '.' or a port, or is localhost: otherwise the segment is part of the path.
_DOMAIN = r"(localhost(:[0-9]{1,5})?|[A-Za-z0-9-]+([.][A-Za-z0-9-]+)+(:[0-9]{1,5})?|[A-Za-z0-9-]+:[0-9]{1,5})"
OCI_REF = re.compile(rf"^({_DOMAIN}/)?{_COMPONENT}(/{_COMPONENT})*(:{_TAG})?(@sha256:[0-9a-f]{{64}})?$")


@dataclass(frozen=True)
class Reference:
    """Where a manifest lives: `{scheme}://{host}/v2/{repository}/manifests/{reference}`."""

    host: str  # as shown to people, e.g. registry.ollama.ai
    api_base: str  # e.g. https://registry.ollama.ai
    repository: str  # e.g. library/llama3.2
    reference: str  # a tag or sha256:<hex>
    display: str  # the name the user gave, for messages

    @property
    def manifest_url(self) -> str:
        return f"{self.api_base}/v2/{self.repository}/manifests/{self.reference}"

    def blob_url(self, digest: str) -> str:
        return f"{self.api_base}/v2/{self.repository}/blobs/{digest}"


def parse_ollama_name(name: str, registry: str | None = None, insecure: bool = False) -> Reference:
    """Resolve an Ollama model name; `registry` (a URL) replaces the host, as a mirror does."""
    if not OLLAMA_NAME.match(name):
        raise ValueError(f"{name!r} is not an Ollama model name ([host/namespace/]model[:tag])")
    parts, tag = _split_tag(name)
    host = OLLAMA_REGISTRY
    if len(parts) == 3:
        host, parts = parts[0], parts[1:]
    elif len(parts) == 1:
        parts = ["library", *parts]
    scheme = "http" if insecure else "https"
    api_base = f"{scheme}://{host}"
    if registry is not None:
        api_base, host = _mirror(registry, insecure)
    return Reference(host, api_base, "/".join(parts), tag or DEFAULT_TAG, name)


def parse_oci_ref(ref: str, insecure: bool = False) -> Reference:
    if not OCI_REF.match(ref):
        raise ValueError(f"{ref!r} is not an OCI reference ([registry/]namespace/name[:tag][@sha256:digest])")
    rest, _, digest = ref.partition("@")
    first, slash, remainder = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
    else:
        domain, path = DOCKER_HUB, rest
    segments, tag = _split_tag(path)
    path = "/".join(segments)
    if domain == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    api_host = DOCKER_HUB_API if domain == DOCKER_HUB else domain
    scheme = "http" if insecure else "https"
    return Reference(domain, f"{scheme}://{api_host}", path, digest or tag or DEFAULT_TAG, ref)


def _split_tag(name: str) -> tuple[list[str], str]:
    """Path segments and tag: the tag follows a ':' in the last segment (an earlier ':' is a port)."""
    head, slash, last = name.rpartition("/")
    model, _, tag = last.partition(":")
    return (head.split("/") if slash else []) + [model], tag


def _mirror(registry: str, insecure: bool) -> tuple[str, str]:
    parts = urlsplit(registry)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError("registry must be a URL such as https://mirror.example:5000")
    if parts.scheme == "http" and not insecure:
        raise ValueError("a plain http:// registry needs insecure: true (as ollama pull --insecure)")
    return f"{parts.scheme}://{parts.netloc}", parts.netloc
