"""Goodput under overload: completed requests/s when more clients call than the server holds.

A server holds `--parallel` decoding requests plus `--queue-size` waiting ones:
that is its capacity in clients. Each client loops short non-streamed chat
requests and, when refused with 503, sleeps for the server's `retry-after-ms`
(else `Retry-After`) as the official OpenAI SDKs do. The baseline is 1x: exactly
capacity clients, so every slot and queue place is filled and nothing is
refused; its completed requests/s is the server's capacity. At 1.5x and 3x the
completed requests/s is divided by it. Directly against the server and through
the router.

    .venv/bin/python bench/goodput.py [--duration 6] [--rounds 3] [--parallel 4] [--queue-size 16] [--threads 2]

The model is the tiny generated chat model (real llama.cpp compute, small
enough that a request takes milliseconds, so the server's admission and the
clients' backoff dominate, which is what is measured). The clients use aiohttp:
on these 2 cores an httpx client with 60 connections spent so much CPU that it,
not the server, set the rate (110 req/s against aiohttp's 365 for one server).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
import httpx

from localmodel_server import testmodels

LEVELS = (1.0, 1.5, 3.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args: list[str], log: Path, ready: str | bytes) -> subprocess.Popen[bytes]:
    """Start a process; `ready` is a URL to poll or a log pattern whose group 1 is the port."""
    proc = subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if isinstance(ready, str):
            try:
                if httpx.get(ready, timeout=1).status_code == 200:
                    return proc
            except httpx.HTTPError:
                pass
        elif re.search(ready, log.read_bytes()):
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{log.stem} did not start:\n{log.read_text()}")


def backoff(headers: Mapping[str, str]) -> float:
    if "retry-after-ms" in headers:
        return float(headers["retry-after-ms"]) / 1000
    return float(headers.get("retry-after", 1))


async def load(url: str, clients: int, duration: float, tokens: int) -> tuple[float, float]:
    """(completed requests/s, refusals/s) with `clients` looping for `duration` seconds after a warm-up."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": tokens, "temperature": 0}
    completed, refused = 0, 0
    start_at = time.monotonic() + min(2.0, duration / 5)  # let the queue reach its steady state first
    stop_at = start_at + duration

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal completed, refused
        while time.monotonic() < stop_at:
            async with http.post(url, json=body) as response:
                text = await response.text()
            now = time.monotonic()
            if response.status == 200:
                completed += start_at <= now < stop_at
            elif response.status == 503:
                refused += start_at <= now < stop_at
                # A wait past the end of the level is cut short: the client would not come back in it.
                await asyncio.sleep(min(backoff(response.headers), max(0.0, stop_at - time.monotonic())))
            else:
                raise SystemExit(f"unexpected {response.status}: {text}")

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return completed / duration, refused / duration


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every level; medians are reported")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--queue-size", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    capacity = args.parallel + args.queue_size

    work = Path(tempfile.mkdtemp(prefix="goodput-"))
    model = testmodels.write_llama(work / "tiny-chat.gguf")
    server_port, router_port = free_port(), free_port()
    server = start([sys.executable, "-m", "localmodel_server.main", "--model-path", str(model),
                    "--served-name", "bench", "--host", "127.0.0.1", "--port", str(server_port),
                    "--parallel", str(args.parallel), "--queue-size", str(args.queue_size),
                    "--threads", str(args.threads)],
                   work / "server.log", f"http://127.0.0.1:{server_port}/healthz")
    router = start([sys.executable, "-m", "localmodel_server.router.main", "--host", "127.0.0.1",
                    "--port", str(router_port), "--route", f"bench=http://127.0.0.1:{server_port}"],
                   work / "router.log", rb"serving on http://[^:]+:(\d+)")
    # (path, level) -> per round: (completed req/s, ratio to that round's 1x, refusals/s)
    results: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    try:
        for path, port in (("direct", server_port), ("through the router", router_port)):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            asyncio.run(load(url, capacity, 3.0, args.tokens))  # warm connections, caches and clocks
            # Levels alternate within each round, so a slow spell of this shared machine hits
            # every level alike instead of one; each ratio is to the same round's 1x.
            for _ in range(args.rounds):
                capacity_rate = 0.0
                for level in LEVELS:
                    rate, refused = asyncio.run(load(url, round(capacity * level), args.duration, args.tokens))
                    capacity_rate = capacity_rate or rate  # 1x comes first
                    results.setdefault((path, level), []).append((rate, rate / capacity_rate, refused))
                    print(f"  {path} {level}x: {rate:.1f} req/s, {refused:.0f} refused/s", file=sys.stderr)
    finally:
        for proc in (router, server):
            proc.terminate()
            proc.wait()

    print(f"\nGoodput: --parallel {args.parallel} --queue-size {args.queue_size} (capacity {capacity} clients), "
          f"{args.tokens} tokens per request, --threads {args.threads}, {args.duration:g} s per level, medians of "
          f"{args.rounds} rounds. Baseline: 1x in the same round, whose rate is capacity.\n")
    print("| path | load | clients | completed req/s | ÷ capacity | refusals/s |")
    print("|---|---|---|---|---|---|")
    for (path, level), runs in results.items():
        rate, ratio, refused = (statistics.median(column) for column in zip(*runs))
        print(f"| {path} | {level:g}× | {round(capacity * level)} | {rate:.1f} | {ratio:.2f} | {refused:.0f} |")


if __name__ == "__main__":
    main()
