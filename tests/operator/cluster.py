"""The test's side of the cluster: it plays kubelet, Job controller, Deployment controller and puller."""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from kubernetes.client import ApiClient, AppsV1Api, BatchV1Api, CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api
from kubernetes.client.exceptions import ApiException

from .conftest import GROUP, PLURAL, VERSION

T = TypeVar("T")
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"


def eventually(check: Callable[[], T], timeout: float = 30.0) -> T:
    """Retries `check` (which asserts) until it passes; the last assertion error explains a timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, ApiException, KeyError, StopIteration, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.1)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    def __init__(self, api: ApiClient, namespace: str) -> None:
        self.api, self.ns = api, namespace
        self.core, self.apps, self.batch = CoreV1Api(api), AppsV1Api(api), BatchV1Api(api)
        self.rbac, self.custom = RbacAuthorizationV1Api(api), CustomObjectsApi(api)

    # --- LocalModels ---------------------------------------------------------

    def create_model(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "LocalModel", "metadata": {"name": name}, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, body)

    def model(self, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def patch_spec(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name, {"spec": spec})

    def delete_model(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def condition(self, name: str, kind: str) -> tuple[str, str]:
        for condition in self.model(name).get("status", {}).get("conditions", []):
            if condition["type"] == kind:
                return condition["status"], condition["reason"]
        raise AssertionError(f"no {kind} condition yet")

    def wait_phase(self, name: str, phase: str, timeout: float = 30.0) -> dict[str, Any]:
        def check() -> dict[str, Any]:
            model = self.model(name)
            assert model.get("status", {}).get("phase") == phase, model.get("status")
            return model
        return eventually(check, timeout)

    def table(self) -> dict[str, dict[str, Any]]:
        """`kubectl get lm` as the apiserver renders it: {name: {column: cell}}."""
        response = self.api.call_api(
            f"/apis/{GROUP}/{VERSION}/namespaces/{self.ns}/{PLURAL}", "GET", header_params={"Accept": TABLE},
            auth_settings=["BearerToken"], _preload_content=False)
        table = json.loads(response.data)
        columns = [c["name"] for c in table["columnDefinitions"]]
        return {row["object"]["metadata"]["name"]: dict(zip(columns, row["cells"])) for row in table["rows"]}

    # --- the puller's status fields -------------------------------------------

    def report_download(self, name: str, download: dict[str, Any], gguf: dict[str, Any] | None = None,
                        api: ApiClient | None = None) -> None:
        """A merge patch of the status subresource, as localmodel-pull --report-to sends it."""
        status: dict[str, Any] = {"download": download}
        if gguf:
            status["gguf"] = gguf
        CustomObjectsApi(api or self.api).patch_namespaced_custom_object_status(
            GROUP, VERSION, self.ns, PLURAL, name, {"status": status})

    # --- Jobs, as the Job controller ----------------------------------------------

    def jobs(self, model: str) -> list[Any]:
        return self.batch.list_namespaced_job(self.ns, label_selector=f"localmodel.dev/model={model}").items

    def only_job(self, model: str) -> Any:
        jobs = self.jobs(model)
        assert len(jobs) == 1, [j.metadata.name for j in jobs]
        return jobs[0]

    def start_job(self, name: str) -> None:
        self.batch.patch_namespaced_job_status(name, self.ns, {"status": {"active": 1, "startTime": _now()}})

    def _start_time(self, name: str) -> str:
        """startTime is immutable once set; a Job that never ran gets it now."""
        started = self.batch.read_namespaced_job_status(name, self.ns).status.start_time
        return started.strftime("%Y-%m-%dT%H:%M:%SZ") if started else _now()

    def complete_job(self, name: str) -> None:
        now = _now()
        self.batch.patch_namespaced_job_status(name, self.ns, {"status": {
            "active": 0, "succeeded": 1, "startTime": self._start_time(name), "completionTime": now, "ready": 0,
            "terminating": 0,
            "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached",
                 "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached",
                 "lastProbeTime": now, "lastTransitionTime": now}]}})

    def fail_job(self, name: str, reason: str = "PodFailurePolicy", message: str = "container pull exited 3") -> None:
        now = _now()
        self.batch.patch_namespaced_job_status(name, self.ns, {"status": {
            "active": 0, "failed": 1, "startTime": self._start_time(name), "ready": 0, "terminating": 0,
            "conditions": [
                {"type": "FailureTarget", "status": "True", "reason": reason, "message": message,
                 "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": reason, "message": message,
                 "lastProbeTime": now, "lastTransitionTime": now}]}})

    # --- Deployments, as the Deployment controller and kubelet --------------------

    def deployment(self, model: str) -> Any:
        return self.apps.read_namespaced_deployment(f"lm-{model}", self.ns)

    def make_available(self, model: str) -> None:
        deployment = self.deployment(model)
        replicas = deployment.spec.replicas
        now = _now()
        self.apps.patch_namespaced_deployment_status(deployment.metadata.name, self.ns, {"status": {
            "observedGeneration": deployment.metadata.generation, "replicas": replicas,
            "updatedReplicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                            "message": "ok", "lastUpdateTime": now, "lastTransitionTime": now}]}})

    def collect_garbage(self, model: str, owner_uid: str) -> None:
        """What the garbage collector does after a LocalModel is deleted: removes the children it owned."""
        selector = f"localmodel.dev/model={model}"
        for list_fn, delete_fn in (
            (self.batch.list_namespaced_job, self.batch.delete_namespaced_job),
            (self.apps.list_namespaced_deployment, self.apps.delete_namespaced_deployment),
            (self.core.list_namespaced_service, self.core.delete_namespaced_service),
            (self.core.list_namespaced_service_account, self.core.delete_namespaced_service_account),
            (self.core.list_namespaced_persistent_volume_claim, self.core.delete_namespaced_persistent_volume_claim),
            (self.rbac.list_namespaced_role, self.rbac.delete_namespaced_role),
            (self.rbac.list_namespaced_role_binding, self.rbac.delete_namespaced_role_binding),
        ):
            for item in list_fn(self.ns, label_selector=selector).items:
                if any(ref.uid == owner_uid for ref in item.metadata.owner_references or []):
                    delete_fn(item.metadata.name, self.ns, propagation_policy="Background")

    def events(self, model: str) -> list[tuple[str, str]]:
        items = self.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={model}").items
        return [(event.type, event.reason) for event in items]
