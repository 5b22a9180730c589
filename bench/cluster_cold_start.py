"""Cold start in a cluster: request to first token for a LocalModel at 0 replicas, split
into its steps, next to the warm time to first token of the same model.

    hack/localcluster/e2e.sh up        # the one-node local cluster, images loaded
    .venv/bin/python bench/cluster_cold_start.py [--runs 5]
    hack/localcluster/e2e.sh down

The model is the 0.5B Q5_0 bench model of bench/server_throughput.py, served from
this machine into the LocalModel's claim once. Each cold run scales the LocalModel
to 0 through /scale (as an HPA would), waits until its pod is gone and the router
has dropped the endpoint, then streams one chat request through the router (a
port-forward to its Service): the router holds it, writes /scale, and answers
once a pod is Ready. A watch on the model's pods, timed on this machine's clock,
splits the wait:
- wake: request sent until the pod exists (router → /scale → operator → Deployment);
- pod start: pod exists until its container runs (scheduling, sandbox, container);
- model load: container runs until the pod is Ready (interpreter, imports, llama.cpp
  load, the readiness probe's period);
- first token: Ready until the first token reaches the client (EndpointSlice to the
  router, prefill, first decode).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from cold_start import bare_load, first_token  # noqa: E402
from e2e import cluster as e2e  # noqa: E402
from localcluster import CLUSTER, tools_path  # noqa: E402
from server_throughput import bench_model  # noqa: E402

NAME = "coldstart"
# The model's server pods (its pull Job's pods carry the model label too).
SERVER_PODS = f"localmodel.dev/model={NAME},app.kubernetes.io/name=localmodel-server"
STEPS = ("wake", "pod start", "model load", "first token")


class PodTimeline:
    """When this process first saw the model's pod exist, run and turn Ready (a watch in a thread)."""

    def __init__(self) -> None:
        from kubernetes import client, config, watch

        config.load_kube_config()
        self._api = client.CoreV1Api()
        self._watch = watch.Watch()
        self.seen: dict[str, float] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def reset(self) -> None:
        self.seen = {}

    def _run(self) -> None:
        for event in self._watch.stream(self._api.list_namespaced_pod, e2e.MODELS_NS,
                                        label_selector=SERVER_PODS):
            pod = event["object"]
            now = time.perf_counter()
            if event["type"] == "DELETED" or pod.metadata.deletion_timestamp:
                continue
            self.seen.setdefault("exists", now)
            statuses = pod.status.container_statuses or []
            if any(s.name == "server" and s.state and s.state.running for s in statuses):
                self.seen.setdefault("running", now)
            if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
                self.seen.setdefault("ready", now)


def pods() -> list[str]:
    return e2e.kubectl("get", "pods", "-n", e2e.MODELS_NS, "-l", SERVER_PODS,
                       "-o", "name").split()


def scale_to_zero(router_url: str) -> None:
    import httpx

    e2e.kubectl("scale", f"localmodels.localmodel.dev/{NAME}", "-n", e2e.MODELS_NS, "--replicas=0")
    deadline = time.monotonic() + 180
    while (left := pods()) or _listed_ready(httpx.get(f"{router_url}/v1/models", timeout=10).json()):
        if time.monotonic() > deadline:
            state = e2e.kubectl("get", f"localmodels.localmodel.dev/{NAME}", "-n", e2e.MODELS_NS,
                                "-o", "jsonpath={.spec.replicas} {.status.activity}")
            raise SystemExit(f"{NAME} did not scale to zero: pods {left}, replicas and activity {state}, "
                             f"router lists it ready: {not left}")
        time.sleep(0.5)


def _listed_ready(models: dict) -> bool:
    entry = next((m for m in models.get("data", []) if m.get("id") == NAME), {})
    return bool(entry.get("ready"))


def cold_run(router_url: str, timeline: PodTimeline) -> dict[str, float]:
    scale_to_zero(router_url)
    timeline.reset()
    sent = time.perf_counter()
    ttft = first_token(router_url, NAME)
    seen = timeline.seen
    marks = [sent, seen["exists"], seen["running"], seen["ready"], sent + ttft]
    return {"total": ttft, **{step: marks[i + 1] - marks[i] for i, step in enumerate(STEPS)}}


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ["PATH"] = f"{tools_path()}:{os.environ['PATH']}"
    os.environ["KUBECONFIG"] = subprocess.run([*CLUSTER, "env"], check=True, capture_output=True,
                                              text=True).stdout.split("=", 1)[1].strip()
    os.environ.setdefault("LOCALMODEL_E2E_HOST", "10.213.0.1")
    os.environ.setdefault("LOCALMODEL_E2E_SERVER_IMAGE", "localmodel/localmodel:local")
    os.environ.setdefault("LOCALMODEL_E2E_OPERATOR_IMAGE", "localmodel/localmodel-operator:local")
    model = bench_model("0.5b")
    bare = [bare_load(model, 0) for _ in range(3)]
    e2e.install_chart()
    try:
        with tempfile.TemporaryDirectory() as folder:
            os.link(model, Path(folder) / "bench.gguf")
            with e2e.serving_weights(Path(folder)) as weights:
                # keepAlive makes the model wakeable; an hour keeps the operator from scaling it itself.
                e2e.apply_model(NAME, {"source": weights.source("bench.gguf"), "servedName": NAME,
                                       "keepAlive": "1h", "contextSize": 2048, "storage": {"size": "2Gi"}})
                e2e.wait_phase(NAME, {"Ready"})
        timeline = PodTimeline()
        with e2e.port_forward(e2e.RELEASE_NS, f"{e2e.RELEASE}-router", 80) as url:
            first_token(url, NAME)  # the port-forward's and the router's connections warm
            warm = [first_token(url, NAME) for _ in range(args.runs)]
            cold = [cold_run(url, timeline) for _ in range(args.runs)]
    finally:
        e2e.uninstall_chart()
    print(f"| measure (median of {args.runs}) | ms |")
    print("|---|---:|")
    print(f"| bare llama.cpp load on this machine, fresh process | {median_ms(bare)} |")
    print(f"| cold: request to first token | {median_ms([r['total'] for r in cold])} |")
    for step in STEPS:
        print(f"| — {step} | {median_ms([r[step] for r in cold])} |")
    print(f"| warm TTFT through the router | {median_ms(warm)} |")


if __name__ == "__main__":
    main()
