"""GGUF header reading on real files written by the gguf package."""

from __future__ import annotations

from pathlib import Path

import pytest
from gguf import LlamaFileType
from support.puller_gguf import element_count, write_gguf

from localmodel_server.puller.errors import PullError, Reason
from localmodel_server.puller.gguf_info import read_gguf_info


def test_metadata_of_a_q8_model(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", arch="qwen2", context_length=32768, extra_bytes=1 << 16)
    info = read_gguf_info(path)
    assert info.architecture == "qwen2"
    assert info.parameters == element_count(1 << 16)
    assert info.quantization == "Q8_0"
    assert info.context_length == 32768
    assert info.size_bytes == path.stat().st_size
    assert info.to_status() == {
        "architecture": "qwen2",
        "parameters": element_count(1 << 16),
        "quantization": "Q8_0",
        "contextLength": 32768,
        "sizeBytes": path.stat().st_size,
    }


@pytest.mark.parametrize(("file_type", "name"), [(LlamaFileType.MOSTLY_F16, "F16"), (LlamaFileType.ALL_F32, "F32")])
def test_file_type_names_follow_llama_cpp(tmp_path: Path, file_type: LlamaFileType, name: str) -> None:
    assert read_gguf_info(write_gguf(tmp_path / "m.gguf", file_type=file_type)).quantization == name


def test_without_file_type_the_type_holding_most_bytes_wins(tmp_path: Path) -> None:
    info = read_gguf_info(write_gguf(tmp_path / "m.gguf", file_type=None, context_length=None, extra_bytes=1 << 16))
    assert info.quantization == "F16"  # the padding tensor outweighs the Q8_0 matrix
    assert info.context_length is None
    assert "contextLength" not in info.to_status()


def test_a_truncated_file_is_not_a_model(tmp_path: Path) -> None:
    path = write_gguf(tmp_path / "m.gguf", extra_bytes=1 << 16)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 1000)
    with pytest.raises(PullError) as caught:
        read_gguf_info(path)
    assert caught.value.reason is Reason.INVALID_MODEL


@pytest.mark.parametrize("content", [b"<html>Not Found</html>", b"GGUF\x03\x00\x00\x00garbage"])
def test_other_bytes_are_not_a_model(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(content)
    with pytest.raises(PullError) as caught:
        read_gguf_info(path)
    assert caught.value.reason is Reason.INVALID_MODEL
