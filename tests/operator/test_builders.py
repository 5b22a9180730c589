"""The pure builders: every child's important fields, CPU and GPU variants, no cluster."""

from __future__ import annotations

import json

import pytest

from localmodel_operator import build_puller, build_server, build_storage, meta
from localmodel_operator.children import current_weights, desired_children, stale_jobs
from localmodel_operator.observed import job_state
from localmodel_operator.resources import estimated_memory_bytes
from localmodel_operator.spec import GgufInfo, LocalModel, Source, Weights

from .factories import HF_SOURCE, SETTINGS, finished_job, model, model_body

SHA = "b" * 64
GGUF = {"architecture": "qwen2", "parameters": 494_000_000, "contextLength": 32768, "sizeBytes": 400 * 2**20}


def weights_for(source: dict, sha256: str | None = SHA, gguf: GgufInfo = GgufInfo()) -> Weights:
    src = Source(source)
    return Weights(digest=src.digest, source=src, sha256=sha256, gguf=gguf)


def pulled(lm: LocalModel) -> Weights:
    """The weights as recorded when lm's pull succeeded, with its GGUF metadata."""
    return weights_for(dict(lm.spec.source.raw), gguf=lm.gguf)


def owner_refs(obj: dict) -> list[dict]:
    return obj["metadata"].get("ownerReferences", [])


def container(deployment_or_job: dict) -> dict:
    return deployment_or_job["spec"]["template"]["spec"]["containers"][0]


# --- spec view ----------------------------------------------------------------


def test_source_digest_ignores_the_secret_name_but_not_the_bytes_it_describes() -> None:
    plain = Source(HF_SOURCE)
    with_secret = Source({**HF_SOURCE, "secretRef": {"name": "hf-token"}})
    pinned = Source({**HF_SOURCE, "sha256": SHA})
    assert plain.digest == with_secret.digest
    assert plain.digest != pinned.digest
    assert len(plain.digest) == 8 and int(plain.digest, 16) >= 0
    assert "secretRef" not in json.loads(with_secret.canonical_json())


def test_served_name_defaults_to_the_object_name() -> None:
    assert model().spec.served_name == "qwen"
    assert model({"source": HF_SOURCE, "servedName": "qwen2.5"}).spec.served_name == "qwen2.5"


@pytest.mark.parametrize(("source", "summary"), [
    (HF_SOURCE, "hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"),
    ({"url": "https://cdn.example/models/x/y.gguf?token=1"}, "url:cdn.example/…/y.gguf"),
    ({"s3": {"bucket": "b", "key": "k/m.gguf"}}, "s3://b/k/m.gguf"),
    ({"pvc": {"claimName": "shared", "path": "a/m.gguf"}}, "pvc:shared/a/m.gguf"),
])
def test_source_summary_for_the_source_column(source: dict, summary: str) -> None:
    assert Source(source).summary() == summary


# --- names, labels, owners ------------------------------------------------------


def test_every_child_has_the_contract_labels_and_a_controller_owner() -> None:
    lm = model()
    weights = weights_for(HF_SOURCE)
    children = desired_children(lm, weights, SETTINGS, "20Gi")
    assert [c["kind"] for c in children.applied] == [
        "PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Service", "Deployment"]
    for child in children.applied:
        labels = child["metadata"]["labels"]
        assert labels["app.kubernetes.io/instance"] == "qwen"
        assert labels["app.kubernetes.io/managed-by"] == "localmodel-operator"
        assert labels["localmodel.dev/model"] == "qwen"
        assert child["metadata"]["namespace"] == "ml"
        assert owner_refs(child) == [{"apiVersion": "localmodel.dev/v1alpha1", "kind": "LocalModel", "name": "qwen",
                                      "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}]
    names = {c["kind"]: c["metadata"]["name"] for c in children.applied}
    assert names == {"PersistentVolumeClaim": "lm-qwen-weights", "ServiceAccount": "lm-qwen-puller",
                     "Role": "lm-qwen-puller", "RoleBinding": "lm-qwen-puller", "Service": "lm-qwen",
                     "Deployment": "lm-qwen"}


# --- claim ---------------------------------------------------------------------------


def test_claim_defaults_and_overrides() -> None:
    claim = build_storage.weights_claim(model(), SETTINGS, "20Gi")
    assert claim is not None
    assert claim["spec"] == {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "20Gi"}},
                             "volumeMode": "Filesystem"}
    custom = build_storage.weights_claim(model({"source": HF_SOURCE, "storage": {
        "size": "3Gi", "storageClassName": "fast", "accessModes": ["ReadWriteMany"]}}), SETTINGS, "3Gi")
    assert custom is not None
    assert custom["spec"]["storageClassName"] == "fast"
    assert custom["spec"]["resources"]["requests"]["storage"] == "3Gi"
    assert custom["spec"]["accessModes"] == ["ReadWriteMany"]


