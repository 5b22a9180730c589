"""Generated GGUF models (random weights, real tokenizers) for tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from localmodel_server import testmodels


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def chat_model(model_dir: Path) -> Path:
    """A 2-layer llama-architecture chat model with a ChatML template (~9 MB)."""
    return testmodels.write_llama(model_dir / "tiny-chat.gguf")


@pytest.fixture(scope="session")
def embed_model(model_dir: Path) -> Path:
    """A 2-layer BERT embedding model with mean pooling (~5 MB)."""
    return testmodels.write_bert(model_dir / "tiny-embed.gguf")
