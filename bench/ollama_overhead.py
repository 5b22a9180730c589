"""What Ollama's /api/chat adds over /v1/chat/completions on the same model server.

    .venv/bin/python bench/ollama_overhead.py [--requests 300] [--tokens 1 16]

One localmodel-server on the generated tiny chat model (testmodels.write_llama,
--parallel 1). Requests go one at a time from one keep-alive httpx client, in
pairs (/v1 then /api, the order alternating per pair), greedy, the same prompt
and the same number of tokens, so both do identical engine work. The table
gives each endpoint's median latency and the median of the per-pair
differences (the added latency; goal < 1 ms), for non-streamed and streamed
(time to the last byte) answers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.model_server import start_server  # noqa: E402

from localmodel_server import testmodels  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"}]


def v1_body(tokens: int, stream: bool) -> dict:
    return {"model": "llama3", "messages": MESSAGES, "temperature": 0, "max_tokens": tokens, "stream": stream}


def api_body(tokens: int, stream: bool) -> dict:
    return {"model": "llama3", "messages": MESSAGES, "options": {"temperature": 0, "num_predict": tokens},
            "stream": stream}


def timed(client: httpx.Client, path: str, body: dict) -> float:
    start = time.perf_counter()
    with client.stream("POST", path, json=body) as response:
        for _ in response.iter_raw():
            pass
        response.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="pairs per row")
    parser.add_argument("--tokens", type=int, nargs="+", default=[1, 16])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ollama-bench-") as tmp:
        model = testmodels.write_llama(Path(tmp) / "tiny-chat.gguf")
        server = start_server(model, Path(tmp), "--served-name", "tiny-chat", "--aliases", "llama3",
                              "--context-size", "512", "--parallel", "1")
        rows = []
        try:
            with httpx.Client(base_url=server.base_url, timeout=60) as client:
                for tokens in args.tokens:
                    for stream in (False, True):
                        for _ in range(20):  # warm-up
                            timed(client, "/v1/chat/completions", v1_body(tokens, stream))
                            timed(client, "/api/chat", api_body(tokens, stream))
                        v1, api, diff = [], [], []
                        for i in range(args.requests):
                            order = [("v1", "/v1/chat/completions", v1_body(tokens, stream)),
                                     ("api", "/api/chat", api_body(tokens, stream))]
                            pair = {name: timed(client, path, body)
                                    for name, path, body in (order if i % 2 == 0 else order[::-1])}
                            v1.append(pair["v1"])
                            api.append(pair["api"])
                            diff.append(pair["api"] - pair["v1"])
                        rows.append((tokens, stream, statistics.median(v1), statistics.median(api),
                                     statistics.median(diff)))
        finally:
            server.stop()
    print(f"{args.requests} pairs per row, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}")
    print("| tokens | streamed | /v1/chat/completions p50 ms | /api/chat p50 ms | added p50 ms (paired) |")
    print("|---|---|---|---|---|")
    for tokens, stream, v1_p50, api_p50, diff_p50 in rows:
        print(f"| {tokens} | {'yes' if stream else 'no'} | {v1_p50 * 1e3:.2f} | {api_p50 * 1e3:.2f} | "
              f"{diff_p50 * 1e3:+.3f} |")


if __name__ == "__main__":
    main()
