"""What the e2e tier does to a real cluster: kubectl and helm, a weights server on
this machine, LocalModels, and clients that run inside the cluster.

The cluster is the one in KUBECONFIG (hack/localcluster/e2e.sh brings up the
local one, hack/kind/e2e.sh a kind cluster). Pods reach this machine at
LOCALMODEL_E2E_HOST: the node's bridge address on the local cluster, the gateway
of Docker's `kind` network on kind.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from localmodel_server.contract import API_GROUP, PLURAL, VERSION

RELEASE = "localmodel"
RELEASE_NS, MODELS_NS = "localmodel-e2e", "models-e2e"
READY_TIMEOUT_S = 600


def kubectl(*args: str, stdin: str | None = None, check: bool = True) -> str:
    if not shutil.which("kubectl"):
        pytest.fail("kubectl is not on PATH", pytrace=False)
    proc = subprocess.run(["kubectl", *args], input=stdin, capture_output=True, text=True, check=False)
    if check:
        assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
    return proc.stdout


def kubectl_json(*args: str) -> dict[str, Any]:
    return json.loads(kubectl(*args, "-o", "json"))


def image(variable: str, default: str) -> tuple[str, str]:
    repository, _, tag = os.environ.get(variable, default).rpartition(":")
    return repository, tag


def pods_host() -> str:
    """This machine's address as pods see it."""
    if host := os.environ.get("LOCALMODEL_E2E_HOST"):
        return host
    try:
        out = subprocess.run(["docker", "network", "inspect", "kind", "--format", "{{json .IPAM.Config}}"],
                             capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.fail(f"set LOCALMODEL_E2E_HOST to this machine's address as pods see it ({exc})", pytrace=False)
    gateways = [c["Gateway"] for c in json.loads(out) if ":" not in c.get("Gateway", ":")]
    if not gateways:
        pytest.fail("Docker's kind network has no IPv4 gateway; set LOCALMODEL_E2E_HOST", pytrace=False)
    return gateways[0]


# --- the weights server --------------------------------------------------------------


@dataclass
class WeightsServer:
    """Serves generated GGUFs to the cluster and remembers every request it got."""

    folder: Path
    host: str
    port: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)
    # file name -> bytes per second, to make a pull last long enough to watch or interrupt.
    rates: dict[str, int] = field(default_factory=dict)

    def source(self, name: str, *, sha256: str | None = None) -> dict[str, str]:
        path = self.folder / name
        digest = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
        return {"url": f"http://{self.host}:{self.port}/{name}", "sha256": digest}

    def gets(self, name: str) -> int:
        return sum(1 for method, path in self.requests if method == "GET" and path == f"/{name}")


def _handler(weights: WeightsServer) -> type[http.server.SimpleHTTPRequestHandler]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
            weights.requests.append((self.command, self.path))

        def copyfile(self, source: Any, outputfile: Any) -> None:
            rate = weights.rates.get(self.path.lstrip("/"))
            if rate is None:
                return super().copyfile(source, outputfile)
            chunk = max(1, rate // 10)
            while data := source.read(chunk):
                outputfile.write(data)
                time.sleep(0.1)

    return functools.partial(Handler, directory=str(weights.folder))  # type: ignore[return-value]


@contextlib.contextmanager
def serving_weights(folder: Path) -> Iterator[WeightsServer]:
    weights = WeightsServer(folder, pods_host())
    handler = _handler(weights)
    try:
        server = http.server.ThreadingHTTPServer((weights.host, 0), handler)
    except OSError:  # not an address of this machine (Docker Desktop): listen on all of them
        server = http.server.ThreadingHTTPServer(("0.0.0.0", 0), handler)
    weights.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield weights
    finally:
        server.shutdown()
        server.server_close()


# --- LocalModels -------------------------------------------------------------------


def install_chart(*sets: str) -> None:
    """`helm upgrade --install` of the chart with the images loaded into the node, watching MODELS_NS.

    `sets` are further `--set` values (key=value). Idempotent, so a kept cluster runs again.
    """
    from tests.helm.chart import CHART, run_helm

    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace",
                                                  "metadata": {"name": MODELS_NS}}))
    server_repo, server_tag = image("LOCALMODEL_E2E_SERVER_IMAGE", "localmodel:e2e")
    operator_repo, operator_tag = image("LOCALMODEL_E2E_OPERATOR_IMAGE", "localmodel-operator:e2e")
    values = [f"images.server.repository={server_repo}", f"images.server.tag={server_tag}",
              f"images.operator.repository={operator_repo}", f"images.operator.tag={operator_tag}",
              "images.pullPolicy=Never",  # loaded into the node, never pulled
              f"watchNamespaces={{{MODELS_NS}}}", "router.replicas=1", *sets]
    run_helm("upgrade", "--install", RELEASE, str(CHART), "--namespace", RELEASE_NS, "--create-namespace",
             "--wait", "--timeout", "5m", *(arg for value in values for arg in ("--set", value)))


