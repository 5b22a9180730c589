#!/usr/bin/env bash
# The localmodel loop on a laptop's kind cluster:
#   1. create a kind cluster (hack/kind/cluster.yaml)
#   2. build both images (Dockerfile.server, Dockerfile.operator) and load them into kind
#   3-7. run tests/e2e against it, the tier hack/localcluster/e2e.sh runs on the local
#        cluster: helm install, serve generated GGUF weights from this machine over HTTP
#        (no internet needed inside kind), LocalModels, OpenAI calls from a pod, faults,
#        security checks, helm uninstall
#   8. delete the cluster
#
# Usage: hack/kind/e2e.sh [all|up|test|down]      (default: all; KEEP_CLUSTER=1 keeps it after `all`)
# Needs docker, kind, kubectl and the project's venv (make install).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cluster="${KIND_CLUSTER_NAME:-localmodel}"
kubeconfig="${KIND_KUBECONFIG:-$root/.cache/kind/kubeconfig-$cluster}"
server_image="${LOCALMODEL_E2E_SERVER_IMAGE:-localmodel:e2e}"
operator_image="${LOCALMODEL_E2E_OPERATOR_IMAGE:-localmodel-operator:e2e}"

log() { echo "e2e.sh: $*" >&2; }

need() {  # need <command> <why>
    command -v "$1" >/dev/null || { log "$1 is required ($2)"; exit 2; }
}

cluster_exists() {
    kind get clusters 2>/dev/null | grep -qx "$cluster"
}

up() {
    need docker "builds the images"
    need kind "runs the cluster: https://kind.sigs.k8s.io"
    mkdir -p "$(dirname "$kubeconfig")"
    if cluster_exists; then
        log "cluster $cluster exists; reusing it"
        kind export kubeconfig --name "$cluster" --kubeconfig "$kubeconfig"
    else
        local node_image=()
        [[ -n "${KIND_NODE_IMAGE:-}" ]] && node_image=(--image "$KIND_NODE_IMAGE")
        kind create cluster --name "$cluster" --config "$root/hack/kind/cluster.yaml" \
            --kubeconfig "$kubeconfig" --wait 120s ${node_image[@]+"${node_image[@]}"}
    fi
    log "building $server_image (compiles llama.cpp the first time) and $operator_image"
    docker build -f "$root/Dockerfile.server" -t "$server_image" "$root"
    docker build -f "$root/Dockerfile.operator" -t "$operator_image" "$root"
    kind load docker-image --name "$cluster" "$server_image" "$operator_image"
}

run_tests() {
    need kubectl "port-forwards the router"
    [[ -x "$root/.venv/bin/pytest" ]] || make -C "$root" install
    log "running tests/e2e against kind-$cluster"
    (cd "$root" && KUBECONFIG="$kubeconfig" LOCALMODEL_E2E=1 \
        LOCALMODEL_E2E_SERVER_IMAGE="$server_image" LOCALMODEL_E2E_OPERATOR_IMAGE="$operator_image" \
        .venv/bin/pytest -m e2e tests/e2e -v -p no:cacheprovider)
}

down() {
    need kind "deletes the cluster"
    kind delete cluster --name "$cluster" --kubeconfig "$kubeconfig"
}

main() {
    case "${1:-all}" in
        up) up ;;
        test) run_tests ;;
        down) down ;;
        all)
            up
            [[ "${KEEP_CLUSTER:-}" == 1 ]] || trap down EXIT
            run_tests
            ;;
        *) log "unknown step '$1' (expected all, up, test or down)"; exit 2 ;;
    esac
}

main "$@"