def test_retained_claim_has_no_owner_so_it_outlives_the_model() -> None:
    claim = build_storage.weights_claim(model({"source": HF_SOURCE, "storage": {"retainOnDelete": True}}), SETTINGS, "1Gi")
    assert claim is not None
    assert "ownerReferences" not in claim["metadata"]


def test_pvc_source_uses_the_users_claim_and_creates_none() -> None:
    lm = model({"source": {"pvc": {"claimName": "shared", "path": "llama/m.gguf"}}})
    assert build_storage.weights_claim(lm, SETTINGS, "1Gi") is None
    assert build_storage.claim_size(lm, None, None, SETTINGS) is None
    children = desired_children(lm, None, SETTINGS, None)
    assert not children.sizing and children.job is not None  # verified in place, never probed
    assert children.job["metadata"]["name"] == meta.job_name("qwen", lm.spec.source.digest)
    job = build_puller.job(lm, SETTINGS)
    pod = job["spec"]["template"]["spec"]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "shared", "readOnly": True}
    assert container(job)["volumeMounts"][0] == {"name": "weights", "mountPath": "/models", "readOnly": True}
    deployment = build_server.deployment(lm, weights_for(lm.spec.source.raw), SETTINGS)
    assert "--model-path=/models/llama/m.gguf" in container(deployment)["args"]
    assert deployment["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "shared"


# --- puller ------------------------------------------------------------------------------


def test_puller_role_only_reads_and_patches_its_own_status() -> None:
    role = build_puller.role(model())
    assert role["rules"] == [{"apiGroups": ["localmodel.dev"], "resources": ["localmodels/status"],
                              "resourceNames": ["qwen"], "verbs": ["get", "patch"]}]
    binding = build_puller.role_binding(model())
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lm-qwen-puller"}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "lm-qwen-puller", "namespace": "ml"}]


def test_pull_job_follows_the_puller_contract() -> None:
    lm = model({"source": {**HF_SOURCE, "secretRef": {"name": "hf-token"}}})
    job = build_puller.job(lm, SETTINGS)
    assert job["metadata"]["name"] == f"lm-qwen-pull-{lm.spec.source.digest}"
    assert job["metadata"]["labels"]["app.kubernetes.io/name"] == "localmodel-puller"
    pull = container(job)
    assert pull["image"] == "registry.test/localmodel:1"  # the puller image defaults to the server image
    assert pull["command"] == ["localmodel-pull"]
    args = pull["args"]
    assert json.loads(args[args.index("--source") + 1]) == HF_SOURCE  # no secretRef in argv
    assert args[args.index("--dest") + 1] == "/models"
    assert args[args.index("--report-to") + 1] == "ml/qwen"
    assert args[args.index("--termination-log") + 1] == "/dev/termination-log"
    assert pull["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    assert {"name": "weights", "mountPath": "/models", "readOnly": False} in pull["volumeMounts"]
    spec = job["spec"]
    assert spec["backoffLimit"] == SETTINGS.pull_backoff_limit
    assert spec["ttlSecondsAfterFinished"] == SETTINGS.pull_ttl_s
    fail_job = spec["podFailurePolicy"]["rules"][0]
    assert fail_job["action"] == "FailJob"
    # Only the puller's reported failures end the Job; a crash (exit 1, a signal) is retried.
    assert fail_job["onExitCodes"]["values"] == [3] and 1 not in fail_job["onExitCodes"]["values"]
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "lm-qwen-puller"
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "lm-qwen-weights", "readOnly": False}
    assert_hardened(pod)


def assert_hardened(pod: dict) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    security = pod["containers"][0]["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_puller_image_can_differ() -> None:
    settings = SETTINGS.model_copy(update={"puller_image": "registry.test/puller:2"})
    assert container(build_puller.job(model(), settings))["image"] == "registry.test/puller:2"


# --- server Deployment: CPU --------------------------------------------------------------


def test_cpu_deployment() -> None:
    lm = model({"source": HF_SOURCE, "aliases": ["llama3"], "contextSize": 2048, "parallel": 2, "replicas": 3,
                "args": ["--queue-size=8"], "env": [{"name": "A", "value": "b"}]}, {"gguf": GGUF})
    deployment = build_server.deployment(lm, pulled(lm), SETTINGS)
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"] == {"matchLabels": {"app.kubernetes.io/name": "localmodel-server",
                                                "localmodel.dev/model": "qwen"}}
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    template = spec["template"]
    assert template["metadata"]["annotations"] == {"localmodel.dev/weights": Source(HF_SOURCE).digest,
                                                   "localmodel.dev/weights-sha256": SHA}
    pod = template["spec"]
    server = pod["containers"][0]
    assert server["command"] == ["localmodel-server"]
    assert server["args"] == [
        "--model-path=/models/model.gguf", "--served-name=qwen", "--aliases=llama3", "--context-size=2048",
        "--parallel=2", "--gpu-layers=0", "--drain-timeout=30", "--host=0.0.0.0", "--port=8000", "--queue-size=8"]
    assert {"name": "A", "value": "b"} in server["env"]
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800  # model loads may take long
    assert startup["periodSeconds"] == 1  # a woken pod is Ready within a second of its load
    prestop = server["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > prestop + SETTINGS.drain_timeout_s
    assert {"name": "weights", "mountPath": "/models", "readOnly": True} in server["volumeMounts"]
    assert pod["volumes"][0]["persistentVolumeClaim"] == {"claimName": "lm-qwen-weights", "readOnly": True}
    assert pod["automountServiceAccountToken"] is False
    assert "limits" not in server["resources"]
    assert server["resources"]["requests"]["memory"].endswith("Mi")
    assert "tolerations" not in pod and "nodeSelector" not in pod
    assert_hardened(pod)


def test_memory_request_is_derived_from_the_file_and_kv_cache_only_when_the_user_gave_none() -> None:
    lm = model({"source": HF_SOURCE, "parallel": 4}, {"gguf": GGUF})
    estimate = estimated_memory_bytes(lm.spec, lm.gguf)
    assert estimate is not None and estimate > GGUF["sizeBytes"]
    # more slots need a bigger KV cache
    wider = model({"source": HF_SOURCE, "parallel": 8}, {"gguf": GGUF})
    assert (estimated_memory_bytes(wider.spec, wider.gguf) or 0) > estimate
    deployment = build_server.deployment(lm, pulled(lm), SETTINGS)
    assert container(deployment)["resources"]["requests"]["memory"] == f"{-(-estimate // 2**20)}Mi"
    user = model({"source": HF_SOURCE, "resources": {"limits": {"memory": "3Gi"}}}, {"gguf": GGUF})
    assert container(build_server.deployment(user, pulled(user), SETTINGS))["resources"] == {
        "limits": {"memory": "3Gi"}}
    unknown = model()  # no GGUF metadata yet: no guess
    assert container(build_server.deployment(unknown, weights_for(HF_SOURCE), SETTINGS))["resources"] == {}


# --- server Deployment: GPU --------------------------------------------------------------


def test_gpu_deployment() -> None:
    lm = model({"source": HF_SOURCE, "gpu": {"count": 2, "resourceName": "nvidia.com/gpu"},
                "nodeSelector": {"gpu": "a100"}, "runtimeClassName": "nvidia", "priorityClassName": "high",
                "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"x": 1}}, "image": "registry.test/custom:9",
                "resources": {"requests": {"memory": "16Gi"}}})
    deployment = build_server.deployment(lm, weights_for(HF_SOURCE), SETTINGS)
    pod = deployment["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == "registry.test/custom:9"
    assert server["resources"] == {"requests": {"memory": "16Gi"}, "limits": {"nvidia.com/gpu": 2}}
    assert "--gpu-layers=-1" in server["args"]
    assert pod["nodeSelector"] == {"gpu": "a100"}
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["priorityClassName"] == "high"
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "dedicated", "operator": "Equal", "value": "llm", "effect": "NoSchedule"} in pod["tolerations"]
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}


