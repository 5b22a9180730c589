"""Fixtures of the e2e tier: the chart installed, weights served from this machine,
and the chat and embedding models Ready. Skipped unless LOCALMODEL_E2E=1."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from e2e.cluster import (
    MODELS_NS, RELEASE_NS, WeightsServer, apply_model, install_chart, serving_weights, uninstall_chart, wait_phase,
)
from localmodel_server import testmodels


# The faults delete pods and the operator, so they run after what watches a steady cluster.
ORDER = ("test_serving.py", "test_security.py", "test_registries.py", "test_scaling.py", "test_faults.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items: reorder only this folder's, in place.
    here = Path(__file__).parent
    slots = [i for i, item in enumerate(items) if item.path.parent == here]
    ours = sorted((items[i] for i in slots), key=lambda item: ORDER.index(item.path.name)
                  if item.path.name in ORDER else len(ORDER))  # stable: the order within a file stays
    for slot, item in zip(slots, ours):
        items[slot] = item
    if os.environ.get("LOCALMODEL_E2E") == "1":
        return
    skip = pytest.mark.skip(reason="end-to-end tier: needs a cluster with the images loaded; run "
                                   "hack/localcluster/e2e.sh or hack/kind/e2e.sh (or set LOCALMODEL_E2E=1 "
                                   "with KUBECONFIG pointing at such a cluster)")
    for item in items:
        if "e2e" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WeightsServer]:
    """chat.gguf, embed.gguf, slow.gguf (the chat model, served slowly) and long.gguf over HTTP to the pods."""
    folder = tmp_path_factory.mktemp("weights")
    chat = testmodels.write_llama(folder / "chat.gguf")
    testmodels.write_bert(folder / "embed.gguf")
    shutil.copy(chat, folder / "slow.gguf")
    # Slow enough to decode (about 150 tokens/s on 2 cores) that a stream outlasts a pod's deletion.
    testmodels.write_llama(folder / "long.gguf", testmodels.LlamaShape(n_embd=512, n_layer=8, n_head=8,
                                                                       n_head_kv=8, n_ff=1024), name="long-chat")
    with serving_weights(folder) as server:
        # About 20 s for the whole file: long enough to watch PROGRESS move, or to interrupt.
        server.rates["slow.gguf"] = max(1, chat.stat().st_size // 20)
        yield server


@pytest.fixture(scope="session")
def installed() -> Iterator[tuple[str, str]]:
    """The chart installed with the local images, watching a namespace of its own: (release ns, models ns)."""
    try:
        install_chart("networkPolicy.enabled=true", "models.storageSize=1Gi")
        yield RELEASE_NS, MODELS_NS
    finally:
        uninstall_chart()


@pytest.fixture(scope="session")
def models(installed: tuple[str, str], weights: WeightsServer) -> dict[str, Any]:
    """A chat model (served as llama3, pulled slowly so its PROGRESS can be watched) and an embedding model."""
    apply_model("tiny-chat", {"source": weights.source("slow.gguf"), "servedName": "llama3", "contextSize": 2048,
                              "storage": {"size": "1Gi"}})
    apply_model("tiny-embed", {"source": weights.source("embed.gguf"), "servedName": "tiny-embed",
                               "storage": {"size": "1Gi"}})
    chat, progress = wait_phase("tiny-chat", {"Ready", "Failed"})
    embed, _ = wait_phase("tiny-embed", {"Ready", "Failed"})
    return {"chat": chat, "embed": embed, "chat_progress": progress}
