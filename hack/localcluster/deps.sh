#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs, if any is missing (root):
# containerd and runc (the runtime), the CNI plugins (pod network), iptables and
# conntrack (kube-proxy), docker.io (image builds; its dockerd runs only while
# images.sh does), mmdebstrap (the base image) and busybox-static (a helper image).
set -euo pipefail

packages=(containerd runc containernetworking-plugins iptables conntrack docker.io mmdebstrap busybox-static)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [[ ${#missing[@]} -eq 0 ]]; then
    exit 0
fi
echo "deps.sh: installing ${missing[*]}" >&2
if [[ "$(id -u)" != 0 ]]; then
    echo "deps.sh: run as root (apt-get install ${missing[*]})" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
