"""End to end: the chart installed, two LocalModels pulled from this machine and
served, and the OpenAI API answered through the router from inside the cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.cluster import MODELS_NS, RELEASE, kubectl, port_forward, run_in_cluster
from support.seed import SEED_REQUEST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def test_progress_moves_and_the_models_become_ready(models: dict[str, Any]) -> None:
    assert models["chat"]["status"]["phase"] == "Ready", models["chat"]["status"]
    assert models["embed"]["status"]["phase"] == "Ready", models["embed"]["status"]
    # The slowly served chat weights were watched on their way: more than one value, ending complete.
    progress = models["chat_progress"]
    assert len(progress) >= 2 and progress[-1].startswith("100%"), progress
    header, *rows = kubectl("get", "lm", "-n", MODELS_NS).splitlines()
    assert header.split()[:5] == ["NAME", "SOURCE", "PHASE", "PROGRESS", "READY"], header
    assert sorted(row.split()[0] for row in rows if " Ready " in row) == ["tiny-chat", "tiny-embed"], rows


def test_an_app_in_the_cluster_gets_chat_streams_embeddings_and_errors(
    installed: tuple[str, str], models: dict[str, Any],
) -> None:
    release_ns, _ = installed
    base = f"http://{RELEASE}-router.{release_ns}.svc/v1"
    assert models["chat"]["status"]["endpoint"] == base
    script = (Path(__file__).parent / "in_cluster_client.py").read_text()
    seen = json.loads(run_in_cluster("openai-client", script.replace("sys.argv[1]", repr(base))).splitlines()[-1])

    assert seen["models"] == {"status": 200, "ids": ["llama3", "tiny-embed"]}
    assert seen["chat"]["status"] == 200 and isinstance(seen["chat"]["content"], str)
    assert seen["chat"]["usage"]["completion_tokens"] > 0
    assert seen["stream"]["status"] == 200 and seen["stream"]["done"] and seen["stream"]["events"] > 2
    assert seen["stream"]["usage"]["completion_tokens"] > 0
    assert seen["embeddings"] == {"status": 200, "vectors": [64, 64]}
    assert seen["unknown"]["status"] == 404 and seen["unknown"]["error"]["code"] == "model_not_found"


def test_the_openai_sdk_through_a_port_forward(installed: tuple[str, str], models: dict[str, Any]) -> None:
    release_ns, _ = installed
    with port_forward(release_ns, f"{RELEASE}-router", 80) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        completion = client.chat.completions.create(**SEED_REQUEST, max_tokens=16)
        assert completion.model == "llama3" and completion.usage.completion_tokens > 0
        chunks = list(client.chat.completions.create(**SEED_REQUEST, max_tokens=16, stream=True))
        assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
