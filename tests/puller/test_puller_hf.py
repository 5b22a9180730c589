"""Hugging Face sources through huggingface_hub against a fake Hub reached via HF_ENDPOINT."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from support.fake_hub import FakeHub
from support.http_faults import Faults
from support.puller_gguf import write_gguf

from localmodel_server.puller import PullError, Reason, RetryPolicy, parse_source, pull
from localmodel_server.puller.result import PullResult
from localmodel_server.puller.store import MODEL_FILE

FAST = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.05, stall_timeout=2, connect_timeout=2)
REPO = "acme/tiny-GGUF"


@pytest.fixture
def quants(tmp_path: Path) -> dict[str, Path]:
    return {
        "tiny-Q4_K_M.gguf": write_gguf(tmp_path / "q4.gguf", extra_bytes=1 << 20, seed=1),
        "tiny-Q8_0.gguf": write_gguf(tmp_path / "q8.gguf", extra_bytes=2 << 20, seed=2),
    }


def pull_hf(dest: Path, **hf: str) -> PullResult:
    return pull(parse_source({"hf": {"repo": REPO, **hf}}), dest, policy=FAST)


def expect(reason: Reason, dest: Path, **hf: str) -> PullError:
    with pytest.raises(PullError) as caught:
        pull_hf(dest, **hf)
    assert caught.value.reason is reason, caught.value
    assert not (dest / MODEL_FILE).exists()
    return caught.value


def test_quant_picks_the_file_and_the_lfs_sha256_is_verified(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path
) -> None:
    fake_hub.add_repo(REPO, quants)
    result = pull_hf(tmp_path / "models", quant="q8_0")
    expected = quants["tiny-Q8_0.gguf"]
    assert (tmp_path / "models" / MODEL_FILE).read_bytes() == expected.read_bytes()
    assert result.sha256 == hashlib.sha256(expected.read_bytes()).hexdigest()
    commit = fake_hub.repos[REPO].commit
    resolved = [path for method, path, _ in fake_hub.requests if method == "GET" and "/resolve/" in path]
    assert resolved == [f"/{REPO}/resolve/{commit}/tiny-Q8_0.gguf"]  # bytes fetched at the resolved commit


def test_the_token_reaches_the_hub_but_never_the_cdn(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_repo(REPO, quants, token="hf_private")
    expect(Reason.SOURCE_NOT_FOUND, tmp_path / "anonymous", file="tiny-Q4_K_M.gguf")  # private looks missing
    monkeypatch.setenv("HF_TOKEN", "hf_private")
    result = pull_hf(tmp_path / "models", file="tiny-Q4_K_M.gguf")
    assert result.size_bytes == quants["tiny-Q4_K_M.gguf"].stat().st_size
    assert {auth for _, _, auth in fake_hub.requests[-2:]} == {"Bearer hf_private"}
    cdn_requests = [r for served in fake_hub.cdn.files.values() for r in served.requests]
    assert cdn_requests and all("authorization" not in r for r in cdn_requests)


def test_a_wrong_token_is_unauthorized(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_hub.add_repo(REPO, quants, token="hf_right")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    expect(Reason.UNAUTHORIZED, tmp_path / "models", quant="Q8_0")


def test_a_gated_repo_is_unauthorized(fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, quants, gated=True)
    assert "gated" in expect(Reason.UNAUTHORIZED, tmp_path / "models", file="tiny-Q8_0.gguf").message


@pytest.mark.parametrize(
    ("hf", "words"),
    [
        ({"file": "tiny-Q2_K.gguf"}, "not found"),
        ({"quant": "Q2_K"}, "tiny-Q4_K_M.gguf, tiny-Q8_0.gguf"),
        ({"quant": "Q8_0", "revision": "v9"}, "revision 'v9'"),
    ],
)
def test_missing_things_are_source_not_found(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path, hf: dict[str, str], words: str
) -> None:
    fake_hub.add_repo(REPO, quants)
    assert words in expect(Reason.SOURCE_NOT_FOUND, tmp_path / "models", **hf).message


def test_missing_repo_is_source_not_found(fake_hub: FakeHub, tmp_path: Path) -> None:
    assert REPO in expect(Reason.SOURCE_NOT_FOUND, tmp_path / "models", quant="Q8_0").message


def test_cdn_bytes_that_do_not_match_the_lfs_sha256_are_rejected(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path
) -> None:
    fake_hub.add_repo(REPO, quants)
    impostor = write_gguf(tmp_path / "impostor.gguf", extra_bytes=2 << 20, seed=99)
    quants["tiny-Q8_0.gguf"].write_bytes(impostor.read_bytes())  # the CDN now serves other bytes
    error = expect(Reason.CHECKSUM_MISMATCH, tmp_path / "models", quant="Q8_0")
    assert fake_hub.repos[REPO].sha256["tiny-Q8_0.gguf"] in error.message


def test_a_spec_sha256_that_contradicts_the_hub_fails_before_downloading(
    fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path
) -> None:
    fake_hub.add_repo(REPO, quants)
    with pytest.raises(PullError) as caught:
        pull(parse_source({"hf": {"repo": REPO, "quant": "Q8_0"}, "sha256": "0" * 64}), tmp_path / "m", policy=FAST)
    assert caught.value.reason is Reason.CHECKSUM_MISMATCH
    assert all(not served.requests for served in fake_hub.cdn.files.values())


def test_a_dropped_cdn_connection_is_resumed(fake_hub: FakeHub, quants: dict[str, Path], tmp_path: Path) -> None:
    fake_hub.add_repo(REPO, quants)
    digest = fake_hub.repos[REPO].sha256["tiny-Q8_0.gguf"]
    served = fake_hub.cdn.files[f"/lfs/{digest}"]
    served.faults = Faults(drop_after=1 << 20)
    assert pull_hf(tmp_path / "models", quant="Q8_0").sha256 == digest
    assert served.bytes_served == quants["tiny-Q8_0.gguf"].stat().st_size
