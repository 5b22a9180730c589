"""How fast the test control plane starts and how much memory it holds.

    .venv/bin/python bench/controlplane_start.py [--runs 3] [--cold]

Rows: build.sh with the binaries cached; etcd alone to /health (the baseline:
the storage every start waits for); etcd + kube-apiserver to /readyz, as the
`control_plane` fixture does it (goal < 10 s); the RSS of both processes once
ready. `--cold` also times a first build, into an empty tools folder with an
empty Go build cache (downloaded modules are reused).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.controlplane import (  # noqa: E402  (tests/ is not an installed package)
    BUILD_SCRIPT,
    build_binaries,
    etcd_args,
    free_ports,
    running_control_plane,
)

GOAL_START_S = 10.0


def time_cold_build() -> float:
    with tempfile.TemporaryDirectory() as tools, tempfile.TemporaryDirectory() as gocache:
        env = {**os.environ, "LOCALMODEL_TOOLS_DIR": tools, "GOCACHE": gocache}
        env.pop("KUBEBUILDER_ASSETS", None)
        started = time.perf_counter()
        command = [str(BUILD_SCRIPT), "controlplane"]
        subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - started


def time_cached_build() -> float:
    started = time.perf_counter()
    build_binaries()
    return time.perf_counter() - started


def time_etcd_alone(etcd: Path) -> float:
    client_port, peer_port = free_ports(2)
    with tempfile.TemporaryDirectory() as data:
        started = time.perf_counter()
        proc = subprocess.Popen(
            etcd_args(etcd, Path(data) / "etcd", client_port, peer_port),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    url = f"http://127.0.0.1:{client_port}/health"
                    with urllib.request.urlopen(url, timeout=1) as response:
                        if response.status == 200:
                            return time.perf_counter() - started
                except OSError:
                    time.sleep(0.02)
        finally:
            proc.terminate()
            proc.wait()


def start_and_measure(binaries: dict[str, Path]) -> tuple[float, dict[str, float]]:
    """Seconds to /readyz, and the RSS in MiB of each child process once ready."""
    started = time.perf_counter()
    with running_control_plane(binaries):
        elapsed = time.perf_counter() - started
        rss = {
            child.name(): child.memory_info().rss / 2**20 for child in psutil.Process().children()
        }
    return elapsed, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold", action="store_true", help="also time a first build (minutes)")
    args = parser.parse_args()

    rows: list[tuple[str, float, str]] = []
    if args.cold:
        rows.append(("build.sh, first build (empty build cache)", time_cold_build(), "s"))
    cached = time_cached_build()
    binaries = build_binaries()
    baseline = statistics.median(time_etcd_alone(binaries["etcd"]) for _ in range(args.runs))
    starts, rss_runs = [], []
    for _ in range(args.runs):
        elapsed, rss = start_and_measure(binaries)
        starts.append(elapsed)
        rss_runs.append(rss)
    start = statistics.median(starts)
    rows += [
        ("build.sh, binaries cached", cached, "s"),
        ("etcd alone to /health (baseline)", baseline, "s"),
        ("etcd + kube-apiserver to /readyz", start, "s"),
    ]
    for name in sorted(rss_runs[-1]):
        rows.append((f"RSS {name} at ready", max(r[name] for r in rss_runs), "MiB"))

    print(f"runs={args.runs}  (medians; RSS is the largest seen)")
    print(f"| {'measure':<44} | {'value':>11} | {'vs baseline':>11} |")
    print(f"|{'-' * 46}|{'-' * 13}|{'-' * 13}|")
    for name, value, unit in rows:
        ratio = f"{value / baseline:.2f}x" if unit == "s" else ""
        print(f"| {name:<44} | {value:>7.2f} {unit:<3} | {ratio:>11} |")
    verdict = "meets" if start < GOAL_START_S else "MISSES"
    print(f"start to /readyz {start:.2f}s {verdict} the {GOAL_START_S:.0f}s goal "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)})")


if __name__ == "__main__":
    main()
