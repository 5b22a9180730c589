"""End to end: LocalModels pulled from OCI registries (source.ollama, source.oci) served
by this machine on the node's address, then used through the router with the
official `ollama` client, as an app written against Ollama's API would (#13)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import ollama
import pytest

from e2e.cluster import RELEASE, WeightsServer, apply_model, pods_host, port_forward, wait_phase
from localmodel_server.puller.oci import DOCKER_GGUF, OLLAMA_MODEL
from support.fake_registry import DOCKER_MANIFEST, FakeRegistry
from support.seed import SEED_REQUEST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def registry(weights: WeightsServer) -> Iterator[FakeRegistry]:
    """One registry on the node's address: an Ollama model and a Docker Model Runner artifact."""
    registry = FakeRegistry(weights.folder, host=pods_host())
    registry.push("library/tiny", "1b", [
        (OLLAMA_MODEL, weights.folder / "chat.gguf"),
        ("application/vnd.ollama.image.params", json.dumps({"stop": ["<|im_end|>"]}).encode()),
    ], media_type=DOCKER_MANIFEST)
    registry.push("acme/tiny-embed", "v1", [(DOCKER_GGUF, weights.folder / "embed.gguf")])
    registry.start()
    yield registry
    registry.stop()


def test_models_from_ollama_and_oci_registries_answer_the_ollama_client(
    installed: tuple[str, str], models: dict[str, Any], registry: FakeRegistry,
) -> None:
    release_ns, _ = installed
    apply_model("from-ollama", {"source": {"ollama": {"model": "tiny:1b", "registry": registry.base_url,
                                                      "insecure": True}},
                                "servedName": "tiny:1b", "storage": {"size": "1Gi"}})
    apply_model("from-oci", {"source": {"oci": {"ref": f"{registry.host}/acme/tiny-embed:v1", "insecure": True}},
                             "servedName": "oci-embed", "storage": {"size": "1Gi"}})
    for name in ("from-ollama", "from-oci"):
        model, _ = wait_phase(name, {"Ready", "Failed"})
        assert model["status"]["phase"] == "Ready", model["status"]

    with port_forward(release_ns, f"{RELEASE}-router", 80) as url:
        client = ollama.Client(host=url, timeout=120)
        names = {m.model for m in client.list().models}
        assert {"tiny:1b", "oci-embed", "llama3"} <= names, names
        answer = client.chat(model="tiny:1b", messages=SEED_REQUEST["messages"], options={"num_predict": 8})
        assert answer.done and answer.eval_count and answer.eval_count > 0
        chunks = list(client.chat(model="tiny:1b", messages=SEED_REQUEST["messages"], stream=True,
                                  options={"num_predict": 8}))
        assert chunks[-1].done and chunks[-1].done_reason in ("stop", "length")
        vectors = client.embed(model="oci-embed", input=["hello world", "bonjour"]).embeddings
        assert len(vectors) == 2 and len(vectors[0]) == 64
