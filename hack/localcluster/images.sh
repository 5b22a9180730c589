#!/usr/bin/env bash
# Builds the images the local cluster runs, with no image registry in reach:
#   base      Debian bookworm made by mmdebstrap from Debian packages (python3, libgomp1)
#   pause     the pod sandbox: a static C program (pause.c) in an empty image
#   busybox   Debian's busybox-static, for local-path-provisioner's helper pods
#   server    Dockerfile.server on the base, offline, from a wheelhouse built on this machine
#   operator  Dockerfile.operator on the base, from PyPI with the CA as a build secret
# Each is saved as a tarball in $LOCALMODEL_IMAGES_DIR (default
# ~/.cache/localmodel/images) for cluster.py to import into containerd.
#
# Usage: images.sh [base|pause|busybox|server|operator ...]   (no argument: all)
#
# Docker is a private dockerd (its own sockets and folders, no bridge and no
# iptables rules) that runs only while this script does. Set DOCKER_HOST to use
# an engine of your own instead. The server image's packages come from a
# wheelhouse built here with the host's trust store (a TLS-inspecting proxy's CA
# works as for any pip install), and the image builds with no network at all. The operator image takes the other way a proxied build has:
# pip in the build reaches PyPI with the CA handed over as a BuildKit secret.
# docs/install.md shows both.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${LOCALMODEL_CACHE_DIR:-$HOME/.cache/localmodel}"
images_dir="${LOCALMODEL_IMAGES_DIR:-$cache/images}"
# Python 3.11 with pip: the venv of `make install`, the same minor version as bookworm's python3.
python="${PYTHON:-$repo/.venv/bin/python}"
# The tags the chart is installed with (tests/e2e and e2e.sh use the same).
tag="${LOCALMODEL_IMAGE_TAG:-local}"
base_image="localhost/localmodel-base:bookworm"
# llama.cpp with runtime CPU dispatch, as llama.cpp's own images build it: one
# library per x86 level (AVX2, AVX-512, AMX ...), the best one chosen at start.
llama_cmake_args="${LOCALMODEL_IMAGE_CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON}"

log() { echo "images.sh: $*" >&2; }

# --- the private engine -------------------------------------------------------

engine_root="$cache/docker"
engine_run=/run/localmodel-images
dockerd_pid=""

start_engine() {
    if [[ -n "${DOCKER_HOST:-}" ]]; then
        return
    fi
    mkdir -p "$engine_root" "$engine_run"
    export DOCKER_HOST="unix://$engine_run/docker.sock"
    log "starting a private dockerd (log: $engine_run/dockerd.log)"
    dockerd --data-root "$engine_root/data" --exec-root "$engine_run/exec" \
        --pidfile "$engine_run/dockerd.pid" -H "$DOCKER_HOST" \
        --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
        >"$engine_run/dockerd.log" 2>&1 &
    dockerd_pid=$!
    trap stop_engine EXIT
    for _ in $(seq 60); do
        docker version >/dev/null 2>&1 && return
        kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$engine_run/dockerd.log" >&2; exit 1; }
        sleep 0.5
    done
    log "dockerd did not answer"; exit 1
}

stop_engine() {
    [[ -n "$dockerd_pid" ]] || return 0
    kill "$dockerd_pid" 2>/dev/null || true
    wait "$dockerd_pid" 2>/dev/null || true
    # dockerd's containerd and any mount it left under its folders.
    pkill -f "containerd --config $engine_run/exec" 2>/dev/null || true
    awk -v a="$engine_root" -v b="$engine_run" '$2 ~ "^"a || $2 ~ "^"b {print $2}' /proc/self/mounts \
        | sort -r | xargs -r -n1 umount -l
    rm -rf "$engine_run"
}

# Debian's docker.io ships BuildKit inside dockerd; the classic CLI reaches it.
docker_build() { DOCKER_BUILDKIT=1 /usr/bin/docker build "$@"; }

save() {  # save <image> <name>
    mkdir -p "$images_dir"
    docker save "$1" -o "$images_dir/.$2.tar.partial"
    mv "$images_dir/.$2.tar.partial" "$images_dir/$2.tar"
    log "saved $1 to $images_dir/$2.tar"
}

# --- images -------------------------------------------------------------------

