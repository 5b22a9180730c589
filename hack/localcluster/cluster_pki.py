"""The local cluster's certificates: one CA, the apiserver's serving certificate,
a client certificate per component (each its own Kubernetes identity, so RBAC
and the Node authorizer apply as in any cluster) and the ServiceAccount key.
Written once per cluster; `up` reuses them while they exist."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

import cluster_config as config
from tests.support.pki import certificate, private_pem, subject_name

DAYS = 30

# file stem -> (user, group): the identities of the components.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("localmodel-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", None),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kubelet": (f"system:node:{config.NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "coredns": (config.COREDNS_USER, None),
    "local-path-provisioner": (config.LOCAL_PATH_USER, None),
    # The apiserver's identity towards kubelet (logs, exec, port-forward).
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


def _serving_names() -> list[x509.GeneralName]:
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           f"kubernetes.default.svc.{config.CLUSTER_DOMAIN}"]
    ips = [config.NODE_IP, config.KUBERNETES_SERVICE_IP, ipaddress.ip_address("127.0.0.1")]
    return [*(x509.DNSName(name) for name in dns), *(x509.IPAddress(ip) for ip in ips)]


def _write(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)


def write_pki(directory: Path) -> None:
    """CA, serving and client certificates, and the ServiceAccount key pair, as
    <name>.crt / <name>.key (ca, apiserver, every CLIENTS stem, sa.key/sa.pub)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate(subject_name("localmodel-cluster-ca"), ca_key, None, ca_key, None, days=DAYS)
    _write(directory / "ca.key", private_pem(ca_key))
    _write(directory / "ca.crt", ca.public_bytes(serialization.Encoding.PEM))

    leaves = {"apiserver": (subject_name("kube-apiserver"), [ExtendedKeyUsageOID.SERVER_AUTH], _serving_names())}
    for stem, (user, group) in CLIENTS.items():
        leaves[stem] = (subject_name(user, group), [ExtendedKeyUsageOID.CLIENT_AUTH], [])
    for stem, (subject, usage, sans) in leaves.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = certificate(subject, key, ca, ca_key, usage, sans, days=DAYS)
        _write(directory / f"{stem}.key", private_pem(key))
        _write(directory / f"{stem}.crt", cert.public_bytes(serialization.Encoding.PEM))

    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write(directory / "sa.key", private_pem(sa_key))
    _write(directory / "sa.pub", sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
