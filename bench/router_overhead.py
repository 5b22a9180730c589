"""What the router adds: req/s and latency through it ÷ straight to the backend.

The backend is tests/support/fake_backend.py (answers instantly, the same
process for both runs). Load comes from `wrk` (apt-get install wrk), run in
its own process; direct and routed runs alternate, and the median of the
rounds is reported. Streaming: one client process reads SSE chunks stamped
with the backend's send time, directly and through the router.

    .venv/bin/python bench/router_overhead.py [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
FAKE_BACKEND = ROOT / "tests" / "support" / "fake_backend.py"
SEED = {"model": "llama3", "messages": [{"role": "system", "content": "You are a helpful assistant."},
                                        {"role": "user", "content": "What is the capital of France?"}]}
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    cpu_us_per_request: dict[str, float]


def start(args: list[str], pattern: bytes, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    out = log.open("wb")
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_bytes())
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{log.stem} did not start:\n{log.read_text()}")


def wrk(url: str, connections: int, duration: int, script: Path) -> tuple[float, float, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        check=True, capture_output=True, text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * _UNITS[unit]

    return rps, percentile("50"), percentile("99")


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    times = {}
    for name, pid in pids.items():
        t = psutil.Process(pid).cpu_times()
        times[name] = t.user + t.system
    return times


def measure(url: str, connections: int, duration: int, script: Path, pids: dict[str, int]) -> Run:
    before = cpu_seconds(pids)
    rps, p50, p99 = wrk(url, connections, duration, script)
    after = cpu_seconds(pids)
    total = rps * duration
    return Run(rps, p50, p99, {name: (after[name] - before[name]) / total * 1e6 for name in pids})


def median_run(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50 for r in runs),
        statistics.median(r.p99 for r in runs),
        {k: statistics.median(r.cpu_us_per_request[k] for r in runs) for k in runs[0].cpu_us_per_request},
    )


def stream_delays(port: int, model: str, streams: int) -> list[float]:
    """Seconds from each chunk's send time at the backend to its arrival here."""
    delays = []
    body = json.dumps({"model": model, "messages": [], "stream": True}).encode()
    for _ in range(streams):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            buffer = b""
            while True:
                data = sock.recv(65536)
                now = time.time()
                if not data:
                    break
                buffer += data
                for sent in re.findall(rb'"sent":([\d.]+)', buffer):
                    delays.append(now - float(sent))
                buffer = buffer[buffer.rfind(b"\n\n") + 2:] if b"\n\n" in buffer else buffer
    return delays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating direct/routed rounds; the median is reported")
    parser.add_argument("--streams", type=int, default=20, help="SSE streams of 20 chunks each, per side")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")

    work = Path(tempfile.mkdtemp(prefix="router-bench-"))
    script = work / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(SEED))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    backend, backend_port = start([sys.executable, str(FAKE_BACKEND), "--port", "0", "--name", "llama3"], rb"LISTENING (\d+)", work / "backend.log")
    processes = [backend]
    try:
        router, router_port = start(
            [sys.executable, "-m", "localmodel_server.router.main", "--host", "127.0.0.1", "--port", "0",
             "--route", f"tiny-chat,llama3=http://127.0.0.1:{backend_port}"],
            rb"serving on http://[^:]+:(\d+)", work / "router.log",
        )
        processes.append(router)
        direct_url = f"http://127.0.0.1:{backend_port}/v1/chat/completions"
        routed_url = f"http://127.0.0.1:{router_port}/v1/chat/completions"
        pids = {"backend": backend.pid, "router": router.pid}
        for url in (direct_url, routed_url):  # warm both paths (connections, caches)
            wrk(url, 16, 1, script)
        rows = []
        for connections in (1, 16):
            direct, routed = [], []
            for _ in range(args.rounds):
                direct.append(measure(direct_url, connections, args.duration, script, pids))
                routed.append(measure(routed_url, connections, args.duration, script, pids))
            rows.append((connections, median_run(direct), median_run(routed)))

        httpx.post(f"http://127.0.0.1:{backend_port}/_fake/config", json={"chunks": 20, "chunk_delay": 0.01}).raise_for_status()
        direct_delays = stream_delays(backend_port, "llama3", args.streams)
        routed_delays = stream_delays(router_port, "llama3", args.streams)
    finally:
        for proc in processes:
            proc.terminate()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)

    print(f"## Router overhead ({args.rounds} alternating rounds of {args.duration} s, medians; wrk -t1)\n")
    print("| connections | direct req/s | routed req/s | ratio | direct p50 | routed p50 | added p50 | direct p99 | routed p99 | added p99 | router CPU µs/req | backend CPU µs/req |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for connections, d, r in rows:
        print(
            f"| {connections} | {d.rps:,.0f} | {r.rps:,.0f} | {r.rps / d.rps:.2f}× | {d.p50 * 1e3:.3f} ms | {r.p50 * 1e3:.3f} ms | "
            f"{(r.p50 - d.p50) * 1e3:.3f} ms | {d.p99 * 1e3:.2f} ms | {r.p99 * 1e3:.2f} ms | {(r.p99 - d.p99) * 1e3:.2f} ms | "
            f"{r.cpu_us_per_request['router']:.0f} | {d.cpu_us_per_request['backend']:.0f} |"
        )
    d50, r50 = statistics.median(direct_delays), statistics.median(routed_delays)
    d99, r99 = _p99(direct_delays), _p99(routed_delays)
    print(f"\n## Streaming: backend chunk → client ({len(routed_delays)} chunks per side)\n")
    print("| | direct | routed | added |")
    print("|---|---|---|---|")
    print(f"| p50 | {d50 * 1e3:.3f} ms | {r50 * 1e3:.3f} ms | {(r50 - d50) * 1e3:.3f} ms |")
    print(f"| p99 | {d99 * 1e3:.3f} ms | {r99 * 1e3:.3f} ms | {(r99 - d99) * 1e3:.3f} ms |")


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


if __name__ == "__main__":
    main()
