#!/usr/bin/env bash
# The e2e tier on the one-node local cluster, as CI runs it:
#   1. install the Debian packages if missing (deps.sh), build the images (images.sh;
#      cached, a warm rebuild compiles nothing)
#   2. bring the cluster up (cluster.py up; reused if it runs)
#   3. run tests/e2e against it: helm install with the local images, LocalModels
#      whose weights this machine serves on the node's address, OpenAI calls from a
#      pod, faults and security checks
#   4. take the cluster down (KEEP_CLUSTER=1 keeps it)
#
# Usage: hack/localcluster/e2e.sh [all|up|test|down]   (default: all). Run as root.
# hack/kind/e2e.sh runs the same tests on a kind cluster.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="$root/.venv/bin/python"
tag="${LOCALMODEL_IMAGE_TAG:-local}"

log() { echo "e2e.sh: $*" >&2; }

up() {
    [[ -x "$python" ]] || make -C "$root" install
    "$here/deps.sh"
    "$here/images.sh"
    "$python" "$here/cluster.py" up
}

run_tests() {
    local kubeconfig tools
    kubeconfig="$("$python" "$here/cluster.py" env | sed 's/^export KUBECONFIG=//')"
    # kubectl and helm from the cached builds, ahead of any on PATH.
    tools="$("$root/tests/controlplane/build.sh" cluster helm | sed -n 's/^\(kubectl\|helm\)=\(.*\)\/[^/]*$/\2/p' | sort -u | tr '\n' ':')"
    log "running tests/e2e against the local cluster"
    (cd "$root" && PATH="$tools$PATH" KUBECONFIG="$kubeconfig" LOCALMODEL_E2E=1 \
        LOCALMODEL_E2E_HOST="$("$python" -c 'import sys; sys.path.insert(0, "hack/localcluster"); import cluster_config as c; print(c.NODE_IP)')" \
        LOCALMODEL_E2E_SERVER_IMAGE="localmodel/localmodel:$tag" \
        LOCALMODEL_E2E_OPERATOR_IMAGE="localmodel/localmodel-operator:$tag" \
        "$root/.venv/bin/pytest" -m e2e tests/e2e -v -p no:cacheprovider "$@")
}

down() {
    "$python" "$here/cluster.py" down
}

main() {
    local step="${1:-all}"
    shift || true
    case "$step" in
        up) up ;;
        test) run_tests "$@" ;;
        down) down ;;
        all)
            up
            [[ "${KEEP_CLUSTER:-}" == 1 ]] || trap down EXIT
            run_tests "$@"
            ;;
        *) log "unknown step '$step' (expected all, up, test or down)"; exit 2 ;;
    esac
}

main "$@"
