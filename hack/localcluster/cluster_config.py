"""What the one-node local cluster is made of: addresses, folders, command lines
and configuration files, computed from a `Layout` with no I/O.

cluster.py starts and stops the processes; everything it writes or runs is
decided here, so the settings that are particular to this kind of machine are
in one place and named:
- `failCgroupV1: false`: the machine has cgroup v1, which kubelet refuses
  unless told (support ends no earlier than Kubernetes 1.38);
- containerd's `restrict_oom_score_adj = true`: the sandbox may not lower
  `oom_score_adj`, and runc fails without it;
- relaxed eviction thresholds and no local-storage isolation: kubelet cannot
  stat the image filesystem on this machine's disk.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_NAME = "localmodel-node"
BRIDGE = "lmc0"
# Private ranges used by nothing else on the machine; cluster.py checks the
# routing table before it takes them.
POD_CIDR = ipaddress.ip_network("10.213.0.0/24")
SERVICE_CIDR = ipaddress.ip_network("10.213.128.0/24")
# The bridge's own address is the node's: pods reach the apiserver, CoreDNS and
# any server a test runs on the node (model files, registries) there.
NODE_IP = POD_CIDR[1]
KUBERNETES_SERVICE_IP = SERVICE_CIDR[1]
DNS_SERVICE_IP = SERVICE_CIDR[10]
CLUSTER_DOMAIN = "cluster.local"
APISERVER_PORT = 6443
ETCD_CLIENT_PORT = 23790
ETCD_PEER_PORT = 23800
COREDNS_PORT = 53
STORAGE_CLASS = "local-path"
# Images that cluster.py imports into containerd (hack/localcluster/images.sh).
PAUSE_IMAGE = "localhost/pause:1"
BUSYBOX_IMAGE = "localhost/busybox:1"


@dataclass(frozen=True)
class Layout:
    """The folders of one cluster: everything under `state` is removed by `down`."""

    state: Path

    @property
    def run(self) -> Path:
        return self.state / "run"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def containerd_socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        return self.state / "cni" / "net.d"

    @property
    def kubelet_dir(self) -> Path:
        return self.state / "kubelet"

    @property
    def volumes(self) -> Path:
        """Where local-path-provisioner makes each claim's folder."""
        return self.state / "volumes"

    def kubeconfig(self, user: str) -> Path:
        return self.state / "kubeconfigs" / f"{user}.yaml"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kubeconfig("admin")


def server_url() -> str:
    return f"https://{NODE_IP}:{APISERVER_PORT}"


def kubeconfig(ca_pem: bytes, cert_pem: bytes, key_pem: bytes, user: str) -> dict[str, Any]:
    import base64

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "localmodel", "cluster": {
            "server": server_url(), "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": "localmodel", "context": {"cluster": "localmodel", "user": user}}],
        "current-context": "localmodel",
    }


# --- containerd and CNI ---------------------------------------------------------


def containerd_config(layout: Layout) -> str:
    """containerd's own instance for the CRI: its own root, state and socket."""
    return f"""version = 2
root = "{layout.state / 'containerd' / 'root'}"
state = "{layout.run / 'containerd'}"
[grpc]
  address = "{layout.containerd_socket}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # The sandbox may not lower oom_score_adj; runc fails without this.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{layout.cni_conf_dir}"
"""


