"""Cold start of `localmodel up`: request to first token for an unloaded model, against a warm one.

1. Bare load: llama.cpp loading the model in a fresh process (`Llama(...)`), no server.
2. Cold: `localmodel up --keep-alive 0` unloads the model after every request, so each
   streamed request starts its server. Time to first token is split into process start
   (spawn until the server first answers), model load (until it is ready, as the
   supervisor measured them) and first token (the rest: the front door, prefill, the
   first decode and the relay).
3. Swap: `localmodel up --max-loaded 1` with two manifests of the model; requests alternate,
   so each evicts the other model, waits for its server to exit, then loads its own.
4. Warm: `localmodel up --preload --keep-alive -1`, the same request; and the same request
   sent straight to the model server, bypassing the front door and router.
5. Holding: the scheduler's acquire + release for a loaded model, in-process.

    .venv/bin/python bench/cold_start.py [--model 0.5b] [--runs 5] [--gpu-layers 0]

The model is the random-weight ~0.5B llama of bench/server_throughput.py (generated on
first use), served from a pvc-style volume in place.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
from server_throughput import NO_REPACK, bench_model  # noqa: E402
from support.local_up import Up, manifest, pvc  # noqa: E402
from support.model_server import wait_for  # noqa: E402

from localmodel_server.local.ondemand import Scheduler, Slot  # noqa: E402

PROMPT = [{"role": "user", "content": "Write one word."}]


def bare_load(model: Path, gpu_layers: int) -> float:
    code = NO_REPACK + (
        "import time, llama_cpp\n"
        "t = time.perf_counter()\n"
        f"llama_cpp.Llama({str(model)!r}, n_ctx=2048, n_gpu_layers={gpu_layers}, verbose=False)\n"
        "print(time.perf_counter() - t)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def start_up(tmp: Path, model: Path, gpu_layers: int, *flags: str, names: tuple[str, ...] = ("bench",)) -> Up:
    """`localmodel up` serving `names`, each a manifest of `model` used in place; once it serves."""
    manifests = tmp / "manifests"
    manifests.mkdir(parents=True)
    for name in names:
        (manifests / f"{name}.yaml").write_text(
            manifest(name, pvc(model.name), contextSize=2048, parallel=1, gpuLayers=gpu_layers))
    up = Up(tmp, [manifests], *flags, volume=model.parent)
    up.wait_serving(600)
    return up


def model_state(up: Up, name: str = "bench") -> dict:
    return next(m for m in up.state()["models"] if m["name"] == name)


def first_token(url: str, model: str = "bench") -> float:
    body = {"model": model, "messages": PROMPT, "max_tokens": 4, "stream": True, "temperature": 0}
    started = time.perf_counter()
    ttft = None
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if ttft is None and line.startswith("data: {") and '"content"' in line:
                ttft = time.perf_counter() - started
    if ttft is None:
        raise RuntimeError("the stream carried no token")
    return ttft


def cold_runs(tmp: Path, model: Path, gpu_layers: int, runs: int) -> list[tuple[float, float, float]]:
    up = start_up(tmp / "cold", model, gpu_layers, "--keep-alive", "0")
    url = up.base_url
    results = []
    try:
        for _ in range(runs):
            assert wait_for(lambda: model_state(up)["status"] == "unloaded" and model_state(up)["pid"] is None, 60)
            total = first_token(url)
            assert wait_for(lambda: model_state(up)["timings"] and model_state(up)["status"] == "unloaded", 60)
            timings = model_state(up)["timings"]
            results.append((total, timings["processStart"], timings["modelLoad"]))
    finally:
        up.stop()
    return results


def swap_runs(tmp: Path, model: Path, gpu_layers: int, runs: int) -> list[tuple[float, float, float]]:
    """Each request evicts the other model: (time to first token, process start, model load)."""
    up = start_up(tmp / "swap", model, gpu_layers, "--max-loaded", "1", "--keep-alive", "-1",
                  names=("bench", "other"))
    url = up.base_url
    results = []
    try:
        first_token(url, "other")
        for run in range(runs):
            name = ("bench", "other")[run % 2]
            total = first_token(url, name)
            timings = model_state(up, name)["timings"]
            results.append((total, timings["processStart"], timings["modelLoad"]))
    finally:
        up.stop()
    return results


def warm_runs(tmp: Path, model: Path, gpu_layers: int, runs: int) -> tuple[list[float], list[float]]:
    up = start_up(tmp / "warm", model, gpu_layers, "--preload")
    url = up.base_url
    direct = f"http://127.0.0.1:{model_state(up)['port']}"
    through, straight = [], []
    try:
        first_token(url)  # the first decode after a load is slower everywhere
        for _ in range(runs):
            through.append(first_token(url))
            straight.append(first_token(direct))
    finally:
        up.stop()
    return through, straight


async def hold_cost(requests: int = 100_000) -> float:
    scheduler = Scheduler([Slot("m", None, phase="loaded")], load=None, unload=None,  # type: ignore[arg-type]
                          changed=lambda: None)
    started = time.perf_counter()
    for _ in range(requests):
        await scheduler.acquire("m")
        scheduler.release("m")
    return (time.perf_counter() - started) / requests


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["0.5b", "8b"], default="0.5b")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU; -1: all")
    args = parser.parse_args()
    model = bench_model(args.model)
    print(f"model {model.name} ({model.stat().st_size / 2**20:.0f} MiB), {args.runs} runs, "
          f"gpu layers {args.gpu_layers}, {os.cpu_count()} CPUs", file=sys.stderr)
    bare = [bare_load(model, args.gpu_layers) for _ in range(args.runs)]
    with tempfile.TemporaryDirectory() as tmp:
        cold = cold_runs(Path(tmp), model, args.gpu_layers, args.runs)
        swap = swap_runs(Path(tmp), model, args.gpu_layers, args.runs)
        through, straight = warm_runs(Path(tmp), model, args.gpu_layers, args.runs)
    hold = asyncio.run(hold_cost())
    totals, starts, loads = zip(*cold)
    rest = [t - s - l for t, s, l in cold]
    print("| measure (median ms) | value |\n|---|---:|")
    print(f"| bare llama.cpp load, fresh process | {ms(bare)} |")
    print(f"| cold: request to first token | {ms(list(totals))} |")
    print(f"| — process start (spawn to first answer) | {ms(list(starts))} |")
    print(f"| — model load (to ready) | {ms(list(loads))} |")
    print(f"| — first token (front door, prefill, first decode) | {ms(rest)} |")
    print(f"| cold minus bare load (goal < 2000) | {statistics.median(totals) * 1000 - statistics.median(bare) * 1000:.0f} |")
    swap_totals, swap_starts, swap_loads = zip(*swap)
    print(f"| swap (`--max-loaded 1`): request to first token | {ms(list(swap_totals))} |")
    print(f"| — the evicted server's exit, then first token | "
          f"{ms([t - s - l for t, s, l in swap])} (first token alone: {ms(rest)}) |")
    print(f"| — process start, model load | {ms(list(swap_starts))}, {ms(list(swap_loads))} |")
    print(f"| warm TTFT through `localmodel up` | {ms(through)} |")
    print(f"| warm TTFT straight to the model server | {ms(straight)} |")
    print(f"| holding: acquire + release, in-process (goal < 1) | {hold * 1000:.4f} |")


if __name__ == "__main__":
    main()
