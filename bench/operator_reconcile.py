"""How fast the operator turns LocalModels into children, and how much memory it holds.

    .venv/bin/python bench/operator_reconcile.py [--single 20] [--batch 100]

Runs the real kube-apiserver + etcd (tests/support/controlplane.py) and the real
`localmodel-operator` process under a ServiceAccount bound to the shipped RBAC
rules. Rows:

- apply -> all children exist (PVC, ServiceAccount, Role, RoleBinding, Service,
  pull Job), one LocalModel at a time: p50/p95 (goal p50 < 1 s);
- N LocalModels created at once -> all their children exist (goal < 30 s for 100);
- pull Job complete -> Deployment exists, p50;
- operator RSS after the batch (goal < 200 MB).

Baseline, measured in the same run: an admin client creating the same six
children itself, sequentially, i.e. the apiserver's own cost with no operator.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import kubernetes
import psutil
from kubernetes.client import BatchV1Api, CoreV1Api, CustomObjectsApi

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from support.controlplane import build_binaries, running_control_plane  # noqa: E402

# tests/operator is not importable by package name (it would shadow the stdlib `operator`).
_spec = importlib.util.spec_from_file_location("operator_test_fixtures", ROOT / "tests" / "operator" / "conftest.py")
fixtures = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(fixtures)  # type: ignore[union-attr]

from localmodel_operator.children import desired_children  # noqa: E402
from localmodel_operator.settings import OperatorSettings  # noqa: E402
from localmodel_operator.spec import LocalModel  # noqa: E402

GOAL_P50_S, GOAL_BATCH_S, GOAL_RSS_MB = 1.0, 30.0, 200.0
SOURCE = {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M"}}
CLAIM_SIZE = "1Gi"


class JobWatch:
    """Records when each pull Job (the last child a reconcile creates) appears, from a watch stream."""

    def __init__(self, api: kubernetes.client.ApiClient, namespace: str, kind: str = "job") -> None:
        self.seen: dict[str, float] = {}
        self._cond = threading.Condition()
        self._watch = kubernetes.watch.Watch()
        lister = BatchV1Api(api).list_namespaced_job if kind == "job" else kubernetes.client.AppsV1Api(api).list_namespaced_deployment
        self._thread = threading.Thread(target=self._run, args=(lister, namespace), daemon=True)
        self._thread.start()

    def _run(self, lister: Callable[..., Any], namespace: str) -> None:
        try:
            for event in self._watch.stream(lister, namespace, timeout_seconds=600):
                model = event["object"].metadata.labels.get("localmodel.dev/model")
                with self._cond:
                    self.seen.setdefault(model, time.perf_counter())
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - the stream ends when the control plane stops
            return

    def wait(self, models: set[str], timeout: float = 120) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not models <= set(self.seen):
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError(f"children missing for {sorted(models - set(self.seen))[:5]}")
            return max(self.seen[m] for m in models)

    def stop(self) -> None:
        self._watch.stop()


def create_model(custom: CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return custom.create_namespaced_custom_object(
        fixtures.GROUP, fixtures.VERSION, namespace, fixtures.PLURAL,
        # An explicit size: the operator creates every child at once, with no size probe first.
        fixtures.local_model(name, {"source": SOURCE, "storage": {"size": CLAIM_SIZE}}))


def direct_children_seconds(api: kubernetes.client.ApiClient, namespace: str, name: str) -> float:
    """Baseline: the admin creates the six children a new LocalModel gets, one request each."""
    body = create_model(CustomObjectsApi(api), namespace, name)
    children = desired_children(LocalModel.from_body(body), None, OperatorSettings(), CLAIM_SIZE)
    client = kubernetes.dynamic.DynamicClient(api)
    started = time.perf_counter()
    for child in (*children.applied, children.job):
        resource = client.resources.get(api_version=child["apiVersion"], kind=child["kind"])
        resource.create(body=child, namespace=namespace)
    return time.perf_counter() - started


def check_all_children(api: kubernetes.client.ApiClient, namespace: str, name: str) -> None:
    core = CoreV1Api(api)
    core.read_namespaced_persistent_volume_claim(f"lm-{name}-weights", namespace)
    core.read_namespaced_service(f"lm-{name}", namespace)
    core.read_namespaced_service_account(f"lm-{name}-puller", namespace)
    rbac = kubernetes.client.RbacAuthorizationV1Api(api)
    rbac.read_namespaced_role(f"lm-{name}-puller", namespace)
    rbac.read_namespaced_role_binding(f"lm-{name}-puller", namespace)


def complete_job(batch: BatchV1Api, namespace: str, name: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    condition = {"status": "True", "reason": "CompletionsReached", "lastProbeTime": now, "lastTransitionTime": now}
    batch.patch_namespaced_job_status(name, namespace, {"status": {
        "succeeded": 1, "startTime": now, "completionTime": now,
        "conditions": [{"type": "SuccessCriteriaMet", **condition}, {"type": "Complete", **condition}]}})


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--single", type=int, default=20, help="LocalModels applied one at a time")
    parser.add_argument("--batch", type=int, default=100, help="LocalModels applied at once")
    args = parser.parse_args()

    with running_control_plane(build_binaries()) as plane, plane.api_client() as api:
        fixtures.install_crd(api)
        core = CoreV1Api(api)
        namespace, baseline_ns = "bench", "baseline"
        for ns in (namespace, baseline_ns):
            core.create_namespace({"metadata": {"name": ns}})
        fixtures.bind_operator_rules(api, namespace)
        kubeconfig = plane.serviceaccount_kubeconfig(namespace, fixtures.OPERATOR_SA)
        baseline = [direct_children_seconds(api, baseline_ns, f"base-{i}") for i in range(args.single)]

        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LOCALMODEL_NAMESPACES": namespace,
               "LOCALMODEL_LEASE_NAMESPACE": namespace, "LOCALMODEL_HEALTH_PORT": "18080"}
        log = tempfile.NamedTemporaryFile(prefix="operator-", suffix=".log", delete=False)
        operator = subprocess.Popen([str(ROOT / ".venv" / "bin" / "localmodel-operator")], env=env,
                                    stdout=log, stderr=subprocess.STDOUT)
        jobs = JobWatch(api, namespace)
        deployments = JobWatch(api, namespace, kind="deployment")
        custom = CustomObjectsApi(api)
        try:
            create_model(custom, namespace, "warmup")  # waits out the election and kopf's start
            jobs.wait({"warmup"}, timeout=60)

            single = []
            for i in range(args.single):
                name = f"single-{i}"
                started = time.perf_counter()
                create_model(custom, namespace, name)
                single.append(jobs.wait({name}) - started)
                check_all_children(api, namespace, name)

            rolled = []
            batch_api = BatchV1Api(api)
            for i in range(min(args.single, 10)):
                name = f"single-{i}"
                job = batch_api.list_namespaced_job(namespace, label_selector=f"localmodel.dev/model={name}").items[0]
                started = time.perf_counter()
                complete_job(batch_api, namespace, job.metadata.name)
                rolled.append(deployments.wait({name}) - started)

            names = [f"batch-{i}" for i in range(args.batch)]
            started = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda n: create_model(custom, namespace, n), names))
            batch_s = jobs.wait(set(names), timeout=300) - started
            rss_mb = psutil.Process(operator.pid).memory_info().rss / 2**20

            direct_batch = 0.0  # the same children for the batch, created directly
            for i in range(args.batch):
                direct_batch += direct_children_seconds(api, baseline_ns, f"bbase-{i}")
        finally:
            jobs.stop()
            deployments.stop()
            operator.terminate()
            operator.wait(30)

    base_p50 = statistics.median(baseline)
    rows = [
        ("children created directly, p50 (baseline)", f"{base_p50 * 1000:8.1f} ms", 1.0),
        ("apply -> all children, p50", f"{statistics.median(single) * 1000:8.1f} ms", statistics.median(single) / base_p50),
        ("apply -> all children, p95", f"{percentile(single, 0.95) * 1000:8.1f} ms", percentile(single, 0.95) / base_p50),
        ("pull Job complete -> Deployment, p50", f"{statistics.median(rolled) * 1000:8.1f} ms", statistics.median(rolled) / base_p50),
        (f"{args.batch} children sets created directly (baseline)", f"{direct_batch:8.2f} s", 1.0),
        (f"{args.batch} LocalModels at once -> all children", f"{batch_s:8.2f} s", batch_s / direct_batch),
        ("operator RSS after the batch", f"{rss_mb:8.1f} MiB", None),
    ]
    print(f"| {'measure':<46} | {'value':>12} | vs baseline |")
    print(f"|{'-' * 48}|{'-' * 14}|-------------|")
    for label, value, ratio in rows:
        print(f"| {label:<46} | {value:>12} | {'' if ratio is None else f'{ratio:10.2f}x':>11} |")
    print(f"\ngoals: p50 < {GOAL_P50_S} s: {statistics.median(single) < GOAL_P50_S}; "
          f"batch < {GOAL_BATCH_S} s: {batch_s < GOAL_BATCH_S}; RSS < {GOAL_RSS_MB} MB: {rss_mb < GOAL_RSS_MB}")
    print(f"operator log: {log.name}")


if __name__ == "__main__":
    main()
