"""End to end: a LocalModel with keepAlive scales to zero when idle, and the next
request through the router brings it back and is answered (#12's cluster half)."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest

from e2e.cluster import MODELS_NS, RELEASE, WeightsServer, apply_model, get_model, kubectl, port_forward, wait_phase
from support.seed import SEED_REQUEST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]


def wait_replicas(name: str, replicas: int, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = get_model(name)
        if model["spec"].get("replicas") == replicas and model.get("status", {}).get("replicas", 0) == replicas:
            return model
        time.sleep(1)
    raise AssertionError(f"{name} never reached {replicas} replicas: spec {model.get('spec')}, "
                         f"status {model.get('status')}")


def test_an_idle_model_scales_to_zero_and_a_request_brings_it_back(
    installed: tuple[str, str], models: dict[str, Any], weights: WeightsServer,
) -> None:
    release_ns, _ = installed
    apply_model("sleepy", {"source": weights.source("embed.gguf"), "servedName": "sleepy", "keepAlive": "10s",
                           "storage": {"size": "1Gi"}})
    wait_phase("sleepy", {"Ready"})
    wait_replicas("sleepy", 0)  # nobody called it for keepAlive: the operator scaled it down
    gets = weights.gets("embed.gguf")

    with port_forward(release_ns, f"{RELEASE}-router", 80) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        started = time.monotonic()
        embedding = client.embeddings.create(model="sleepy", input="wake up")  # held while a pod starts
        assert len(embedding.data[0].embedding) == 64
        woke_in = time.monotonic() - started
    model = get_model("sleepy")
    assert model["spec"]["replicas"] == 1, model["spec"]
    assert weights.gets("embed.gguf") == gets, "the weights were fetched again on the way back"
    reasons = kubectl("get", "events", "-n", MODELS_NS, "--field-selector", "involvedObject.name=sleepy",
                      "-o", "jsonpath={.items[*].reason}").split()
    assert "ScaledToZero" in reasons, reasons
    print(f"scale from zero answered in {woke_in:.1f} s")
    kubectl("delete", "lm", "sleepy", "-n", MODELS_NS, "--wait=false")
