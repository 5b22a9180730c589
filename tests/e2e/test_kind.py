"""End to end on a real cluster (kind): helm install, LocalModels pulled from this machine, OpenAI calls.

Runs only with LOCALMODEL_E2E=1, against the cluster in KUBECONFIG, which must
already hold the images (hack/kind/e2e.sh builds and loads them, then runs
this module). The weights are generated here and served over HTTP from this
machine, so nothing inside the cluster needs the internet: pods reach this
machine at LOCALMODEL_E2E_HOST, by default the gateway of Docker's `kind`
network.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from support.seed import SEED_REQUEST as CHAT_REQUEST

from localmodel_server import testmodels
from tests.helm.chart import CHART, run_helm

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        os.environ.get("LOCALMODEL_E2E") != "1",
        reason="end-to-end tier: needs a kind cluster with the images loaded; run hack/kind/e2e.sh "
               "(or set LOCALMODEL_E2E=1 with KUBECONFIG pointing at such a cluster)",
    ),
    pytest.mark.timeout(1200),
]

GROUP, VERSION, PLURAL = "localmodel.dev", "v1alpha1", "localmodels"
RELEASE = "localmodel"
READY_TIMEOUT_S = 900
def image(variable: str, default: str) -> tuple[str, str]:
    repository, _, tag = os.environ.get(variable, default).rpartition(":")
    return repository, tag


def kubectl(*args: str) -> str:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is not on PATH; the e2e tier port-forwards the router with it", pytrace=False)
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def kind_gateway() -> str:
    """The address of this machine on Docker's `kind` network, as pods see it."""
    try:
        out = subprocess.run(["docker", "network", "inspect", "kind", "--format", "{{json .IPAM.Config}}"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"set LOCALMODEL_E2E_HOST to this machine's address as pods see it "
                    f"(docker network inspect kind failed: {exc})", pytrace=False)
    gateways = [c["Gateway"] for c in json.loads(out) if ":" not in c.get("Gateway", ":")]
    if not gateways:
        pytest.fail("Docker's kind network has no IPv4 gateway; set LOCALMODEL_E2E_HOST", pytrace=False)
    return gateways[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Generated chat and embedding GGUFs, served over HTTP to the cluster: {name: url source}."""
    folder = tmp_path_factory.mktemp("weights")
    files = {"chat": testmodels.write_llama(folder / "chat.gguf"), "embed": testmodels.write_bert(folder / "embed.gguf")}
    host = os.environ.get("LOCALMODEL_E2E_HOST") or kind_gateway()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    try:
        server = http.server.ThreadingHTTPServer((host, 0), handler)
    except OSError:  # not an address of this machine (Docker Desktop): listen on all of them
        server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield {name: {"url": f"http://{host}:{port}/{path.name}",
                      "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
               for name, path in files.items()}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def installed() -> Iterator[tuple[str, str]]:
    """The chart installed into a fresh namespace, serving a second fresh namespace: (release ns, models ns)."""
    # Fixed names: the CRD outlives uninstall (helm.sh/resource-policy: keep) and records its release, which a
    # later run must match to adopt it.
    release_ns, models_ns = "localmodel-e2e", "models-e2e"
    kubectl("create", "namespace", models_ns)
    server_repo, server_tag = image("LOCALMODEL_E2E_SERVER_IMAGE", "localmodel:e2e")
    operator_repo, operator_tag = image("LOCALMODEL_E2E_OPERATOR_IMAGE", "localmodel-operator:e2e")
    try:
        run_helm("install", RELEASE, str(CHART), "--namespace", release_ns, "--create-namespace",
                 "--wait", "--timeout", "5m",
                 "--set", f"images.server.repository={server_repo}", "--set", f"images.server.tag={server_tag}",
                 "--set", f"images.operator.repository={operator_repo}", "--set", f"images.operator.tag={operator_tag}",
                 "--set", "images.pullPolicy=Never",  # loaded into kind, never pulled
                 "--set", f"watchNamespaces={{{models_ns}}}", "--set", "networkPolicy.enabled=true",
                 "--set", "router.replicas=1", "--set", "models.storageSize=1Gi")
        yield release_ns, models_ns
    finally:
        with contextlib.suppress(Exception):
            run_helm("uninstall", RELEASE, "--namespace", release_ns, "--wait")
        kubectl("delete", "namespace", models_ns, release_ns, "--ignore-not-found")


def apply_model(namespace: str, name: str, spec: dict[str, Any]) -> None:
    manifest = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": name}, "spec": spec}
    subprocess.run(["kubectl", "apply", "-n", namespace, "-f", "-"], input=json.dumps(manifest), text=True,
                   check=True, capture_output=True)


def wait_ready(namespace: str, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + READY_TIMEOUT_S
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = json.loads(kubectl("get", f"{PLURAL}.{GROUP}", name, "-n", namespace, "-o", "json"))
        if model.get("status", {}).get("phase") == "Ready":
            return model
        if model.get("status", {}).get("phase") == "Failed":
            break
        time.sleep(3)
    details = kubectl("describe", f"{PLURAL}.{GROUP}", name, "-n", namespace)
    raise AssertionError(f"LocalModel {namespace}/{name} not Ready:\n{details}")


@contextlib.contextmanager
def port_forward(namespace: str, service: str, remote_port: int) -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
    proc = subprocess.Popen(["kubectl", "port-forward", "-n", namespace, f"svc/{service}",
                             f"{local_port}:{remote_port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local_port), timeout=1):
                break
            assert proc.poll() is None and time.monotonic() < deadline, "kubectl port-forward did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{local_port}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_chat_and_embeddings_through_the_router(installed: tuple[str, str], weights: dict[str, Any]) -> None:
    release_ns, models_ns = installed
    apply_model(models_ns, "tiny-chat", {"source": weights["chat"], "servedName": "llama3", "contextSize": 2048,
                                         "storage": {"size": "1Gi"}})
    apply_model(models_ns, "tiny-embed", {"source": weights["embed"], "servedName": "tiny-embed",
                                          "storage": {"size": "1Gi"}})
    chat = wait_ready(models_ns, "tiny-chat")
    wait_ready(models_ns, "tiny-embed")
    assert chat["status"]["endpoint"] == f"http://{RELEASE}-router.{release_ns}.svc/v1"

    with port_forward(release_ns, f"{RELEASE}-router", 80) as base_url, httpx.Client(base_url=base_url,
                                                                                     timeout=120) as client:
        models = client.get("/v1/models").json()
        assert {"llama3", "tiny-embed"} <= {model["id"] for model in models["data"]}

        response = client.post("/v1/chat/completions", json=CHAT_REQUEST)
        assert response.status_code == 200, response.text
        completion = response.json()
        assert completion["model"] == "llama3"
        assert isinstance(completion["choices"][0]["message"]["content"], str)
        assert completion["usage"]["completion_tokens"] > 0

        response = client.post("/v1/embeddings", json={"model": "tiny-embed", "input": ["hello world", "bonjour"]})
        assert response.status_code == 200, response.text
        vectors = [item["embedding"] for item in response.json()["data"]]
        assert len(vectors) == 2 and len(vectors[0]) == 64 and vectors[0] != vectors[1]
