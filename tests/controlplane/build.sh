#!/usr/bin/env bash
# Builds the test tools from the pinned Go modules in this folder:
#   controlplane  kube-apiserver + etcd (go.mod here), for the `controlplane` test tier
#   helm          the helm CLI (helm/go.mod), for the chart tests
#   cluster       kubelet, kube-controller-manager, kube-scheduler, kube-proxy, kubectl,
#                 CoreDNS and local-path-provisioner (hack/localcluster/*/go.mod), for
#                 the one-node local cluster; it also takes kube-apiserver and etcd from
#                 `controlplane`
# Usage: build.sh [controlplane] [helm] [cluster]      (no argument: controlplane and helm)
#
# Binaries go to $LOCALMODEL_TOOLS_DIR (default ~/.cache/localmodel/tools), in a
# folder named after the versions and a hash of go.mod + go.sum, so a version
# bump builds afresh and an unchanged checkout builds nothing. If
# KUBEBUILDER_ASSETS names a folder holding kube-apiserver and etcd (the envtest
# convention, e.g. from setup-envtest), those are used instead of building.
#
# stdout carries one `name=path` line per tool (read by tests/support/controlplane.py);
# progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools_dir="${LOCALMODEL_TOOLS_DIR:-$HOME/.cache/localmodel/tools}"
# -trimpath and -s -w make the binaries smaller and independent of the checkout path.
go_build=(go build -trimpath -buildvcs=false)

log() { echo "build.sh: $*" >&2; }

module_version() {  # module_version <go.mod> <module path>
    awk -v m="$2" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}

stamp() {  # stamp <module dir>: short hash of the files that decide what is built
    cat "$1/go.mod" "$1/go.sum" | sha256sum | cut -c1-12
}

# build_into <final dir> <function> [args]: runs <function> <tmp dir> [args] under a lock and
# moves the result into place only when it succeeded, so an interrupted build
# never leaves a half-filled folder that later runs would trust.
build_into() {
    local dest="$1" builder="$2"
    shift 2
    local lock
    mkdir -p "$tools_dir"
    exec {lock}>"$tools_dir/.build.lock"
    flock "$lock"
    if [[ ! -d "$dest" ]]; then
        if ! command -v go >/dev/null; then
            log "Go is not installed; it is needed to build $(basename "$dest")"
            flock -u "$lock"
            return 1
        fi
        local tmp
        tmp="$(mktemp -d "$tools_dir/.partial.XXXXXX")"
        chmod 755 "$tmp"
        if ! "$builder" "$tmp" "$@"; then
            rm -rf "$tmp"
            flock -u "$lock"
            return 1
        fi
        mv "$tmp" "$dest"
    fi
    flock -u "$lock"
}

build_controlplane_into() {
    local out="$1" k8s="$2"
    local minor="${k8s#v1.}"; minor="${minor%%.*}"
    # The apiserver reports this version on /version; helm and kubectl read it.
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
    log "building kube-apiserver $k8s and etcd (minutes with an empty Go build cache)"
    (cd "$here" &&
        "${go_build[@]}" -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver &&
        "${go_build[@]}" -ldflags "-s -w" -o "$out/etcd" go.etcd.io/etcd/server/v3)
}

build_helm_into() {
    local out="$1" helm="$2"
    log "building helm $helm"
    (cd "$here/helm" &&
        "${go_build[@]}" -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$helm" \
            -o "$out/helm" helm.sh/helm/v3/cmd/helm)
}

build_cluster_into() {
    local out="$1" k8s="$2" modules="$3"
    local minor="${k8s#v1.}"; minor="${minor%%.*}"
    local pkg=k8s.io/component-base/version
    local ldflags="-s -w -X $pkg.gitVersion=$k8s -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
    log "building the local cluster's binaries for $k8s (minutes with an empty Go build cache)"
    local cmd
    for cmd in kubelet kube-controller-manager kube-scheduler kube-proxy kubectl; do
        (cd "$modules/kube" && "${go_build[@]}" -ldflags "$ldflags" -o "$out/$cmd" "k8s.io/kubernetes/cmd/$cmd") ||
            return 1
    done
    (cd "$modules/coredns" && "${go_build[@]}" -ldflags "-s -w" -o "$out/coredns" .) &&
        (cd "$modules/local-path" && "${go_build[@]}" -ldflags "-s -w" \
            -o "$out/local-path-provisioner" github.com/rancher/local-path-provisioner)
}

cluster() {
    controlplane
    local modules="$here/../../hack/localcluster" k8s stamp_all dir
    k8s="$(module_version "$modules/kube/go.mod" k8s.io/kubernetes)"
    stamp_all="$(for m in kube coredns local-path; do stamp "$modules/$m"; done | sha256sum | cut -c1-12)"
    dir="$tools_dir/localcluster-k8s-$k8s-$stamp_all"
    build_into "$dir" build_cluster_into "$k8s" "$(cd "$modules" && pwd)"
    local cmd
    for cmd in kubelet kube-controller-manager kube-scheduler kube-proxy kubectl coredns local-path-provisioner; do
        echo "$cmd=$dir/$cmd"
    done
}

controlplane() {
    local assets="${KUBEBUILDER_ASSETS:-}"
    if [[ -n "$assets" && -x "$assets/kube-apiserver" && -x "$assets/etcd" ]]; then
        log "using KUBEBUILDER_ASSETS=$assets"
    else
        if [[ -n "$assets" ]]; then
            log "KUBEBUILDER_ASSETS=$assets lacks kube-apiserver or etcd; building them"
        fi
        local k8s etcd
        k8s="$(module_version "$here/go.mod" k8s.io/kubernetes)"
        etcd="$(module_version "$here/go.mod" go.etcd.io/etcd/server/v3)"
        assets="$tools_dir/controlplane-k8s-$k8s-etcd-$etcd-$(stamp "$here")"
        build_into "$assets" build_controlplane_into "$k8s"
    fi
    echo "kube-apiserver=$assets/kube-apiserver"
    echo "etcd=$assets/etcd"
}

helm() {
    local version dir
    version="$(module_version "$here/helm/go.mod" helm.sh/helm/v3)"
    dir="$tools_dir/helm-$version-$(stamp "$here/helm")"
    build_into "$dir" build_helm_into "$version"
    echo "helm=$dir/helm"
}

main() {
    local targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=(controlplane helm)
    for target in "${targets[@]}"; do
        case "$target" in
            controlplane) controlplane ;;
            helm) helm ;;
            cluster) cluster ;;
            *) log "unknown target '$target' (expected controlplane, helm or cluster)"; exit 2 ;;
        esac
    done
}

main "$@"