def test_explicit_gpu_layers_and_other_gpu_vendors() -> None:
    lm = model({"source": HF_SOURCE, "gpu": {"count": 1, "resourceName": "amd.com/gpu"}, "gpuLayers": 12})
    server = container(build_server.deployment(lm, weights_for(HF_SOURCE), SETTINGS))
    assert "--gpu-layers=12" in server["args"]
    assert server["resources"]["limits"] == {"amd.com/gpu": 1}


def test_gpu_models_take_the_cluster_gpu_defaults_under_their_own() -> None:
    settings = SETTINGS.model_copy(update={
        "gpu_image": "registry.test/localmodel:cuda", "gpu_resource_name": "amd.com/gpu",
        "gpu_node_selector": {"gpu": "yes", "zone": "a"}, "gpu_runtime_class_name": "nvidia",
        "gpu_tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
    })
    lm = model({"source": HF_SOURCE, "gpu": {"count": 1}, "nodeSelector": {"zone": "b"}})
    pod = build_server.deployment(lm, weights_for(HF_SOURCE), settings)["spec"]["template"]["spec"]
    server = pod["containers"][0]
    assert server["image"] == "registry.test/localmodel:cuda"
    assert server["resources"]["limits"] == {"amd.com/gpu": 1}
    assert pod["nodeSelector"] == {"gpu": "yes", "zone": "b"}
    assert pod["runtimeClassName"] == "nvidia"
    assert {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert {"key": "amd.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    cpu = build_server.deployment(model(), weights_for(HF_SOURCE), settings)["spec"]["template"]["spec"]
    assert cpu["containers"][0]["image"] == SETTINGS.server_image
    assert "nodeSelector" not in cpu and "runtimeClassName" not in cpu


def test_service() -> None:
    service = build_server.service(model())
    assert service["metadata"]["name"] == "lm-qwen"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "localmodel-server", "localmodel.dev/model": "qwen"}
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]


