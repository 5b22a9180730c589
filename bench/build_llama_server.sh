#!/usr/bin/env bash
# Builds llama.cpp's C++ llama-server from the sources vendored in the pinned
# llama-cpp-python sdist, as the upper reference for bench/server_throughput.py:
#
#   bench/build_llama_server.sh            # prints the binary's path (built once, ~15 min on 2 cores)
#   .venv/bin/python bench/server_throughput.py --llama-server "$(bench/build_llama_server.sh)"
#
# Extra CMake flags come from LLAMA_SERVER_CMAKE_ARGS, e.g. "-DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90";
# each set of flags gets its own build.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/.*"llama-cpp-python==\([^"]*\)".*/\1/p' pyproject.toml)
extra="${LLAMA_SERVER_CMAKE_ARGS:-}"
suffix=""
[[ -n "$extra" ]] && suffix="-$(printf '%s' "$extra" | sha256sum | cut -c1-12)"
root="${LOCALMODEL_TOOLS_DIR:-$HOME/.cache/localmodel/tools}/llama-server-$version$suffix"
binary="$root/src/vendor/llama.cpp/build/bin/llama-server"
if [[ ! -x "$binary" ]]; then
  mkdir -p "$root"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" "llama-cpp-python==$version" >&2
  rm -rf "$root/src" && mkdir -p "$root/src"
  tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$root/src" --strip-components=1
  cmake -S "$root/src/vendor/llama.cpp" -B "$root/src/vendor/llama.cpp/build" -DCMAKE_BUILD_TYPE=Release \
    -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON $extra >&2
  cmake --build "$root/src/vendor/llama.cpp/build" --target llama-server -j"$(nproc)" >&2
fi
echo "$binary"
