"""Goodput under overload: completed requests/s when more clients call than the server holds.

A server holds `--parallel` decoding requests plus `--queue-size` waiting ones:
that is its capacity in clients. Each client loops short streamed-off chat
requests and, when refused with 503, sleeps for the server's `retry-after-ms`
(else `Retry-After`) as the official OpenAI SDKs do. At 1×, 1.5× and 3×
capacity the completed requests/s is divided by the baseline measured in the
same run: exactly `--parallel` clients, where every request is served at once
and nothing queues. Directly against the server and through the router.

    .venv/bin/python bench/goodput.py [--duration 10] [--parallel 4] [--queue-size 16] [--tokens 8]

The model is the tiny generated chat model (real llama.cpp compute, small
enough that a request takes tens of milliseconds, so the server's admission
and the clients' backoff dominate, which is what is measured).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def backoff(response: httpx.Response) -> float:
    if "retry-after-ms" in response.headers:
        return float(response.headers["retry-after-ms"]) / 1000
    return float(response.headers.get("retry-after", 1))


async def load(url: str, clients: int, duration: float, tokens: int) -> tuple[float, int]:
    """(completed requests/s, refusals) with `clients` looping for `duration` seconds after a warm-up."""
    body = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}],
            "max_tokens": tokens, "temperature": 0}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    completed, refused = 0, 0
    start_at = time.monotonic() + min(2.0, duration / 5)  # let the queue reach its steady state first
    stop_at = start_at + duration

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal completed, refused
        while time.monotonic() < stop_at:
            response = await http.post(url, json=body)
            now = time.monotonic()
            if response.status_code == 200:
                if start_at <= now < stop_at:
                    completed += 1
            elif response.status_code == 503:
                refused += start_at <= now < stop_at
                await asyncio.sleep(backoff(response))
            else:
                raise SystemExit(f"unexpected {response.status_code}: {response.text}")

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(300)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    return completed / duration, refused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per level")
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
    rows = []
    try:
        for path, port in (("direct", server_port), ("through the router", router_port)):
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            asyncio.run(load(url, args.parallel, 1.0, args.tokens))  # warm connections and caches
            baseline, _ = asyncio.run(load(url, args.parallel, args.duration, args.tokens))
            for level in LEVELS:
                clients = round(capacity * level)
                rate, refused = asyncio.run(load(url, clients, args.duration, args.tokens))
                rows.append((path, level, clients, rate, baseline, refused))
                print(f"  {path} {level}x ({clients} clients): {rate:.1f} req/s, {refused} refused",
                      file=sys.stderr)
    finally:
        for proc in (router, server):
            proc.terminate()
            proc.wait()

    print(f"\nGoodput: --parallel {args.parallel} --queue-size {args.queue_size} (capacity {capacity} clients), "
          f"{args.tokens} tokens per request, {args.duration:.0f} s per level. Baseline: {args.parallel} clients.\n")
    print("| path | load | clients | completed req/s | baseline req/s | ratio | refusals |")
    print("|---|---|---|---|---|---|---|")
    for path, level, clients, rate, baseline, refused in rows:
        print(f"| {path} | {level:g}× | {clients} | {rate:.1f} | {baseline:.1f} | {rate / baseline:.2f} | {refused} |")


if __name__ == "__main__":
    main()
