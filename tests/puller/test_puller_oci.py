"""source.ollama and source.oci against a local OCI-distribution registry (tests/support/fake_registry.py)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from support.fake_registry import DOCKER_MANIFEST, FakeRegistry
from support.http_faults import Faults
from support.puller_gguf import write_gguf

from localmodel_server.puller import PullError, Reason, RetryPolicy, parse_source, probe, pull
from localmodel_server.puller.oci import DOCKER_GGUF, OLLAMA_MODEL, OLLAMA_PARAMS
from localmodel_server.puller.oci_names import OCI_REF, OLLAMA_NAME, parse_oci_ref, parse_ollama_name
from localmodel_server.puller.store import MARKER_FILE, MODEL_FILE, PARTIAL_FILE

FAST = RetryPolicy(attempts=3, backoff_initial=0.01, backoff_max=0.05, stall_timeout=0.5, connect_timeout=2)
ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"stop": ["<|im_end|>", "<|endoftext|>"], "temperature": 0.6, "num_predict": 5}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_gguf(tmp_path / "served.gguf", extra_bytes=3 << 20)


def ollama_source(registry: FakeRegistry, name: str) -> dict:
    return {"ollama": {"model": name, "registry": registry.base_url, "insecure": True}}


def push_ollama(registry: FakeRegistry, model: Path, repo: str = "library/tiny", tag: str = "1b", **kw):
    return registry.push(repo, tag, [(OLLAMA_MODEL, model), ("application/vnd.ollama.image.template", b"{{ .Prompt }}"),
                                     (OLLAMA_PARAMS, json.dumps(PARAMS).encode())], media_type=DOCKER_MANIFEST, **kw)


@pytest.mark.parametrize(("name", "host", "repository", "reference"), [
    ("llama3.2", "registry.ollama.ai", "library/llama3.2", "latest"),
    ("llama3.2:1b", "registry.ollama.ai", "library/llama3.2", "1b"),
    ("huihui_ai/qwen3:8b", "registry.ollama.ai", "huihui_ai/qwen3", "8b"),
    ("localhost:5000/team/m:q4_K_M", "localhost:5000", "team/m", "q4_K_M"),
    ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "hf.co", "bartowski/Llama-3.2-1B-Instruct-GGUF", "Q4_K_M"),
])
def test_ollama_names_resolve_as_ollama_does(name, host, repository, reference) -> None:
    ref = parse_ollama_name(name)
    assert (ref.host, ref.repository, ref.reference) == (host, repository, reference)
    assert ref.api_base == f"https://{host}"


@pytest.mark.parametrize(("ref", "base", "repository", "reference"), [
    ("ai/smollm2", "https://registry-1.docker.io", "ai/smollm2", "latest"),
    ("ubuntu", "https://registry-1.docker.io", "library/ubuntu", "latest"),
    ("ghcr.io/acme/models/qwen:0.5b", "https://ghcr.io", "acme/models/qwen", "0.5b"),
    ("127.0.0.1:5000/m/x@sha256:" + "a" * 64, "https://127.0.0.1:5000", "m/x", "sha256:" + "a" * 64),
])
def test_oci_references_resolve_as_docker_does(ref, base, repository, reference) -> None:
    parsed = parse_oci_ref(ref)
    assert (parsed.api_base, parsed.repository, parsed.reference) == (base, repository, reference)


def test_the_crd_checks_the_same_grammar() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "localmodel.dev_localmodels.yaml").read_text())
    source = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["source"]
    ollama_rule = source["properties"]["ollama"]["properties"]["model"]["x-kubernetes-validations"][0]["rule"]
    oci_rule = source["properties"]["oci"]["properties"]["ref"]["x-kubernetes-validations"][0]["rule"]
    assert ollama_rule == f"self.matches('{OLLAMA_NAME.pattern}')"
    assert oci_rule == f"self.matches('{OCI_REF.pattern}')"


def test_an_http_mirror_needs_insecure() -> None:
    with pytest.raises(ValueError, match="insecure: true"):
        parse_source({"ollama": {"model": "m", "registry": "http://127.0.0.1:5000"}})


def test_ollama_pull_installs_the_model_layer_and_its_params(fake_registry, model, tmp_path) -> None:
    push_ollama(fake_registry, model)
    source = parse_source(ollama_source(fake_registry, "tiny:1b"))
    assert probe(source, policy=FAST) == model.stat().st_size  # sized from the manifest
    result = pull(source, tmp_path / "dest", policy=FAST)
    assert result.outcome == "downloaded"
    installed = tmp_path / "dest" / MODEL_FILE
    assert installed.read_bytes() == model.read_bytes()
    assert result.sha256 == hashlib.sha256(model.read_bytes()).hexdigest()
    marker = json.loads((tmp_path / "dest" / MARKER_FILE).read_text())
    assert marker["defaults"] == PARAMS and marker["source"]["ollama"]["model"] == "tiny:1b"
    assert pull(source, tmp_path / "dest", policy=FAST).outcome == "present"


def test_unknown_tag_is_a_sentence(fake_registry, model, tmp_path) -> None:
    push_ollama(fake_registry, model)
    with pytest.raises(PullError) as caught:
        pull(parse_source(ollama_source(fake_registry, "tiny:9b")), tmp_path / "dest", policy=FAST)
    assert caught.value.reason is Reason.SOURCE_NOT_FOUND
    assert caught.value.message == f"model tiny:9b not found in {fake_registry.host}"


def test_blob_that_does_not_match_its_digest_is_checksum_mismatch(fake_registry, model, tmp_path) -> None:
    push_ollama(fake_registry, model, corrupt=OLLAMA_MODEL)
    with pytest.raises(PullError) as caught:
        pull(parse_source(ollama_source(fake_registry, "tiny:1b")), tmp_path / "dest", policy=FAST)
    assert caught.value.reason is Reason.CHECKSUM_MISMATCH
    assert not (tmp_path / "dest" / MODEL_FILE).exists() and not (tmp_path / "dest" / PARTIAL_FILE).exists()


def test_a_dropped_blob_transfer_resumes_with_range(fake_registry, model, tmp_path) -> None:
    pushed = push_ollama(fake_registry, model, faults={OLLAMA_MODEL: Faults(drop_after=1 << 20)})
    pull(parse_source(ollama_source(fake_registry, "tiny:1b")), tmp_path / "dest", policy=FAST)
    blob = pushed.blobs[OLLAMA_MODEL]
    assert [r.get("range") for r in blob.requests] == [None, f"bytes={1 << 20}-"]
    assert blob.bytes_served == model.stat().st_size  # nothing fetched twice


def docker_config(tmp_path: Path, host: str, user: str, password: str) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    directory = tmp_path / "docker"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return directory


def test_oci_artifact_behind_a_token_challenge(fake_registry, model, tmp_path, monkeypatch) -> None:
    fake_registry.push("acme/tiny", "v1", [(DOCKER_GGUF, model), ("application/vnd.docker.ai.license", b"MIT")])
    fake_registry.require_login("puller", "s3cret")
    source = parse_source({"oci": {"ref": f"{fake_registry.host}/acme/tiny:v1", "insecure": True}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "nowhere"))
    with pytest.raises(PullError) as caught:
        pull(source, tmp_path / "dest", policy=FAST)
    assert caught.value.reason is Reason.UNAUTHORIZED and "no credentials were given" in caught.value.message

    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path, fake_registry.host, "puller", "s3cret")))
    result = pull(source, tmp_path / "dest", policy=FAST)
    assert (tmp_path / "dest" / MODEL_FILE).read_bytes() == model.read_bytes() and result.outcome == "downloaded"
    scopes = [r["path"] for r in fake_registry.token_requests]
    assert scopes and all("scope=repository%3Aacme%2Ftiny%3Apull" in s for s in scopes)


def test_wrong_registry_credentials_are_unauthorized(fake_registry, model, tmp_path, monkeypatch) -> None:
    fake_registry.push("acme/tiny", "v1", [(DOCKER_GGUF, model)])
    fake_registry.require_login("puller", "s3cret")
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path, fake_registry.host, "puller", "wrong")))
    with pytest.raises(PullError) as caught:
        pull(parse_source({"oci": {"ref": f"{fake_registry.host}/acme/tiny:v1", "insecure": True}}),
             tmp_path / "dest", policy=FAST)
    assert caught.value.reason is Reason.UNAUTHORIZED and "refused the credentials" in caught.value.message


def test_an_artifact_without_a_gguf_layer_is_invalid(fake_registry, tmp_path) -> None:
    fake_registry.push("acme/image", "v1", [("application/vnd.oci.image.layer.v1.tar+gzip", b"tar")])
    with pytest.raises(PullError) as caught:
        pull(parse_source({"oci": {"ref": f"{fake_registry.host}/acme/image:v1", "insecure": True}}),
             tmp_path / "dest", policy=FAST)
    assert caught.value.reason is Reason.INVALID_MODEL and "no GGUF model layer" in caught.value.message
