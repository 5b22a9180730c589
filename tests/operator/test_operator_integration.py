"""The operator in-process against the real apiserver, under a ServiceAccount bound to exactly the shipped rules.

Nothing runs pods here, so the tests play the Job and Deployment controllers
(writing their status) and the puller (patching status.download/gguf).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client import ApiClient, CustomObjectsApi
from kubernetes.client.exceptions import ApiException

from localmodel_operator.spec import Source

from .cluster import Cluster, eventually
from .conftest import GROUP, PLURAL, RESYNC_INTERVAL_S, ROUTER_URL, SHA, VERSION

HF = {"hf": {"repo": "Qwen/Qwen2.5-0.5B-Instruct-GGUF", "quant": "Q4_K_M"}}
GGUF = {"architecture": "qwen2", "parameters": 494032768, "quantization": "Q4_K_M", "contextLength": 32768,
        "sizeBytes": 491400032}
FILE_SHA = "d" * 64


@pytest.fixture
def cluster(admin: ApiClient, namespace: str) -> Cluster:
    return Cluster(admin, namespace)


def digest(source: dict[str, Any]) -> str:
    return Source({**source, **({"hf": {"revision": "main", **source["hf"]}} if "hf" in source else {})}).digest


def owner_uids(obj: Any) -> list[str]:
    return [ref.uid for ref in (obj.metadata.owner_references or [])]


def pull(cluster: Cluster, name: str, source: dict[str, Any], sha: str = FILE_SHA) -> None:
    """Drives one pull to success: Job running, puller progress, puller result, Job complete."""
    job = f"lm-{name}-pull-{digest(source)}"
    eventually(lambda: cluster.batch.read_namespaced_job(job, cluster.ns))
    cluster.start_job(job)
    cluster.report_download(name, {"bytesDone": GGUF["sizeBytes"], "bytesTotal": GGUF["sizeBytes"], "percent": 100,
                                   "sha256": sha, "result": "Succeeded"}, GGUF)
    cluster.complete_job(job)


def test_a_model_goes_from_pending_through_downloading_and_loading_to_ready(
    cluster: Cluster, operator: Any, control_plane: Any
) -> None:
    source = {**HF, "secretRef": {"name": "hf-token"}}
    created = cluster.create_model("qwen", {"source": source, "aliases": ["llama3"], "storage": {"size": "2Gi"}})
    uid = created["metadata"]["uid"]

    # Pending: claim, puller RBAC, Service and the pull Job exist; no server yet.
    job_name = f"lm-qwen-pull-{digest(source)}"
    job = eventually(lambda: cluster.batch.read_namespaced_job(job_name, cluster.ns))
    model = cluster.wait_phase("qwen", "Pending")
    assert model["status"]["source"] == "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert model["status"]["observedGeneration"] == model["metadata"]["generation"]
    pvc = cluster.core.read_namespaced_persistent_volume_claim("lm-qwen-weights", cluster.ns)
    service = cluster.core.read_namespaced_service("lm-qwen", cluster.ns)
    account = cluster.core.read_namespaced_service_account("lm-qwen-puller", cluster.ns)
    role = cluster.rbac.read_namespaced_role("lm-qwen-puller", cluster.ns)
    binding = cluster.rbac.read_namespaced_role_binding("lm-qwen-puller", cluster.ns)
    for child in (job, pvc, service, account, role, binding):
        assert owner_uids(child) == [uid], child.metadata.name
        assert child.metadata.labels["app.kubernetes.io/managed-by"] == "localmodel-operator"
        assert child.metadata.labels["localmodel.dev/model"] == "qwen"
    assert pvc.spec.resources.requests["storage"] == "2Gi"
    assert service.spec.ports[0].name == "http" and service.spec.ports[0].port == 8000
    assert role.rules[0].resource_names == ["qwen"] and role.rules[0].verbs == ["get", "patch"]
    pull_container = job.spec.template.spec.containers[0]
    assert pull_container.env_from[0].secret_ref.name == "hf-token"
    assert json.loads(pull_container.args[pull_container.args.index("--source") + 1])["hf"]["quant"] == "Q4_K_M"
    assert job.spec.template.spec.service_account_name == "lm-qwen-puller"
    with pytest.raises(ApiException) as missing:
        cluster.deployment("qwen")
    assert missing.value.status == 404

    # Downloading: the Job runs and the puller reports progress, which the Table output shows.
    cluster.start_job(job_name)
    cluster.wait_phase("qwen", "Downloading")
    puller_api = control_plane.serviceaccount_kubeconfig(cluster.ns, "lm-qwen-puller")
    from kubernetes.config import new_client_from_config
    with new_client_from_config(config_file=str(puller_api)) as as_puller:
        cluster.report_download("qwen", {"bytesDone": 206_000_000, "bytesTotal": 491_400_032, "percent": 42},
                                api=as_puller)

    def progress_in_table() -> dict[str, Any]:
        row = cluster.table()["qwen"]
        assert row["Progress"] == "42% of 468.6 MiB", row
        return row
    row = eventually(progress_in_table)
    assert row["Phase"] == "Downloading"
    assert row["Source"] == "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"
    assert row["Ready"] == "0/1"
    assert {"Source", "Phase", "Progress", "Ready", "Endpoint", "Age"} <= set(row)

    # Loading: the pull succeeded, the server Deployment appears.
    cluster.report_download("qwen", {"bytesDone": 491_400_032, "bytesTotal": 491_400_032, "percent": 100,
                                     "sha256": FILE_SHA, "result": "Succeeded"}, GGUF)
    cluster.complete_job(job_name)
    model = cluster.wait_phase("qwen", "Loading")
    assert cluster.condition("qwen", "WeightsReady") == ("True", "Pulled")
    assert cluster.condition("qwen", "Available") == ("False", "Loading")
    deployment = cluster.deployment("qwen")
    assert owner_uids(deployment) == [uid]
    annotations = deployment.spec.template.metadata.annotations
    assert annotations == {"localmodel.dev/weights": digest(source), "localmodel.dev/weights-sha256": FILE_SHA}
    server = deployment.spec.template.spec.containers[0]
    assert server.image == "registry.test/localmodel:test"
    assert "--model-path=/models/model.gguf" in server.args and "--aliases=llama3" in server.args
    assert server.resources.requests["memory"].endswith("Mi")  # derived from the GGUF size and the KV cache
    assert server.readiness_probe.http_get.path == "/readyz"
    assert server.security_context.read_only_root_filesystem is True
    volume = deployment.spec.template.spec.volumes[0].persistent_volume_claim
    assert (volume.claim_name, volume.read_only) == ("lm-qwen-weights", True)

    # Ready: the Deployment reports its replicas available.
    cluster.make_available("qwen")
    model = cluster.wait_phase("qwen", "Ready")
    assert model["status"]["endpoint"] == f"{ROUTER_URL}/v1"
    assert model["status"]["servedName"] == "qwen"
    assert (model["status"]["replicas"], model["status"]["readyReplicas"]) == (1, 1)
    assert cluster.condition("qwen", "Available") == ("True", "MinimumReplicasAvailable")
    assert cluster.condition("qwen", "Degraded") == ("False", "AsExpected")
    row = eventually(lambda: _row_ready(cluster))
    assert row["Endpoint"] == f"{ROUTER_URL}/v1" and row["Progress"] == "100%"
    events = eventually(lambda: _has_events(cluster, "qwen", {"PullStarted", "Pulled", "MinimumReplicasAvailable"}))
    assert ("Warning", "Pulled") not in events


def _row_ready(cluster: Cluster) -> dict[str, Any]:
    row = cluster.table()["qwen"]
    assert (row["Phase"], row["Ready"]) == ("Ready", "1/1"), row
    return row


def _has_events(cluster: Cluster, name: str, reasons: set[str]) -> list[tuple[str, str]]:
    events = cluster.events(name)
    assert reasons <= {reason for _, reason in events}, events
    return events


def test_the_puller_may_patch_only_its_own_models_status(cluster: Cluster, operator: Any, control_plane: Any) -> None:
    cluster.create_model("one", {"source": HF})
    cluster.create_model("two", {"source": HF})
    eventually(lambda: cluster.rbac.read_namespaced_role_binding("lm-one-puller", cluster.ns))
    kubeconfig = control_plane.serviceaccount_kubeconfig(cluster.ns, "lm-one-puller")
    from kubernetes.config import new_client_from_config
    with new_client_from_config(config_file=str(kubeconfig)) as as_puller:
        custom = CustomObjectsApi(as_puller)
        custom.get_namespaced_custom_object_status(GROUP, VERSION, cluster.ns, PLURAL, "one")
        for forbidden in (
            lambda: cluster.report_download("two", {"percent": 1}, api=as_puller),
            lambda: custom.patch_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL, "one", {"spec": {"replicas": 9}}),
            lambda: custom.list_namespaced_custom_object(GROUP, VERSION, cluster.ns, PLURAL),
        ):
            with pytest.raises(ApiException) as denied:
                forbidden()
            assert denied.value.status == 403


def test_gpu_model_children(cluster: Cluster, operator: Any) -> None:
    source = {"url": "https://models.example/llama3-8b-q4.gguf", "sha256": SHA}
    cluster.create_model("llama3", {"source": source, "gpu": {"count": 1}, "runtimeClassName": "nvidia",
                                    "storage": {"size": "6Gi"},
                                    "nodeSelector": {"nvidia.com/gpu.present": "true"}, "contextSize": 8192})
    pull(cluster, "llama3", source)
    deployment = eventually(lambda: cluster.deployment("llama3"))
    pod = deployment.spec.template.spec
    server = pod.containers[0]
    assert server.resources.limits == {"nvidia.com/gpu": "1"}
    assert "--gpu-layers=-1" in server.args and "--context-size=8192" in server.args
    assert pod.node_selector == {"nvidia.com/gpu.present": "true"}
    assert pod.runtime_class_name == "nvidia"
    assert any(t.key == "nvidia.com/gpu" and t.effect == "NoSchedule" for t in pod.tolerations)
    assert deployment.spec.strategy.rolling_update.max_surge == 0


def test_a_failed_pull_is_reported_with_the_pullers_reason(cluster: Cluster, operator: Any) -> None:
    cluster.create_model("broken", {"source": {"url": "https://models.example/x.gguf", "sha256": SHA},
                                    "storage": {"size": "1Gi"}})
    job = eventually(lambda: cluster.only_job("broken")).metadata.name
    cluster.start_job(job)
    cluster.report_download("broken", {"result": "Failed", "reason": "ChecksumMismatch",
                                       "message": f"the file's sha256 is {FILE_SHA}, expected {SHA}"})
    cluster.fail_job(job)
    model = cluster.wait_phase("broken", "Failed")
    assert cluster.condition("broken", "WeightsReady") == ("False", "ChecksumMismatch")
    assert cluster.condition("broken", "Degraded") == ("True", "ChecksumMismatch")
    degraded = next(c for c in model["status"]["conditions"] if c["type"] == "Degraded")
    assert f"expected {SHA}" in degraded["message"]
    eventually(lambda: _has_events_typed(cluster, "broken", ("Warning", "ChecksumMismatch")))
    assert eventually(lambda: _progress(cluster, "broken", "failed"))


def _has_events_typed(cluster: Cluster, name: str, event: tuple[str, str]) -> None:
    assert event in cluster.events(name)


def _progress(cluster: Cluster, name: str, text: str) -> bool:
    assert cluster.table()[name]["Progress"] == text
    return True


def test_replica_change_patches_and_source_change_repulls_then_rolls(cluster: Cluster, operator: Any) -> None:
    old = {"url": "https://models.example/v1.gguf"}
    new = {"url": "https://models.example/v2.gguf"}
    cluster.create_model("m", {"source": old, "storage": {"size": "1Gi"}})
    pull(cluster, "m", old)
    eventually(lambda: cluster.deployment("m"))
    cluster.make_available("m")
    cluster.wait_phase("m", "Ready")

    cluster.patch_spec("m", {"replicas": 3, "args": ["--queue-size=16"]})
    def scaled() -> Any:
        deployment = cluster.deployment("m")
        assert deployment.spec.replicas == 3 and "--queue-size=16" in deployment.spec.template.spec.containers[0].args
        return deployment
    deployment = eventually(scaled)
    assert deployment.spec.template.metadata.annotations["localmodel.dev/weights"] == digest(old)
    cluster.make_available("m")
    eventually(lambda: _ready_column(cluster, "m", "3/3"))

    serving_generation = cluster.deployment("m").metadata.generation
    cluster.patch_spec("m", {"source": new})
    new_job = f"lm-m-pull-{digest(new)}"
    eventually(lambda: cluster.batch.read_namespaced_job(new_job, cluster.ns))
    eventually(lambda: _job_names(cluster, "m", [new_job]))  # the old source's Job is gone
    cluster.start_job(new_job)
    cluster.wait_phase("m", "Downloading")
    # The new pull reports the new file's metadata; the pods keep running the old weights, untouched.
    cluster.report_download("m", {"bytesDone": 10, "bytesTotal": 8 * 2**30, "percent": 0},
                            {**GGUF, "sizeBytes": 8 * 2**30, "parameters": 8_000_000_000})
    eventually(lambda: _progress(cluster, "m", "0% of 8.0 GiB"))
    assert cluster.deployment("m").metadata.generation == serving_generation
    assert cluster.deployment("m").spec.template.metadata.annotations["localmodel.dev/weights"] == digest(old)
    assert cluster.condition("m", "Available") == ("True", "MinimumReplicasAvailable")

    cluster.report_download("m", {"bytesDone": 1, "bytesTotal": 1, "percent": 100, "sha256": "e" * 64,
                                  "result": "Succeeded"}, GGUF)
    cluster.complete_job(new_job)
    def rolled() -> None:
        annotations = cluster.deployment("m").spec.template.metadata.annotations
        assert annotations == {"localmodel.dev/weights": digest(new), "localmodel.dev/weights-sha256": "e" * 64}
    eventually(rolled)
    cluster.wait_phase("m", "Loading")  # the new template is not rolled out yet
    cluster.make_available("m")
    cluster.wait_phase("m", "Ready")


def _ready_column(cluster: Cluster, name: str, ready: str) -> None:
    assert cluster.table()[name]["Ready"] == ready


def _job_names(cluster: Cluster, name: str, expected: list[str]) -> None:
    assert [job.metadata.name for job in cluster.jobs(name)] == expected


def test_restart_mid_reconcile_creates_no_duplicates(
    cluster: Cluster, operator_env: Path, namespace: str
) -> None:
    from .conftest import kopf_runner

    with kopf_runner(namespace) as first:
        cluster.create_model("a", {"source": HF, "storage": {"size": "1Gi"}})
        eventually(lambda: cluster.only_job("a"))
        cluster.wait_phase("a", "Pending")
    assert first.exit_code == 0, first.output

    # While the operator is down: a new model arrives, one child of "a" is lost,
    # and "a"'s pull finishes; a half-done reconcile of "b" left only its Service.
    cluster.create_model("b", {"source": HF, "storage": {"size": "1Gi"}})
    cluster.core.delete_namespaced_service("lm-a", cluster.ns)
    cluster.start_job(cluster.only_job("a").metadata.name)
    cluster.complete_job(cluster.only_job("a").metadata.name)
    from localmodel_operator import build_server
    from localmodel_operator.spec import LocalModel
    half_done = build_server.service(LocalModel.from_body(cluster.model("b")))
    cluster.core.create_namespaced_service(cluster.ns, half_done)

    with kopf_runner(namespace) as second:
        eventually(lambda: cluster.deployment("a"))
        cluster.wait_phase("a", "Loading")
        eventually(lambda: cluster.only_job("b"))
        cluster.wait_phase("b", "Pending")
        eventually(lambda: cluster.core.read_namespaced_service("lm-a", cluster.ns))
    assert second.exit_code == 0, second.output
    for name in ("a", "b"):
        assert len(cluster.jobs(name)) == 1
        services = cluster.core.list_namespaced_service(cluster.ns, label_selector=f"localmodel.dev/model={name}")
        assert [s.metadata.name for s in services.items] == [f"lm-{name}"]
        claims = cluster.core.list_namespaced_persistent_volume_claim(cluster.ns, label_selector=f"localmodel.dev/model={name}")
        assert [c.metadata.name for c in claims.items] == [f"lm-{name}-weights"]
    deployments = cluster.apps.list_namespaced_deployment(cluster.ns, label_selector="localmodel.dev/model=a")
    assert len(deployments.items) == 1


def test_deletion_leaves_only_a_retained_claim(cluster: Cluster, operator: Any) -> None:
    gone = cluster.create_model("gone", {"source": HF, "storage": {"size": "1Gi"}})
    kept = cluster.create_model("kept", {"source": HF, "storage": {"size": "3Gi", "retainOnDelete": True}})
    for name in ("gone", "kept"):
        eventually(lambda name=name: cluster.only_job(name))
        cluster.wait_phase(name, "Pending")
    owned = cluster.core.read_namespaced_persistent_volume_claim("lm-gone-weights", cluster.ns)
    retained = cluster.core.read_namespaced_persistent_volume_claim("lm-kept-weights", cluster.ns)
    assert owner_uids(owned) == [gone["metadata"]["uid"]]
    assert owner_uids(retained) == []
    # No finalizer holds the objects: they go at once, and the garbage collector
    # (absent from this control plane) removes every child that names them as owner.
    for name in ("gone", "kept"):
        assert not cluster.model(name)["metadata"].get("finalizers")
        cluster.delete_model(name)
        eventually(lambda name=name: _is_gone(cluster, name))
    for child in (cluster.only_job("kept"), cluster.core.read_namespaced_service("lm-kept", cluster.ns),
                  cluster.rbac.read_namespaced_role("lm-kept-puller", cluster.ns)):
        assert owner_uids(child) == [kept["metadata"]["uid"]]
    assert owner_uids(cluster.core.read_namespaced_persistent_volume_claim("lm-kept-weights", cluster.ns)) == []

    # A model created again under the same name reuses the retained claim at the size it
    # has (nothing to measure); giving up retention hands the claim to the new owner.
    cluster.collect_garbage("kept", kept["metadata"]["uid"])
    assert cluster.core.read_namespaced_persistent_volume_claim("lm-kept-weights", cluster.ns)
    again = cluster.create_model("kept", {"source": HF, "storage": {"retainOnDelete": True}})
    eventually(lambda: _job_owned_by(cluster, "kept", again["metadata"]["uid"]))
    cluster.patch_spec("kept", {"storage": {"retainOnDelete": False}})
    eventually(lambda: _claim_owned_by(cluster, "lm-kept-weights", again["metadata"]["uid"]))
    assert [job.metadata.name for job in cluster.jobs("kept")] == [f"lm-kept-pull-{digest(HF)}"]
    assert cluster.core.read_namespaced_persistent_volume_claim("lm-kept-weights", cluster.ns).spec.resources.requests[
        "storage"] == "3Gi"


def _is_gone(cluster: Cluster, name: str) -> None:
    with pytest.raises(ApiException) as missing:
        cluster.model(name)
    assert missing.value.status == 404


def _job_owned_by(cluster: Cluster, name: str, uid: str) -> None:
    assert any(owner_uids(job) == [uid] for job in cluster.jobs(name))


def _claim_owned_by(cluster: Cluster, claim: str, uid: str) -> None:
    assert owner_uids(cluster.core.read_namespaced_persistent_volume_claim(claim, cluster.ns)) == [uid]


def test_an_unsized_model_measures_its_source_then_claims_what_it_needs(cluster: Cluster, operator: Any) -> None:
    source = {"url": "https://models.example/big.gguf"}
    cluster.create_model("sized", {"source": source})
    probe = f"lm-sized-size-{digest(source)}"
    job = eventually(lambda: cluster.batch.read_namespaced_job(probe, cluster.ns))
    container = job.spec.template.spec.containers[0]
    assert container.args[0] == "--probe" and "--dest" not in container.args
    # No claim exists yet: the size Job mounts only its scratch /tmp.
    assert [v.name for v in job.spec.template.spec.volumes] == ["tmp"]
    assert job.spec.template.spec.service_account_name == "lm-sized-puller"
    cluster.wait_phase("sized", "Pending")
    assert cluster.condition("sized", "WeightsReady") == ("False", "Pending")
    assert [j.metadata.name for j in cluster.jobs("sized")] == [probe]  # no pull before the claim exists
    with pytest.raises(ApiException) as missing:
        cluster.core.read_namespaced_persistent_volume_claim("lm-sized-weights", cluster.ns)
    assert missing.value.status == 404

    # The probe reports the content length (5 GiB) and ends: the claim gets 5.5 rounded up, then the pull starts.
    cluster.start_job(probe)
    cluster.report_download("sized", {"bytesDone": 0, "bytesTotal": 5 * 2**30, "percent": 0})
    cluster.complete_job(probe)
    claim = eventually(lambda: cluster.core.read_namespaced_persistent_volume_claim("lm-sized-weights", cluster.ns))
    assert claim.spec.resources.requests["storage"] == "6Gi"
    pull(cluster, "sized", source)
    eventually(lambda: cluster.deployment("sized"))
    cluster.wait_phase("sized", "Loading")
    eventually(lambda: _has_events(cluster, "sized", {"SizeProbeStarted", "ClaimSized", "PullStarted"}))

    # A probe that fails surfaces like a failed pull: its reason in the conditions and a Warning.
    cluster.create_model("absent", {"source": {"url": "https://models.example/absent.gguf"}})
    failing = eventually(lambda: cluster.only_job("absent")).metadata.name
    assert failing.startswith("lm-absent-size-")
    cluster.start_job(failing)
    cluster.report_download("absent", {"bytesDone": 0, "result": "Failed", "reason": "SourceNotFound",
                                       "message": "https://models.example/absent.gguf: HTTP 404"})
    cluster.fail_job(failing)
    cluster.wait_phase("absent", "Failed")
    assert cluster.condition("absent", "Degraded") == ("True", "SourceNotFound")
    eventually(lambda: _has_events_typed(cluster, "absent", ("Warning", "SourceNotFound")))


def test_resync_repairs_a_child_deleted_behind_the_operators_back(cluster: Cluster, operator: Any) -> None:
    """No watch covers Services: only the resync timer can notice that one is gone."""
    created = cluster.create_model("resynced", {"source": HF, "storage": {"size": "1Gi"}})
    first = eventually(lambda: cluster.core.read_namespaced_service("lm-resynced", cluster.ns))
    cluster.core.delete_namespaced_service("lm-resynced", cluster.ns)

    def recreated() -> Any:
        service = cluster.core.read_namespaced_service("lm-resynced", cluster.ns)
        assert service.metadata.uid != first.metadata.uid
        return service

    service = eventually(recreated, timeout=6 * RESYNC_INTERVAL_S)
    assert owner_uids(service) == [created["metadata"]["uid"]]