def uninstall_chart() -> None:
    """Delete the LocalModels (so their children go first), the release and both namespaces."""
    from tests.helm.chart import run_helm

    with contextlib.suppress(Exception):
        kubectl("delete", "localmodels.localmodel.dev", "--all", "-n", MODELS_NS, "--wait=true", "--timeout=120s")
    with contextlib.suppress(Exception):
        run_helm("uninstall", RELEASE, "--namespace", RELEASE_NS, "--wait")
    kubectl("delete", "namespace", MODELS_NS, RELEASE_NS, "--ignore-not-found", check=False)


def apply_model(name: str, spec: dict[str, Any], namespace: str = MODELS_NS) -> None:
    manifest = {"apiVersion": f"{API_GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": name},
                "spec": spec}
    kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def get_model(name: str, namespace: str = MODELS_NS) -> dict[str, Any]:
    return kubectl_json("get", f"{PLURAL}.{API_GROUP}", name, "-n", namespace)


def wait_phase(name: str, phases: set[str], namespace: str = MODELS_NS,
               timeout: float = READY_TIMEOUT_S) -> tuple[dict[str, Any], list[str]]:
    """Waits for one of `phases`; returns the LocalModel and every PROGRESS value seen on the way."""
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    model: dict[str, Any] = {}
    while time.monotonic() < deadline:
        model = get_model(name, namespace)
        status = model.get("status", {})
        if (progress := status.get("progress")) and progress not in seen:
            seen.append(progress)
        if status.get("phase") in phases:
            return model, seen
        time.sleep(1)
    details = kubectl("describe", f"{PLURAL}.{API_GROUP}", name, "-n", namespace, check=False)
    raise AssertionError(f"LocalModel {namespace}/{name} never reached {phases}:\n{details}")


def wait_gone(*resources: str, namespace: str = MODELS_NS, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not kubectl("get", *resources, "-n", namespace, "--ignore-not-found", "-o", "name").strip():
            return
        time.sleep(1)
    raise AssertionError(f"still there after {timeout:.0f} s: {resources}")


def model_pods(name: str, namespace: str = MODELS_NS) -> list[dict[str, Any]]:
    from localmodel_server.contract import MODEL_LABEL

    pods = kubectl_json("get", "pods", "-n", namespace, "-l", f"{MODEL_LABEL}={name}")["items"]
    return [p for p in pods if not p["metadata"].get("labels", {}).get("job-name")]


# --- clients inside the cluster ----------------------------------------------------


def run_in_cluster(name: str, script: str, *, namespace: str = MODELS_NS, timeout: float = 300) -> str:
    """Runs `script` with python3 in a pod of the server image; returns its output."""
    repository, tag = image("LOCALMODEL_E2E_SERVER_IMAGE", "localmodel:e2e")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "client", "image": f"{repository}:{tag}", "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                    "capabilities": {"drop": ["ALL"]}},
            }],
        },
    }
    kubectl("delete", "pod", name, "-n", namespace, "--ignore-not-found", "--wait=true")
    kubectl("apply", "-f", "-", stdin=json.dumps(pod))
    deadline = time.monotonic() + timeout
    phase = ""
    while time.monotonic() < deadline:
        phase = kubectl_json("get", "pod", name, "-n", namespace).get("status", {}).get("phase", "")
        if phase in ("Succeeded", "Failed"):
            break
        time.sleep(1)
    logs = kubectl("logs", name, "-n", namespace, check=False)
    assert phase == "Succeeded", f"client pod {name} ended {phase or 'never'}:\n{logs}"
    kubectl("delete", "pod", name, "-n", namespace, "--wait=false")
    return logs


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
