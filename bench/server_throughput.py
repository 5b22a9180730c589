"""Model server throughput, TTFT and memory against baselines measured in the same run.

1. Single-stream decode tok/s through our HTTP server / direct llama_cpp.Llama in-process.
2. At each of --levels concurrent streams: aggregate tok/s and p50/p95 TTFT for our
   server and for `python -m llama_cpp.server --interrupt_requests false`, same
   model and threads.
3. Peak RSS of each.

    .venv/bin/python bench/server_throughput.py [--tokens 64] [--threads 2] [--levels 1,2,4,8]
        [--gpu-layers -1] [--model 8b] [--no-python-server] [--llama-server PATH]

The model is a random-weight ~0.5B llama in Q5_0, or with `--model 8b` one with
Llama-3-8B's layer shapes in Q4_K_M (generated on first use): random weights
cost the same compute as trained ones. Every server runs with as many slots as
the highest level (up to 64 and beyond), and `--gpu-layers` offloads layers in
all of them (-1: all).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from support.model_server import free_port  # noqa: E402

from localmodel_server import testmodels  # noqa: E402

# llama.cpp's repacked CPU kernels (AMX here) crash decoding prompt batches on this
# hardware; localmodel-server leaves them off by default. The baselines cannot turn
# them off themselves, so they run with the same kernels through this switch.
NO_REPACK = (
    "import llama_cpp.llama_cpp as lib\n"
    "_defaults = lib.llama_model_default_params\n"
    "def _no_repack():\n"
    "    params = _defaults()\n"
    "    params.use_extra_bufts = False\n"
    "    return params\n"
    "lib.llama_model_default_params = _no_repack\n"
)

PROMPTS = [f"Request {i}: write a long story about a lighthouse keeper and the sea." for i in range(256)]


@dataclass
class StreamResult:
    ttft: float
    tokens: int
    token_times: list[float]


def bench_model(size: str) -> Path:
    name, shape, ftype = {
        "0.5b": ("bench-0.5b-q5_0.gguf", testmodels.BENCH_CHAT, None),
        "8b": ("bench-8b-q4_k_m.gguf", testmodels.BENCH_8B, 15),  # 15: LLAMA_FTYPE_MOSTLY_Q4_K_M
    }[size]
    path = testmodels.cache_dir() / "bench" / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        print(f"generating {path} (once)...", file=sys.stderr)
        testmodels.write_bench_model(path, shape, ftype)
    return path


def direct_decode_rate(model: Path, tokens: int, threads: int, gpu_layers: int) -> float:
    exec(NO_REPACK, {})
    import llama_cpp

    llm = llama_cpp.Llama(str(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False,
                          n_gpu_layers=gpu_layers)
    times = []
    for _ in llm.create_completion(PROMPTS[0], max_tokens=tokens, temperature=0, repeat_penalty=1.0, stream=True):
        times.append(time.perf_counter())
    del llm
    return (len(times) - 1) / (times[-1] - times[0])


async def one_stream(client: httpx.AsyncClient, prompt: str, tokens: int) -> StreamResult:
    body = {"model": "bench", "messages": [{"role": "user", "content": prompt}], "max_tokens": tokens,
            "temperature": 0, "stream": True, "repeat_penalty": 1.0}
    started = time.perf_counter()
    times: list[float] = []
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choices = orjson.loads(line[6:]).get("choices") or [{}]
            if choices[0].get("delta", {}).get("content"):
                times.append(time.perf_counter())
    return StreamResult(ttft=times[0] - started, tokens=len(times), token_times=times)


async def concurrent(base_url: str, n: int, tokens: int) -> tuple[float, list[float], list[StreamResult]]:
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        started = time.perf_counter()
        results = await asyncio.gather(*(one_stream(client, PROMPTS[i], tokens) for i in range(n)))
        wall = time.perf_counter() - started
    return sum(r.tokens for r in results) / wall, [r.ttft for r in results], results


def start(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                # Our server lists models while loading; /readyz says when it serves.
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                if ready.status_code in (200, 404):
                    return proc
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError(f"server {args[:4]} did not start")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_server(name: str, args: list[str], port: int, levels: list[int], tokens: int) -> dict:
    proc = start(args, port)
    base = f"http://127.0.0.1:{port}"
    try:
        asyncio.run(concurrent(base, 1, 8))  # warm-up
        single = asyncio.run(concurrent(base, 1, tokens))[2][0]
        decode = (single.tokens - 1) / (single.token_times[-1] - single.token_times[0])
        rows = {}
        for n in levels:
            rate, ttfts, _ = asyncio.run(concurrent(base, n, tokens))
            rows[n] = (rate, statistics.median(ttfts), _p95(ttfts))
            print(f"  {name} x{n}: {rate:.1f} tok/s, p50 TTFT {rows[n][1]:.2f}s", file=sys.stderr)
        return {"decode": decode, "levels": rows, "rss": peak_rss_mib(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(60)


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--levels", default="1,2,4,8", help="concurrent streams, comma-separated (e.g. 1,8,32,64)")
    parser.add_argument("--gpu-layers", type=int, default=0, help="layers offloaded to the GPU; -1: all")
    parser.add_argument("--model", choices=["0.5b", "8b"], default="0.5b")
    parser.add_argument("--no-python-server", action="store_true",
                        help="skip llama_cpp.server (it answers one request at a time: slow at 64 streams)")
    parser.add_argument("--llama-server", type=Path,
                        help="also run llama.cpp's C++ llama-server (built from the vendored sources) as the upper "
                             "reference")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = bench_model(args.model)
    t, gpu = str(args.threads), str(args.gpu_layers)
    all_layers = "999" if args.gpu_layers < 0 else gpu  # llama-server reads -1 as "auto", not "all"

    direct = direct_decode_rate(model, args.tokens, args.threads, args.gpu_layers)
    direct_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  direct Llama: {direct:.1f} tok/s", file=sys.stderr)

    port = free_port()
    ours = run_server("localmodel-server", [
        sys.executable, "-m", "localmodel_server.main", "--model-path", str(model), "--served-name", "bench",
        "--host", "127.0.0.1", "--port", str(port), "--threads", t, "--parallel", str(max(levels)),
        "--context-size", "512", "--gpu-layers", gpu,
    ], port, levels, args.tokens)
    theirs = None
    if not args.no_python_server:
        port = free_port()
        theirs = run_server("llama_cpp.server", [
            sys.executable, "-c", NO_REPACK + "from llama_cpp.server.__main__ import main\nmain()",
            "--model", str(model), "--model_alias", "bench",
            "--host", "127.0.0.1", "--port", str(port), "--n_threads", t, "--n_threads_batch", t,
            "--n_ctx", "1024", "--interrupt_requests", "false", "--n_gpu_layers", gpu,
        ], port, levels, args.tokens)

    reference = None
    if args.llama_server:
        port = free_port()
        reference = run_server("llama-server", [
            str(args.llama_server), "--model", str(model), "--alias", "bench", "--host", "127.0.0.1",
            "--port", str(port), "--threads", t, "--threads-batch", t, "--parallel", str(max(levels)),
            "--ctx-size", str(512 * max(levels)), "--no-repack", "--no-webui", "--n-gpu-layers", all_layers,
        ], port, levels, args.tokens)

    print(f"\nModel: {model.name} ({model.stat().st_size / 2**20:.0f} MiB), {args.tokens} tokens per request, "
          f"{args.threads} threads, {args.gpu_layers} GPU layers.\n")
    print("| measure | localmodel-server | baseline | ratio |")
    print("|---|---|---|---|")
    row("single-stream decode tok/s (vs direct llama_cpp.Llama)", ours["decode"], direct)
    if theirs:
        compare(ours, theirs, "llama_cpp.server", levels, p95=True)
    row("peak RSS MiB of direct llama_cpp.Llama (bench process)", None, direct_rss, digits=0)
    if reference:
        row("single-stream decode tok/s (vs llama-server)", ours["decode"], reference["decode"])
        compare(ours, reference, "llama-server", levels, p95=False)


def row(measure: str, ours: float | None, baseline: float, digits: int = 1) -> None:
    if ours is None:
        print(f"| {measure} | | {baseline:.{digits}f} | |")
    else:
        print(f"| {measure} | {ours:.{digits}f} | {baseline:.{digits}f} | {ours / baseline:.2f} |")


def compare(ours: dict, other: dict, name: str, levels: list[int], *, p95: bool) -> None:
    """Rows of aggregate throughput and TTFT per concurrency level, then peak RSS, against one server."""
    for n in levels:
        (rate, p50, tail), (their_rate, their_p50, their_tail) = ours["levels"][n], other["levels"][n]
        row(f"{n} streams: aggregate tok/s (vs {name})", rate, their_rate)
        row(f"{n} streams: p50 TTFT s (vs {name})", p50, their_p50, digits=2)
        if p95:
            row(f"{n} streams: p95 TTFT s (vs {name})", tail, their_tail, digits=2)
    row(f"peak RSS MiB (vs {name})", ours["rss"], other["rss"], digits=0)

if __name__ == "__main__":
    main()
