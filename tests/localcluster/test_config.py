"""The local cluster's configuration (hack/localcluster/cluster_config.py), checked without starting it."""

from __future__ import annotations

import json
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack" / "localcluster"))

import cluster_config as config  # noqa: E402

LAYOUT = config.Layout(Path("/var/lib/localmodel-cluster"))
BIN = Path("/tools/bin")


def test_addresses_are_private_and_apart() -> None:
    assert config.POD_CIDR.is_private and config.SERVICE_CIDR.is_private
    assert not config.POD_CIDR.overlaps(config.SERVICE_CIDR)
    assert config.NODE_IP in config.POD_CIDR
    assert {config.KUBERNETES_SERVICE_IP, config.DNS_SERVICE_IP} <= set(config.SERVICE_CIDR.hosts())


def test_containerd_keeps_to_its_own_folders_and_restricts_oom_score_adj() -> None:
    document = tomllib.loads(config.containerd_config(LAYOUT))
    cri = document["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == config.PAUSE_IMAGE
    for path in (document["root"], document["state"], document["grpc"]["address"], cri["cni"]["conf_dir"]):
        assert Path(path).is_relative_to(LAYOUT.state), path


def test_kubelet_accepts_cgroup_v1_and_points_pods_at_the_dns_service() -> None:
    kubelet = config.kubelet_config(LAYOUT)
    assert kubelet["failCgroupV1"] is False
    assert kubelet["clusterDNS"] == [str(config.DNS_SERVICE_IP)]
    assert kubelet["authentication"]["anonymous"]["enabled"] is False
    assert kubelet["authorization"]["mode"] == "Webhook"


def test_the_bridge_serves_the_pod_range_with_the_node_as_gateway() -> None:
    bridge = config.cni_conflist(LAYOUT)["plugins"][0]
    assert bridge["bridge"] == config.BRIDGE and bridge["isGateway"]
    assert bridge["ipam"]["ranges"] == [[{"subnet": str(config.POD_CIDR), "gateway": str(config.NODE_IP)}]]
    # No NAT rules of the plugin's own: nothing for `down` to find left behind.
    assert bridge["ipMasq"] is False


@pytest.mark.parametrize("render", [
    config.etcd_args, config.apiserver_args, config.controller_manager_args, config.scheduler_args,
    config.kubelet_args, config.kube_proxy_args, config.coredns_args, config.local_path_args,
])
def test_every_file_a_component_is_given_lives_in_the_cluster_folder(render) -> None:
    args = render(BIN / "x", LAYOUT)
    paths = [value for arg in args[1:] for value in arg.split("=", 1)[-1:] if value.startswith("/")]
    assert paths, f"{render.__name__} names no file"
    for path in paths:
        assert Path(path).is_relative_to(LAYOUT.state), f"{render.__name__}: {path}"


def test_the_apiserver_authorizes_nodes_and_rbac() -> None:
    args = config.apiserver_args(BIN / "kube-apiserver", LAYOUT)
    assert "--authorization-mode=Node,RBAC" in args
    assert f"--service-cluster-ip-range={config.SERVICE_CIDR}" in args


def test_addons_have_a_default_storage_class_and_enumerated_rbac() -> None:
    manifests = config.addon_manifests(LAYOUT)
    classes = [m for m in manifests if m["kind"] == "StorageClass"]
    assert classes[0]["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    for role in (m for m in manifests if m["kind"] == "ClusterRole"):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], role["metadata"]["name"]
    configmap = next(m for m in manifests if m["kind"] == "ConfigMap")
    paths = json.loads(configmap["data"]["config.json"])["nodePathMap"][0]["paths"]
    assert paths == [str(LAYOUT.volumes)]
    yaml.safe_load(configmap["data"]["helperPod.yaml"])


def test_dns_service_is_backed_by_the_node() -> None:
    manifests = config.addon_manifests(LAYOUT)
    service = next(m for m in manifests if m["kind"] == "Service")
    endpoints = next(m for m in manifests if m["kind"] == "EndpointSlice")
    assert service["spec"]["clusterIP"] == str(config.DNS_SERVICE_IP)
    assert endpoints["metadata"]["labels"]["kubernetes.io/service-name"] == service["metadata"]["name"]
    assert endpoints["endpoints"][0]["addresses"] == [str(config.NODE_IP)]
    assert f"bind {config.NODE_IP}" in config.corefile(LAYOUT)
