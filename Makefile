# Set-up and test entry points. The README names `make run` and `make test`;
# .ci/run calls `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Built tools (kube-apiserver, etcd, helm) live outside the repo so that a
# fresh clone on the same machine reuses them.
export LOCALMODEL_TOOLS_DIR ?= $(HOME)/.cache/localmodel/tools

.PHONY: install tools run test test-fast test-cluster bench clean

install: $(VENV)/.installed

# pip keeps the llama-cpp-python wheel it builds (minutes) in its cache, so
# later installs reuse it; never pass --no-cache-dir here.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install -c constraints.txt -e '.[test]'
	touch $@

tools:
	tests/controlplane/build.sh

# The offline example models: random-weight GGUFs written into the volume that
# examples/local/*.yaml name (a directory on this machine, a PVC in a cluster).
DEMO_VOLUME ?= $(HOME)/.cache/localmodel/volumes/local-models

run: install
	@test -f $(DEMO_VOLUME)/tiny-chat.gguf || $(BIN)/python -m localmodel_server.testmodels chat $(DEMO_VOLUME)/tiny-chat.gguf
	@test -f $(DEMO_VOLUME)/tiny-embed.gguf || $(BIN)/python -m localmodel_server.testmodels embed $(DEMO_VOLUME)/tiny-embed.gguf
	$(BIN)/localmodel up examples/local --volume local-models=$(DEMO_VOLUME)

# The suite, then the cluster tier: real pods on a one-node local cluster (root;
# hack/localcluster/e2e.sh installs the Debian packages it needs, builds the
# images, brings the cluster up, runs tests/e2e and takes the cluster down).
test: install tools
	$(BIN)/pytest
	hack/localcluster/e2e.sh

# The cluster tier alone.
test-cluster: install tools
	hack/localcluster/e2e.sh

test-fast: install
	$(BIN)/pytest -m "not slow and not controlplane"

clean:
	rm -rf $(VENV) .pytest_cache