# Kept once made: a new base would invalidate every layer above it. Set
# LOCALMODEL_REBUILD_BASE=1 to make it afresh (newer Debian packages).
build_base() {
    local rootfs
    if [[ "${LOCALMODEL_REBUILD_BASE:-}" != 1 ]] && docker image inspect "$base_image" >/dev/null 2>&1; then
        return
    fi
    rootfs="$(mktemp -d)"
    log "making the base image from Debian packages (about 2 minutes)"
    mmdebstrap --variant=minbase --include=python3,python3-venv,libgomp1,ca-certificates \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        bookworm "$rootfs/rootfs.tar" >&2
    docker import "$rootfs/rootfs.tar" "$base_image" >/dev/null
    rm -rf "$rootfs"
}

build_pause() {
    local dir
    dir="$(mktemp -d)"
    mkdir -p "$dir/root"
    gcc -static -O2 -o "$dir/root/pause" "$here/pause.c"
    tar -C "$dir/root" -c . | docker import -c 'ENTRYPOINT ["/pause"]' - localhost/pause:1 >/dev/null
    rm -rf "$dir"
    save localhost/pause:1 pause
}

build_busybox() {
    local dir
    dir="$(mktemp -d)"
    mkdir -p "$dir/root/bin"
    cp /bin/busybox "$dir/root/bin/busybox"
    for applet in sh mkdir rm rmdir chmod ls cat sleep; do ln -s busybox "$dir/root/bin/$applet"; done
    tar -C "$dir/root" -c . | docker import -c 'ENV PATH=/bin' - localhost/busybox:1 >/dev/null
    rm -rf "$dir"
    save localhost/busybox:1 busybox
}

# Wheels for everything pyproject's dependencies need, at constraints.txt's pins.
# llama-cpp-python is compiled with the image's CMake flags into a pip cache of
# its own, named after the flags: pip's wheel cache is keyed by the sdist alone,
# so sharing the host's would hand back the wheel built for this machine's CPU.
# (These flags leave GGML_BACKEND_DIR unset, so the CPU libraries install to
# site-packages/bin; engine/backends.py looks there as well as beside libllama.)
build_wheelhouse() {
    local wheelhouse="$repo/.wheelhouse" requirements flags_id
    flags_id="$(echo "$llama_cmake_args" | sha256sum | cut -c1-8)"
    requirements="$(mktemp)"
    "$python" -c "import tomllib; print('\n'.join(tomllib.load(open('$repo/pyproject.toml', 'rb'))['project']['dependencies']))" \
        >"$requirements"
    mkdir -p "$wheelhouse"
    log "building the wheelhouse (the first time compiles llama.cpp for every CPU level: long)"
    CMAKE_ARGS="$llama_cmake_args" PIP_CACHE_DIR="$cache/pip-image-cpu-$flags_id" \
        "$python" -m pip wheel --quiet -c "$repo/constraints.txt" -r "$requirements" -w "$wheelhouse" >&2
    # What the Dockerfiles' pip steps need besides: pip itself and the build backend.
    "$python" - "$repo/pyproject.toml" >"$requirements" <<'PY'
import sys, tomllib
print("pip==25.3")
print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["build-system"]["requires"]))
PY
    "$python" -m pip download --quiet -r "$requirements" -d "$wheelhouse" >&2
    rm -f "$requirements"
}

# Offline: no network in the build at all (--network=none), everything from the wheelhouse.
build_server() {
    build_wheelhouse
    docker_build -f "$repo/Dockerfile.server" -t "localmodel/localmodel:$tag" --network=none \
        --build-arg PYTHON_IMAGE="$base_image" --build-arg WHEELHOUSE=.wheelhouse "$repo" >&2
    save "localmodel/localmodel:$tag" server
}

# From PyPI, through the host's trust store handed over as the pip-ca secret: the
# path for builds behind a TLS-inspecting proxy. The engine has no bridge, so the
# build shares the host's network.
build_operator() {
    local ca="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
    docker_build -f "$repo/Dockerfile.operator" -t "localmodel/localmodel-operator:$tag" --network=host \
        --secret id=pip-ca,src="$ca" --build-arg PYTHON_IMAGE="$base_image" "$repo" >&2
    save "localmodel/localmodel-operator:$tag" operator
}

main() {
    local targets=("$@")
    [[ ${#targets[@]} -gt 0 ]] || targets=(base pause busybox server operator)
    start_engine
    for target in "${targets[@]}"; do
        case "$target" in
            base | pause | busybox | server | operator) ;;
            *) log "unknown image '$target'"; exit 2 ;;
        esac
        if [[ "$target" == server || "$target" == operator ]]; then
            build_base
        fi
        "build_$target"
    done
}

main "$@"
