"""source.ollama and source.oci on one machine: `localmodel pull` and `localmodel up` from a local registry."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import ollama
import pytest
from support.fake_registry import DOCKER_MANIFEST

from localmodel_server.puller.oci import DOCKER_GGUF, OLLAMA_MODEL, OLLAMA_PARAMS

from .test_up import Up, manifest

pytestmark = pytest.mark.llama

PARAMS = {"stop": ["<|im_end|>"], "num_predict": 5}


@pytest.fixture
def registry_manifests(tmp_path, fake_registry, chat_model):
    fake_registry.push("library/tiny-chat", "q8", [(OLLAMA_MODEL, chat_model),
                                                   (OLLAMA_PARAMS, json.dumps(PARAMS).encode())],
                       media_type=DOCKER_MANIFEST)
    fake_registry.push("acme/tiny-chat", "v1", [(DOCKER_GGUF, chat_model)])
    directory = tmp_path / "manifests"
    directory.mkdir()
    (directory / "from-ollama.yaml").write_text(manifest(
        "from-ollama", {"ollama": {"model": "tiny-chat:q8", "registry": fake_registry.base_url, "insecure": True}},
        contextSize=512))
    (directory / "from-oci.yaml").write_text(manifest(
        "from-oci", {"oci": {"ref": f"{fake_registry.host}/acme/tiny-chat:v1", "insecure": True}}, contextSize=512))
    return directory


def test_localmodel_pull_fetches_both_registry_sources(tmp_path, registry_manifests):
    result = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(tmp_path / "c"),
                             "pull", str(registry_manifests)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "from-ollama: " in result.stdout and "from-oci: " in result.stdout


def test_up_serves_registry_models_with_the_params_layer_as_defaults(tmp_path, registry_manifests):
    up = Up(tmp_path, [registry_manifests])
    try:
        up.wait_serving()
        client = ollama.Client(host=up.base_url, timeout=60)
        assert {m.model for m in client.list().models} == {"from-ollama", "from-oci"}
        # num_predict 5 comes from the Ollama model's params layer; the OCI artifact has none.
        message = [{"role": "user", "content": "Tell me a long story"}]
        assert client.chat(model="from-ollama", messages=message, options={"temperature": 0}).eval_count == 5
        assert client.chat(model="from-oci", messages=message,
                           options={"temperature": 0, "num_predict": 9}).eval_count == 9
        assert client.chat(model="from-ollama", messages=message,
                           options={"temperature": 0, "num_predict": 9}).eval_count == 9  # the client's value wins
        shown = client.show("from-ollama")
        assert 'stop           "<|im_end|>"' in shown.parameters and "num_predict    5" in shown.parameters
    finally:
        assert up.stop(signal.SIGTERM) == 0
