"""End to end, with faults: each leaves nothing lost and nothing duplicated."""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any

import openai
import pytest

from e2e.cluster import (
    MODELS_NS, RELEASE, WeightsServer, apply_model, kubectl, kubectl_json, model_pods, port_forward,
    wait_gone, wait_phase,
)
from localmodel_server.contract import MODEL_LABEL
from support.seed import SEED_REQUEST

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


def ready_pod(name: str) -> dict[str, Any]:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for pod in model_pods(name):
            conditions = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
            if conditions.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                return pod
        time.sleep(1)
    raise AssertionError(f"no Ready server pod for {name}")


def test_a_server_pod_deleted_mid_stream_ends_the_stream_and_its_replacement_does_not_download_again(
    installed: tuple[str, str], models: dict[str, Any], weights: WeightsServer,
) -> None:
    release_ns, _ = installed
    apply_model("long-chat", {"source": weights.source("long.gguf"), "servedName": "long-chat",
                              "contextSize": 4096, "storage": {"size": "1Gi"}})
    wait_phase("long-chat", {"Ready"})
    victim = ready_pod("long-chat")["metadata"]["name"]
    assert weights.gets("long.gguf") == 1
    with port_forward(release_ns, f"{RELEASE}-router", 80) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        # 3000 tokens take this model about 20 s: the pod is gone long before the end.
        stream = client.chat.completions.create(model="long-chat", messages=SEED_REQUEST["messages"],
                                                max_tokens=3000, stream=True, extra_body={"ignore_eos": True})
        ended = None
        started = time.monotonic()
        try:
            for i, _chunk in enumerate(stream):
                if i == 1:
                    threading.Thread(target=kubectl, args=("delete", "pod", victim, "-n", MODELS_NS,
                                                           "--grace-period=0", "--force"), daemon=True).start()
        except (openai.APIError, openai.APIConnectionError) as error:
            ended = error
        assert ended is not None, "the stream ran to its end: the pod was not deleted in time"
        assert time.monotonic() - started < 60, "the stream hung after its server went away"

        replacement = ready_pod("long-chat")["metadata"]["name"]
        assert replacement != victim
        completion = client.chat.completions.create(model="long-chat", messages=SEED_REQUEST["messages"],
                                                    max_tokens=8)
        assert completion.usage.completion_tokens > 0
    # The weights stayed in the claim: the replacement pod did not fetch them again.
    assert weights.gets("long.gguf") == 1
    kubectl("delete", "lm", "long-chat", "-n", MODELS_NS, "--wait=false")


def test_the_operator_killed_mid_pull_converges_with_no_duplicate_job_or_claim(
    installed: tuple[str, str], models: dict[str, Any], weights: WeightsServer,
) -> None:
    release_ns, _ = installed
    shutil.copy(weights.folder / "slow.gguf", weights.folder / "slow-b.gguf")
    weights.rates["slow-b.gguf"] = weights.rates["slow.gguf"]
    apply_model("chat-b", {"source": weights.source("slow-b.gguf"), "servedName": "chat-b",
                           "storage": {"size": "1Gi"}})
    wait_phase("chat-b", {"Downloading"}, timeout=120)
    kubectl("delete", "pod", "-n", release_ns, "-l", "app.kubernetes.io/component=operator",
            "--grace-period=0", "--force")
    model, _ = wait_phase("chat-b", {"Ready", "Failed"})
    assert model["status"]["phase"] == "Ready", model["status"]
    selector = f"{MODEL_LABEL}=chat-b"
    assert len(kubectl_json("get", "pvc", "-n", MODELS_NS, "-l", selector)["items"]) == 1
    assert len(kubectl_json("get", "jobs", "-n", MODELS_NS, "-l", selector)["items"]) <= 1
    assert weights.gets("slow-b.gguf") <= 2  # at most one interrupted download, resumed or restarted


def test_a_wrong_sha256_is_said_in_a_sentence_and_no_server_starts(
    installed: tuple[str, str], weights: WeightsServer,
) -> None:
    apply_model("bad-sum", {"source": weights.source("embed.gguf", sha256="0" * 64), "storage": {"size": "1Gi"}})
    model, _ = wait_phase("bad-sum", {"Failed", "Ready"}, timeout=300)
    assert model["status"]["phase"] == "Failed", model["status"]
    conditions = {c["type"]: c for c in model["status"]["conditions"]}
    failed = [c for c in conditions.values() if c.get("reason") == "ChecksumMismatch"]
    assert failed, conditions
    assert "sha256" in failed[0]["message"], failed[0]["message"]
    assert model_pods("bad-sum") == []
    kubectl("delete", "lm", "bad-sum", "-n", MODELS_NS)


def test_deleting_a_localmodel_collects_its_children_and_the_router_drops_it(
    installed: tuple[str, str], models: dict[str, Any], weights: WeightsServer,
) -> None:
    release_ns, _ = installed
    apply_model("short-lived", {"source": weights.source("embed.gguf"), "servedName": "short-lived",
                                "storage": {"size": "1Gi"}})
    wait_phase("short-lived", {"Ready"})
    with port_forward(release_ns, f"{RELEASE}-router", 80) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
        assert "short-lived" in {m.id for m in client.models.list()}
        kubectl("delete", "lm", "short-lived", "-n", MODELS_NS, "--wait=true")
        wait_gone("deployments,services,jobs,pvc,pods", "-l", f"{MODEL_LABEL}=short-lived")
        deadline = time.monotonic() + 30
        while "short-lived" in {m.id for m in client.models.list()}:
            assert time.monotonic() < deadline, "the router still lists a deleted model"
            time.sleep(1)
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="short-lived", input="gone")