def cni_conflist(layout: Layout) -> dict[str, Any]:
    """Pods on one bridge whose gateway is the node; no NAT, as traffic stays on the node."""
    return {
        "cniVersion": "0.4.0",
        "name": "localmodel",
        "plugins": [{
            "type": "bridge",
            "bridge": BRIDGE,
            "isGateway": True,
            "ipMasq": False,
            # A pod may reach itself through its own Service.
            "hairpinMode": True,
            "ipam": {
                "type": "host-local",
                "dataDir": str(layout.state / "cni" / "ipam"),
                "ranges": [[{"subnet": str(POD_CIDR), "gateway": str(NODE_IP)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    }


# --- control plane ----------------------------------------------------------------


def etcd_args(etcd: Path, layout: Layout) -> list[str]:
    client = f"http://127.0.0.1:{ETCD_CLIENT_PORT}"
    peer = f"http://127.0.0.1:{ETCD_PEER_PORT}"
    return [
        str(etcd), f"--data-dir={layout.state / 'etcd'}", "--name=default",
        f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}", "--log-level=warn",
    ]


def apiserver_args(apiserver: Path, layout: Layout) -> list[str]:
    pki = layout.pki
    return [
        str(apiserver), f"--bind-address={NODE_IP}", f"--advertise-address={NODE_IP}",
        f"--secure-port={APISERVER_PORT}", f"--cert-dir={layout.state / 'apiserver'}",
        f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
        f"--client-ca-file={pki / 'ca.crt'}", f"--etcd-servers=http://127.0.0.1:{ETCD_CLIENT_PORT}",
        "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
        f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
        f"--service-account-key-file={pki / 'sa.pub'}",
        f"--service-account-signing-key-file={pki / 'sa.key'}",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allow-privileged=true",
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def controller_manager_args(binary: Path, layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig("kube-controller-manager")
    return [
        str(binary), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        f"--service-account-private-key-file={layout.pki / 'sa.key'}",
        f"--root-ca-file={layout.pki / 'ca.crt'}",
        f"--cluster-signing-cert-file={layout.pki / 'ca.crt'}",
        f"--cluster-signing-key-file={layout.pki / 'ca.key'}",
        "--use-service-account-credentials=true", "--leader-elect=false",
        f"--service-cluster-ip-range={SERVICE_CIDR}", "--allocate-node-cidrs=false",
        "--secure-port=0",
    ]


def scheduler_args(binary: Path, layout: Layout) -> list[str]:
    kubeconfig = layout.kubeconfig("kube-scheduler")
    return [
        str(binary), f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}",
        "--leader-elect=false", "--secure-port=0",
    ]


# --- node --------------------------------------------------------------------------


def kubelet_config(layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine has cgroup v1; kubelet refuses it unless told.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "address": str(NODE_IP),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [str(DNS_SERVICE_IP)],
        "clusterDomain": CLUSTER_DOMAIN,
        "failSwapOn": False,
        "enforceNodeAllocatable": [],
        # The eviction manager cannot stat this disk's image filesystem.
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "localStorageCapacityIsolation": False,
        "imageGCHighThresholdPercent": 100,
        "serializeImagePulls": False,
        "maxPods": 60,
        "resolvConf": "/etc/resolv.conf",
    }


def kubelet_args(binary: Path, layout: Layout) -> list[str]:
    return [
        str(binary), f"--config={layout.state / 'kubelet.yaml'}",
        f"--kubeconfig={layout.kubeconfig('kubelet')}", f"--root-dir={layout.kubelet_dir}",
        f"--hostname-override={NODE_NAME}", f"--node-ip={NODE_IP}",
    ]


def kube_proxy_config(layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(layout.kubeconfig("kube-proxy"))},
        "hostnameOverride": NODE_NAME,
        "clusterCIDR": str(POD_CIDR),
        # NodePorts on the node's bridge address only, never on the machine's own network.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        "bindAddress": str(NODE_IP),
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        # Traffic to a Service is rewritten to a pod on the same bridge; masquerading it
        # makes the reply come back through the node, whatever br_netfilter does.
        "iptables": {"masqueradeAll": True},
    }


def kube_proxy_args(binary: Path, layout: Layout) -> list[str]:
    return [str(binary), f"--config={layout.state / 'kube-proxy.yaml'}"]


# --- add-ons run on the node -------------------------------------------------------


def corefile(layout: Layout) -> str:
    """CoreDNS on the node's address, answering for Services and forwarding the rest."""
    return f""".:{COREDNS_PORT} {{
    bind {NODE_IP}
    errors
    health 127.0.0.1:18080
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {layout.kubeconfig('coredns')} localmodel
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    forward . /etc/resolv.conf
    cache 30
    loop
}}
"""


def coredns_args(binary: Path, layout: Layout) -> list[str]:
    return [str(binary), "-conf", str(layout.state / "Corefile")]


# The identities of the add-ons that run on the node, each with its own client
# certificate and only the rules its upstream manifests grant.
COREDNS_USER = "system:localcluster:coredns"
LOCAL_PATH_USER = "system:localcluster:local-path-provisioner"
LOCAL_PATH_CONFIGMAP = "local-path-config"


def local_path_args(binary: Path, layout: Layout) -> list[str]:
    return [
        str(binary), "start", f"--kubeconfig={layout.kubeconfig('local-path-provisioner')}",
        "--namespace=kube-system", "--service-account-name=local-path-provisioner",
        f"--configmap-name={LOCAL_PATH_CONFIGMAP}", f"--helper-image={BUSYBOX_IMAGE}",
        f"--provisioner-name=rancher.io/{STORAGE_CLASS}",
    ]


def _local_path_configmap(layout: Layout) -> dict[str, Any]:
    """As upstream's deploy/local-path-storage.yaml, with folders under `state`."""
    helper_pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
        "spec": {"containers": [{"name": "helper-pod", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never"}]},
    }
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [str(layout.volumes)]}]}
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": LOCAL_PATH_CONFIGMAP, "namespace": "kube-system"},
        "data": {
            "config.json": json.dumps(config),
            # 0777: pods run as any non-root uid and write into their claim.
            "setup": '#!/bin/sh\nset -eu\nmkdir -m 0777 -p "$VOL_DIR"\n',
            "teardown": '#!/bin/sh\nset -eu\nrm -rf "$VOL_DIR"\n',
            "helperPod.yaml": json.dumps(helper_pod),
        },
    }


def _cluster_role(name: str, user: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": name}, "rules": rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": name},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    ]


def addon_manifests(layout: Layout) -> list[dict[str, Any]]:
    """What the add-ons need in the API: DNS's Service (backed by CoreDNS on the node),
    the default StorageClass, the provisioner's ConfigMap and ServiceAccount, and RBAC."""
    read = ["get", "list", "watch"]
    return [
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns", "namespace": "kube-system",
                      "labels": {"k8s-app": "kube-dns"}},
         "spec": {"clusterIP": str(DNS_SERVICE_IP),
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": COREDNS_PORT},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": COREDNS_PORT}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "kube-dns-node", "namespace": "kube-system",
                      "labels": {"kubernetes.io/service-name": "kube-dns",
                                 "endpointslice.kubernetes.io/managed-by": "localcluster.localmodel.dev"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [str(NODE_IP)], "conditions": {"ready": True}}],
         "ports": [{"name": "dns", "port": COREDNS_PORT, "protocol": "UDP"},
                   {"name": "dns-tcp", "port": COREDNS_PORT, "protocol": "TCP"}]},
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS,
                      "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": f"rancher.io/{STORAGE_CLASS}",
         "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "local-path-provisioner", "namespace": "kube-system"}},
        _local_path_configmap(layout),
        *_cluster_role("localcluster:coredns", COREDNS_USER, [
            {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"], "verbs": ["list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ]),
        *_cluster_role("localcluster:local-path-provisioner", LOCAL_PATH_USER, [
            {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods/log"], "verbs": read},
            {"apiGroups": [""], "resources": ["pods"], "verbs": [*read, "create", "patch", "update", "delete"]},
            {"apiGroups": [""], "resources": ["persistentvolumes"], "verbs": [*read, "create", "patch", "update", "delete"]},
            {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
            {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": read},
        ]),
    ]


def dump(document: dict[str, Any]) -> str:
    """JSON is YAML: every file here is read by a YAML or JSON parser."""
    return json.dumps(document, indent=2) + "\n"
