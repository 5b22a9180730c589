"""The apiserver itself refuses invalid LocalModels, with messages a person can act on."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from .conftest import GROUP, PLURAL, ROOT, SHA, VERSION, local_model

HF = {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M"}}
GOOD = {"source": HF, "servedName": "qwen", "aliases": ["llama3"]}


def with_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(GOOD)
    spec.update(changes)
    return spec


def create(models: CustomObjectsApi, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
    return models.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def rejection(models: CustomObjectsApi, namespace: str, body: dict[str, Any]) -> str:
    with pytest.raises(ApiException) as caught:
        create(models, namespace, body)
    assert caught.value.status == 422, caught.value.body
    return json.loads(caught.value.body)["message"]


INVALID = [
    ("no source", local_model("m", {"servedName": "x"}), "spec.source: Required value"),
    ("empty source", local_model("m", with_spec(source={})), "exactly one of hf, url, s3, pvc, ollama or oci"),
    ("two sources", local_model("m", with_spec(source={**HF, "url": "https://h/x.gguf"})),
     "exactly one of hf, url, s3, pvc, ollama or oci"),
    ("ftp url", local_model("m", with_spec(source={"url": "ftp://example.com/m.gguf"})), "must start with https://"),
    ("http url without sha256", local_model("m", with_spec(source={"url": "http://mirror.local/m.gguf"})),
     "plain http:// url needs source.sha256"),
    ("http url with a secret", local_model("m", with_spec(
        source={"url": "http://mirror.local/m.gguf", "sha256": SHA, "secretRef": {"name": "tok"}})),
     "no credential crosses the network in clear text"),
    ("credentials in url", local_model("m", with_spec(source={"url": "https://user:pw@h.example/m.gguf"})),
     "no spaces and no user:password@"),
    ("file with ..", local_model("m", with_spec(source={"hf": {"repo": "a/b", "file": "../etc.gguf"}})),
     "plain file name: no '/' and no '..'"),
    ("file with /", local_model("m", with_spec(source={"hf": {"repo": "a/b", "file": "sub/x.gguf"}})),
     "plain file name: no '/' and no '..'"),
    ("file and quant", local_model("m", with_spec(source={"hf": {"repo": "a/b", "file": "x.gguf", "quant": "Q8_0"}})),
     "exactly one of file or quant"),
    ("hf without file or quant", local_model("m", with_spec(source={"hf": {"repo": "a/b"}})),
     "exactly one of file or quant"),
    ("bad repo", local_model("m", with_spec(source={"hf": {"repo": "just-a-name", "quant": "Q4_0"}})),
     "must be <owner>/<name>"),
    ("negative replicas", local_model("m", with_spec(replicas=-1)), "spec.replicas: Invalid value: -1"),
    ("negative gpu count", local_model("m", with_spec(gpu={"count": -1})), "spec.gpu.count: Invalid value: -1"),
    ("short sha256", local_model("m", with_spec(source={**HF, "sha256": "abc123"})), "64 lowercase hex"),
    ("non-hex sha256", local_model("m", with_spec(source={**HF, "sha256": "z" * 64})), "64 lowercase hex"),
    ("absolute pvc path", local_model("m", with_spec(source={"pvc": {"claimName": "c", "path": "/etc/x.gguf"}})),
     "relative path inside the claim"),
    ("pvc path escaping", local_model("m", with_spec(source={"pvc": {"claimName": "c", "path": "a/../../x.gguf"}})),
     "relative path inside the claim"),
    ("pvc with secret", local_model("m", with_spec(source={"pvc": {"claimName": "c", "path": "x.gguf"},
                                                              "secretRef": {"name": "s"}})),
     "a pvc source needs no credentials"),
    ("s3 bucket", local_model("m", with_spec(source={"s3": {"bucket": "Bad_Bucket", "key": "k"}})),
     "valid bucket name"),
    ("name too long", local_model("m" * 47, GOOD), "at most 46 characters"),
    ("name with a dot", local_model("my.model", GOOD), "lowercase letters, digits and '-'"),
    ("served name with space", local_model("m", with_spec(servedName="my model")), "servedName must start"),
    ("alias repeats served name", local_model("m", with_spec(aliases=["qwen"])), "must not repeat the served name"),
    ("alias repeats metadata.name", local_model("qwen", {"source": HF, "aliases": ["qwen"]}),
     "must not repeat the served name"),
    ("duplicate aliases", local_model("m", with_spec(aliases=["a", "a"])), "Duplicate value"),
    ("context too small", local_model("m", with_spec(contextSize=16)), "spec.contextSize: Invalid value: 16"),
    ("zero parallel", local_model("m", with_spec(parallel=0)), "spec.parallel: Invalid value: 0"),
    ("gpu layers below -1", local_model("m", with_spec(gpuLayers=-2)), "spec.gpuLayers: Invalid value: -2"),
    ("owned flag in args", local_model("m", with_spec(args=["--port=9000"])), "use the spec fields instead"),
    ("ollama name with two colons", local_model("m", with_spec(source={"ollama": {"model": "llama3.2:1b:x"}})),
     "must be an Ollama model name"),
    ("ollama name with four segments", local_model("m", with_spec(source={"ollama": {"model": "a/b/c/d"}})),
     "must be an Ollama model name"),
    ("ollama http mirror without insecure", local_model("m", with_spec(
        source={"ollama": {"model": "llama3.2", "registry": "http://mirror.local:5000"}})),
     "plain http:// only with insecure: true"),
    ("ollama mirror with a path", local_model("m", with_spec(
        source={"ollama": {"model": "llama3.2", "registry": "https://mirror.local/v2"}})),
     "http(s)://host[:port] with no path"),
    ("oci uppercase repository", local_model("m", with_spec(source={"oci": {"ref": "ghcr.io/Acme/Model:1"}})),
     "must be an OCI reference"),
    ("oci short digest", local_model("m", with_spec(source={"oci": {"ref": "ai/smollm2@sha256:abc"}})),
     "must be an OCI reference"),
    ("ollama and oci", local_model("m", with_spec(source={"ollama": {"model": "m"}, "oci": {"ref": "ai/m"}})),
     "exactly one of hf, url, s3, pvc, ollama or oci"),
    ("unknown access mode", local_model("m", with_spec(storage={"accessModes": ["Everywhere"]})), "Unsupported value"),
]


@pytest.mark.parametrize(("case", "body", "message"), INVALID, ids=[case for case, _, _ in INVALID])
def test_invalid_spec_is_rejected_with_a_readable_message(
    models: CustomObjectsApi, namespace: str, case: str, body: dict[str, Any], message: str
) -> None:
    assert message in rejection(models, namespace, body)


VALID = {
    "hf quant": {"source": {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M"}}},
    "hf file at a commit": {"source": {"hf": {"repo": "a/b", "file": "b-q8_0.gguf", "revision": "0123abc"}}},
    "https url with sha and token": {"source": {"url": "https://h.example:8443/m/x.gguf?download=1",
                                                "sha256": SHA, "secretRef": {"name": "token"}}},
    "http url with sha": {"source": {"url": "http://127.0.0.1:8080/x.gguf", "sha256": SHA}},
    "s3 on minio": {"source": {"s3": {"bucket": "models", "key": "llama/x.gguf", "endpoint": "http://minio:9000",
                                      "region": "us-east-1"}, "secretRef": {"name": "s3"}}},
    "pvc": {"source": {"pvc": {"claimName": "shared-models", "path": "llama3/model.gguf"}}},
    "ollama library name": {"source": {"ollama": {"model": "llama3.2:1b", "insecure": False}}},
    "ollama host/namespace/name on an http mirror": {"source": {"ollama": {
        "model": "registry.example:5000/team/qwen2.5:0.5b-instruct-q4_K_M", "registry": "http://10.0.0.7:5000",
        "insecure": True}}},
    "oci on docker hub": {"source": {"oci": {"ref": "ai/smollm2:360M-Q4_K_M", "insecure": False}}},
    "oci by digest with a pull secret": {"source": {"oci": {
        "ref": "ghcr.io/acme/models/qwen@sha256:" + "a" * 64, "insecure": False}, "secretRef": {"name": "regcred"}}},
    "everything": {
        "source": HF, "servedName": "qwen2.5:0.5b", "aliases": ["llama3", "gpt-4o-mini"], "contextSize": 2048,
        "parallel": 8, "gpuLayers": 20, "resources": {"requests": {"cpu": "2", "memory": "4Gi"}, "limits": {"cpu": 4}},
        "gpu": {"count": 1}, "nodeSelector": {"gpu": "a100"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {}}, "runtimeClassName": "nvidia", "priorityClassName": "high",
        "replicas": 0, "image": "registry.example/localmodel:dev", "args": ["--queue-size=128"],
        "env": [{"name": "LOG_LEVEL", "value": "debug"}],
        "storage": {"size": "10Gi", "storageClassName": "fast", "accessModes": ["ReadWriteMany"], "retainOnDelete": True},
    },
}


@pytest.mark.parametrize("spec", VALID.values(), ids=list(VALID))
def test_valid_spec_is_accepted(models: CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> None:
    created = create(models, namespace, local_model("ok", spec))
    assert created["spec"]["source"] == {**spec["source"], **(
        {"hf": {"revision": "main", **spec["source"]["hf"]}} if "hf" in spec["source"] else {})}


def test_defaults_are_filled_in(models: CustomObjectsApi, namespace: str) -> None:
    created = create(models, namespace, local_model("defaults", {"source": HF, "gpu": {}}))
    spec = created["spec"]
    assert spec["replicas"] == 1
    assert spec["parallel"] == 4
    assert spec["gpu"] == {"count": 1}
    assert spec["storage"] == {"accessModes": ["ReadWriteOnce"], "retainOnDelete": False}
    assert spec["source"]["hf"]["revision"] == "main"


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("llama3-*.yaml")), ids=lambda p: p.name)
def test_examples_are_accepted(models: CustomObjectsApi, namespace: str, path: Path) -> None:
    body = yaml.safe_load(path.read_text())
    created = create(models, namespace, body)
    spec = created["spec"]
    assert "llama3" in [spec.get("servedName", created["metadata"]["name"]), *spec.get("aliases", [])]


def test_examples_exist() -> None:
    assert {p.name for p in (ROOT / "examples").glob("llama3-*.yaml")} == {"llama3-cpu.yaml", "llama3-gpu.yaml"}
