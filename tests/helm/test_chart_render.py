"""The chart as `helm lint` and `helm template` see it, for every value set in charts/localmodel/ci/.

No cluster here: these check what the chart renders (hardening, RBAC taken from
the owned rules files, the CRD taken from crds/, settings the operator and the
router really read) and what its schema refuses. test_chart_apiserver.py sends
the same renders to a real apiserver.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from localmodel_operator.settings import OperatorSettings
from localmodel_server.router.main import parse_args as parse_router_args

from .chart import (
    CHART, CI_VALUES, CRD_FILE, OPERATOR, RELEASE_NAMESPACE, ROUTER, HelmFailed, containers, env, of_kind, one, render,
    rules_file, run_helm,
)

CI = {path.name.removesuffix("-values.yaml"): path for path in CI_VALUES}
CHART_LABELS = {"helm.sh/chart", "app.kubernetes.io/part-of", "app.kubernetes.io/managed-by",
                "app.kubernetes.io/version"}


@pytest.fixture(scope="module")
def renders() -> dict[str, list[dict[str, Any]]]:
    return {name: render([path]) for name, path in CI.items()}


def test_the_value_sets_cover_cpu_gpu_and_network_policy() -> None:
    assert {"default", "gpu", "networkpolicy"} <= set(CI)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda path: path.name)
def test_helm_lint_passes_strictly(values: Path) -> None:
    output = run_helm("lint", str(CHART), "--strict", "--values", str(values))
    assert "1 chart(s) linted, 0 chart(s) failed" in output


@pytest.mark.parametrize("name", sorted(CI))
def test_every_workload_runs_non_root_read_only_without_capabilities(
    renders: dict[str, list[dict[str, Any]]], name: str
) -> None:
    deployments = of_kind(renders[name], "Deployment")
    assert deployments
    for deployment in deployments:
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in containers(deployment):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, container["name"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
            # A read-only root needs somewhere to write temporary files.
            assert any(mount["mountPath"] == "/tmp" for mount in container["volumeMounts"])


# --- the CRD ------------------------------------------------------------------------------


def test_the_crd_is_the_repository_file_through_a_link() -> None:
    linked = CHART / "files" / "crds" / CRD_FILE.name
    assert linked.is_symlink() and linked.resolve() == CRD_FILE.resolve()


def test_the_rendered_crd_is_the_repository_crd_kept_on_uninstall(renders: dict[str, list[dict[str, Any]]]) -> None:
    rendered = one(renders["default"], "CustomResourceDefinition", "localmodels.localmodel.dev")
    source = yaml.safe_load(CRD_FILE.read_text())
    metadata = rendered.pop("metadata")
    source_metadata = source.pop("metadata")
    assert rendered == source  # spec and schema unchanged by the fromYaml/toYaml round trip
    assert metadata["annotations"] == {"helm.sh/resource-policy": "keep"}
    assert source_metadata["labels"].items() <= metadata["labels"].items()
    assert CHART_LABELS <= set(metadata["labels"])


def test_crds_can_be_left_out_or_deleted_with_the_release() -> None:
    assert not of_kind(render(sets=["crds.enabled=false"]), "CustomResourceDefinition")
    unkept = one(render(sets=["crds.keep=false"]), "CustomResourceDefinition", "localmodels.localmodel.dev")
    assert "annotations" not in unkept["metadata"]


def test_the_packaged_chart_carries_the_crd_content(tmp_path: Path) -> None:
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (package,) = tmp_path.glob("localmodel-*.tgz")
    with tarfile.open(package) as tar:
        member = tar.getmember(f"localmodel/files/crds/{CRD_FILE.name}")
        assert member.isfile()  # the link is resolved, so the package stands alone
        packaged = tar.extractfile(member)
        assert packaged is not None and packaged.read() == CRD_FILE.read_bytes()


# --- RBAC -----------------------------------------------------------------------------------


def test_cluster_wide_rbac_is_exactly_the_owned_rules_files(renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = renders["default"]
    for name, component in ((OPERATOR, "operator"), (ROUTER, "router")):
        assert one(objects, "ClusterRole", name)["rules"] == rules_file(component)
        binding = one(objects, "ClusterRoleBinding", name)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name}
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": RELEASE_NAMESPACE}]
        one(objects, "ServiceAccount", name, RELEASE_NAMESPACE)
    assert not of_kind(objects, "Role")


def test_watched_namespaces_get_roles_and_the_lease_role_stays_in_the_release_namespace(
    renders: dict[str, list[dict[str, Any]]]
) -> None:
    objects = renders["networkpolicy"]
    watched = yaml.safe_load(CI["networkpolicy"].read_text())["watchNamespaces"]
    assert not of_kind(objects, "ClusterRole") and not of_kind(objects, "ClusterRoleBinding")
    for namespace in watched:
        for name, component in ((OPERATOR, "operator"), (ROUTER, "router")):
            assert one(objects, "Role", name, namespace)["rules"] == rules_file(component)
            binding = one(objects, "RoleBinding", name, namespace)
            assert binding["subjects"] == [{"kind": "ServiceAccount", "name": name, "namespace": RELEASE_NAMESPACE}]
    lease_rules = [rule for rule in rules_file("operator") if "coordination.k8s.io" in rule["apiGroups"]]
    assert lease_rules
    assert one(objects, "Role", f"{OPERATOR}-leader-election", RELEASE_NAMESPACE)["rules"] == lease_rules
    assert not [role for role in of_kind(objects, "Role") if role["metadata"]["namespace"] == RELEASE_NAMESPACE
                and role["metadata"]["name"] != f"{OPERATOR}-leader-election"]


def test_no_lease_role_when_the_release_namespace_is_watched() -> None:
    objects = render(sets=[f"watchNamespaces={{{RELEASE_NAMESPACE}}}"])
    assert one(objects, "Role", OPERATOR, RELEASE_NAMESPACE)["rules"] == rules_file("operator")
    assert not [role for role in of_kind(objects, "Role") if role["metadata"]["name"].endswith("-leader-election")]


# --- settings the components really read ---------------------------------------------------------------


def operator_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = containers(one(objects, "Deployment", OPERATOR))
    return container


def operator_settings(objects: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> OperatorSettings:
    """OperatorSettings as the operator builds them from the rendered environment."""
    for name, value in env(operator_container(objects)).items():
        monkeypatch.setenv(name, value)
    return OperatorSettings()


def unknown_settings(objects: list[dict[str, Any]]) -> set[str]:
    names = {name for name in env(operator_container(objects)) if name.startswith("LOCALMODEL_")}
    known = {f"LOCALMODEL_{field.upper()}" for field in OperatorSettings.model_fields}
    return names - known


@pytest.mark.parametrize("name", sorted(CI))
def test_the_operator_reads_every_setting_the_chart_passes(renders: dict[str, list[dict[str, Any]]], name: str) -> None:
    assert unknown_settings(renders[name]) == set()


def test_operator_settings_from_the_default_values(
    renders: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = operator_settings(renders["default"], monkeypatch)
    assert settings.namespaces == []
    assert settings.server_image == "ghcr.io/localmodel/localmodel:0.1.0"
    assert settings.router_url == f"http://{ROUTER}.{RELEASE_NAMESPACE}.svc"
    assert settings.lease_name == OPERATOR
    assert (settings.default_storage_class, settings.default_storage_size) == ("", "20Gi")
    container = operator_container(renders["default"])
    assert container["command"] == ["localmodel-operator"]
    assert {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}} in container["env"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert container["ports"] == [{"name": "health", "containerPort": settings.health_port, "protocol": "TCP"}]


def test_operator_settings_from_the_gpu_and_namespaced_values(
    renders: dict[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = operator_settings(renders["networkpolicy"], monkeypatch)
    assert settings.namespaces == ["lm-ci-models-a", "lm-ci-models-b"]
    gpu = env(operator_container(renders["gpu"]))
    assert gpu["LOCALMODEL_DEFAULT_STORAGE_CLASS"] == "fast-ssd"
    assert gpu["LOCALMODEL_GPU_IMAGE"] == "ghcr.io/localmodel/localmodel:0.1.0-cuda12"
    assert json.loads(gpu["LOCALMODEL_GPU_NODE_SELECTOR"]) == {"nvidia.com/gpu.present": "true"}
    assert json.loads(gpu["LOCALMODEL_GPU_TOLERATIONS"])[0]["key"] == "dedicated"
    assert gpu["LOCALMODEL_GPU_RUNTIME_CLASS_NAME"] == "nvidia"
    assert env(operator_container(renders["default"]))["LOCALMODEL_GPU_IMAGE"] == \
        "ghcr.io/localmodel/localmodel:0.1.0-cuda"


def test_images_by_digest(renders: dict[str, list[dict[str, Any]]]) -> None:
    container = operator_container(renders["exposed"])
    assert container["image"].startswith("registry.example.com/localmodel/localmodel-operator@sha256:")
    assert env(container)["LOCALMODEL_SERVER_IMAGE"].startswith("registry.example.com/localmodel/localmodel@sha256:")
    assert router_container(renders["exposed"])["image"] == env(container)["LOCALMODEL_SERVER_IMAGE"]


def router_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (container,) = containers(one(objects, "Deployment", ROUTER))
    return container


def test_router_arguments_parse_and_watch_the_namespaces(renders: dict[str, list[dict[str, Any]]]) -> None:
    default = parse_router_args(router_container(renders["default"])["args"])
    assert default.kubernetes and default.namespace == [] and default.api_keys_file is None
    namespaced = parse_router_args(router_container(renders["networkpolicy"])["args"])
    assert namespaced.namespace == ["lm-ci-models-a", "lm-ci-models-b"]
    container = router_container(renders["default"])
    assert container["command"] == ["localmodel-router"]
    assert container["ports"] == [{"name": "http", "containerPort": default.port, "protocol": "TCP"}]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    service = one(renders["default"], "Service", ROUTER)
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert one(renders["default"], "PodDisruptionBudget", ROUTER)["spec"]["maxUnavailable"] == 1


def test_api_keys_live_in_a_mounted_secret(renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = renders["exposed"]
    secret = one(objects, "Secret", f"{ROUTER}-api-keys")
    keys = yaml.safe_load(CI["exposed"].read_text())["router"]["apiKeys"]["keys"]
    assert secret["stringData"]["api-keys"].split() == keys
    container = router_container(objects)
    args = parse_router_args(container["args"])
    assert str(args.api_keys_file) == "/etc/localmodel/api-keys/keys"
    assert not [var for var in container.get("env", []) if "KEY" in var["name"]]  # never in the environment
    volumes = one(objects, "Deployment", ROUTER)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": f"{ROUTER}-api-keys",
                                           "items": [{"key": "api-keys", "path": "keys"}]}} in volumes


def test_an_existing_api_key_secret_is_mounted_not_created() -> None:
    objects = render(sets=["router.apiKeys.existingSecret=my-keys", "router.apiKeys.existingSecretKey=tokens"])
    assert not of_kind(objects, "Secret")
    volumes = one(objects, "Deployment", ROUTER)["spec"]["template"]["spec"]["volumes"]
    assert {"name": "api-keys", "secret": {"secretName": "my-keys", "items": [{"key": "tokens", "path": "keys"}]}} \
        in volumes


def test_the_ingress_and_service_monitors_point_at_the_router_and_the_model_servers(
    renders: dict[str, list[dict[str, Any]]]
) -> None:
    objects = renders["exposed"]
    ingress = one(objects, "Ingress", ROUTER)
    (rule,) = ingress["spec"]["rules"]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"] == {"service": {"name": ROUTER, "port": {"name": "http"}}}
    monitors = {m["metadata"]["name"]: m for m in of_kind(objects, "ServiceMonitor")}
    assert monitors[ROUTER]["metadata"]["labels"]["release"] == "prometheus"
    models = monitors["lm-localmodel-models"]["spec"]
    assert models["namespaceSelector"] == {"any": True}
    assert models["selector"]["matchLabels"]["app.kubernetes.io/name"] == "localmodel-server"
    assert models["endpoints"][0]["port"] == "http"


def test_network_policies_admit_only_the_router_to_model_servers(renders: dict[str, list[dict[str, Any]]]) -> None:
    objects = renders["networkpolicy"]
    operator = one(objects, "NetworkPolicy", OPERATOR, RELEASE_NAMESPACE)["spec"]
    assert operator["policyTypes"] == ["Ingress"] and "ingress" not in operator  # deny all
    router = one(objects, "NetworkPolicy", ROUTER, RELEASE_NAMESPACE)["spec"]
    (rule,) = router["ingress"]
    allowed = rule["from"][0]["namespaceSelector"]["matchExpressions"][0]
    assert allowed["key"] == "kubernetes.io/metadata.name" and allowed["operator"] == "In"
    assert allowed["values"] == [RELEASE_NAMESPACE, "lm-ci-apps", "lm-ci-monitoring"]
    assert rule["from"][1]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingress-nginx"}
    for namespace in ("lm-ci-models-a", "lm-ci-models-b"):
        models = one(objects, "NetworkPolicy", "lm-localmodel-models", namespace)["spec"]
        assert models["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "localmodel-operator"}}
        (rule,) = models["ingress"]
        assert rule["ports"] == [{"port": 8000, "protocol": "TCP"}]
        from_router, from_metrics = rule["from"]
        assert from_router["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": RELEASE_NAMESPACE}}
        assert from_router["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "router"
        assert from_metrics["namespaceSelector"]["matchExpressions"][0]["values"] == ["lm-ci-monitoring"]


# --- values the chart refuses ------------------------------------------------------------------


@pytest.mark.parametrize(("assignment", "message"), [
    ("operator.replicas=-1", "at '/operator/replicas': minimum: got -1, want 0"),
    ("router.replicas=two", "at '/router/replicas': got string, want integer"),
    ("gpu.resourceName=gpu", "at '/gpu/resourceName': 'gpu' does not match pattern"),
    ("gpu.resourceName=nvidia.com/gpu!", "at '/gpu/resourceName'"),
    ("watchNamespaces={Models}", "at '/watchNamespaces/0': 'Models' does not match pattern"),
    ("images.pullPolicy=Sometimes", "at '/images/pullPolicy'"),
    ("images.server.digest=sha256:123", "at '/images/server/digest'"),
    ("models.storageSize=lots", "at '/models/storageSize'"),
    ("models.pull.ttlSeconds=5", "at '/models/pull/ttlSeconds': minimum: got 5, want 60"),
    ("router.service.port=70000", "at '/router/service/port': maximum: got 70,000, want 65,535"),
    ("router.apiKeys.keys={short}", "at '/router/apiKeys/keys/0': minLength: got 5, want 16"),
    ("router.podDisruptionBudget.maxUnavailable=0", "at '/router/podDisruptionBudget/maxUnavailable'"),
    ("router.replica=2", "at '/router': additional properties 'replica' not allowed"),
    ("operator.resources.limits.memory=lots", "at '/operator/resources/limits/memory'"),
])
def test_the_schema_rejects_bad_values_naming_the_field(assignment: str, message: str) -> None:
    with pytest.raises(HelmFailed) as failure:
        render(sets=[assignment])
    assert "values don't meet the specifications of the schema" in str(failure.value)
    assert message in str(failure.value)


@pytest.mark.parametrize(("assignments", "message"), [
    (["networkPolicy.enabled=true"], "networkPolicy.enabled needs watchNamespaces"),
    (["router.enabled=false", "router.ingress.enabled=true"], "router.ingress.enabled needs router.enabled"),
])
def test_contradicting_values_fail_with_a_reason(assignments: list[str], message: str) -> None:
    with pytest.raises(HelmFailed, match=message):
        render(sets=assignments)
