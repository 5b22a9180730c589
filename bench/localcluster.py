"""Times the local cluster's loop: a warm `up`, helm install to the first chat
answer, and `down`, against the goals in docs/benchmarks.md.

    sudo .venv/bin/python bench/localcluster.py [--images-dir DIR]

Needs the images (hack/localcluster/images.sh) and the built tools; starts from
no cluster and leaves none. The first answer is asked from this machine through
a port-forward, with the official openai SDK.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from e2e import cluster as e2e  # noqa: E402
from localmodel_server import testmodels  # noqa: E402

CLUSTER = [sys.executable, str(ROOT / "hack/localcluster/cluster.py")]
GOALS = {"up, caches warm": 60.0, "helm install → first chat answer": 90.0}


def timed(label: str, results: dict[str, float], *command: str) -> None:
    started = time.monotonic()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    results[label] = time.monotonic() - started


def tools_path() -> str:
    out = subprocess.run([str(ROOT / "tests/controlplane/build.sh"), "cluster", "helm"],
                         check=True, capture_output=True, text=True).stdout
    folders = {str(Path(path).parent) for name, _, path in (l.partition("=") for l in out.split())
               if name in ("kubectl", "helm")}
    return ":".join(sorted(folders))


def install_and_answer(results: dict[str, float]) -> None:
    import openai

    from support.seed import SEED_REQUEST

    with tempfile.TemporaryDirectory() as folder:
        testmodels.write_llama(Path(folder) / "chat.gguf")
        with e2e.serving_weights(Path(folder)) as weights:
            started = time.monotonic()
            e2e.install_chart()
            results["helm install (operator and router Ready)"] = time.monotonic() - started
            e2e.apply_model("tiny-chat", {"source": weights.source("chat.gguf"), "servedName": "llama3",
                                          "storage": {"size": "1Gi"}})
            e2e.wait_phase("tiny-chat", {"Ready"})
            with e2e.port_forward(e2e.RELEASE_NS, f"{e2e.RELEASE}-router", 80) as url:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
                client.chat.completions.create(**SEED_REQUEST, max_tokens=8)
            results["helm install → first chat answer"] = time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    os.environ["PATH"] = f"{tools_path()}:{os.environ['PATH']}"
    results: dict[str, float] = {}
    subprocess.run([*CLUSTER, "down"], check=True)
    timed("up, caches warm (tools and images built, no cluster)", results, *CLUSTER, "up")
    timed("up again (reuses what runs)", results, *CLUSTER, "up")
    os.environ["KUBECONFIG"] = subprocess.run([*CLUSTER, "env"], check=True, capture_output=True,
                                              text=True).stdout.split("=", 1)[1].strip()
    os.environ.setdefault("LOCALMODEL_E2E_HOST", "10.213.0.1")
    os.environ.setdefault("LOCALMODEL_E2E_SERVER_IMAGE", "localmodel/localmodel:local")
    os.environ.setdefault("LOCALMODEL_E2E_OPERATOR_IMAGE", "localmodel/localmodel-operator:local")
    try:
        install_and_answer(results)
    finally:
        timed("down", results, *CLUSTER, "down")
    print("| step | seconds | goal | ratio to goal |")
    print("|---|---|---|---|")
    for label, seconds in results.items():
        goal = next((g for key, g in GOALS.items() if label.startswith(key)), None)
        ratio = f"{seconds / goal:.2f}" if goal else ""
        print(f"| {label} | {seconds:.1f} | {goal or ''} | {ratio} |")


if __name__ == "__main__":
    main()