# --- the plan ----------------------------------------------------------------------------


def test_a_new_model_gets_a_pull_job_and_no_server_yet() -> None:
    lm = model()
    children = desired_children(lm, None, SETTINGS, "20Gi")
    assert "Deployment" not in [c["kind"] for c in children.applied]
    assert children.job is not None
    assert children.job["metadata"]["name"] == meta.job_name("qwen", lm.spec.source.digest)


def test_weights_are_recorded_when_the_current_sources_job_succeeds() -> None:
    lm = model(status={"download": {"sha256": SHA}, "gguf": GGUF})
    name = meta.job_name("qwen", lm.spec.source.digest)
    assert current_weights(lm, None) is None
    assert current_weights(lm, job_state(finished_job(name, "Failed"))) is None
    weights = current_weights(lm, job_state(finished_job(name, "Complete")))
    assert weights == Weights(lm.spec.source.digest, lm.spec.source, SHA, lm.gguf)
    assert weights.to_status()["gguf"] == GGUF
    assert LocalModel.from_body({**model_body(), "status": {"weights": weights.to_status()}}).weights == weights
    assert desired_children(lm, weights, SETTINGS).job is None


def test_a_changed_source_keeps_serving_the_old_weights_until_the_new_pull_succeeds() -> None:
    old = {"url": "https://h.example/old.gguf"}
    old_weights = weights_for(old, gguf=model(status={"gguf": GGUF}).gguf)
    serving = build_server.deployment(model({"source": old}), old_weights, SETTINGS)
    # The new pull already reports the new file's metadata; the running pods must not notice.
    new_gguf = {**GGUF, "sizeBytes": 8 * 2**30, "parameters": 8_000_000_000}
    lm = model({"source": {"url": "https://h.example/new.gguf"}}, {"weights": old_weights.to_status(), "gguf": new_gguf})
    assert lm.weights == old_weights
    children = desired_children(lm, lm.weights, SETTINGS, "20Gi")
    deployment = next(c for c in children.applied if c["kind"] == "Deployment")
    assert deployment["spec"]["template"] == serving["spec"]["template"]
    assert children.job is not None and children.job["metadata"]["name"].endswith(lm.spec.source.digest)
    new_job = meta.job_name("qwen", lm.spec.source.digest)
    assert stale_jobs(lm, [meta.job_name("qwen", old_weights.digest), new_job]) == [
        meta.job_name("qwen", old_weights.digest)]
    rolled = current_weights(lm, job_state(finished_job(new_job, "Complete")))
    assert rolled is not None and rolled.digest == lm.spec.source.digest
    annotations = build_server.deployment(lm, rolled, SETTINGS)["spec"]["template"]["metadata"]["annotations"]
    assert annotations["localmodel.dev/weights"] == lm.spec.source.digest


@pytest.mark.parametrize("source", [{"oci": {"ref": "ghcr.io/acme/qwen:0.5b"}}, {"ollama": {"model": "qwen2.5:0.5b"}}])
def test_registry_sources_get_their_pull_secret_as_a_docker_config(source: dict) -> None:
    lm = model({"source": {**source, "secretRef": {"name": "regcred"}}})
    assert lm.spec.source.kind in ("oci", "ollama")
    assert lm.spec.source.summary() in ("oci:ghcr.io/acme/qwen:0.5b", "ollama:qwen2.5:0.5b")
    for job in (build_puller.job(lm, SETTINGS), build_puller.probe_job(lm, SETTINGS)):
        pull = container(job)
        args = pull["args"]
        assert json.loads(args[args.index("--source") + 1]) == source  # no secretRef in argv
        assert "envFrom" not in pull  # `.dockerconfigjson` is no variable name
        assert {"name": "DOCKER_CONFIG", "value": build_puller.DOCKER_CONFIG_DIR} in pull["env"]
        mount = next(m for m in pull["volumeMounts"] if m["mountPath"] == build_puller.DOCKER_CONFIG_DIR)
        volume = next(v for v in job["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
        assert mount["readOnly"] is True
        assert volume["secret"] == {"secretName": "regcred",
                                    "items": [{"key": ".dockerconfigjson", "path": "config.json"}]}
