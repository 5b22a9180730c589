"""Puller throughput vs curl on loopback, and bytes re-fetched after a killed pull resumes.

    .venv/bin/python bench/puller_throughput.py [--size-mib 1024] [--rounds 3] [--clients]

A GGUF file of --size-mib (random bytes in one I8 tensor, so nothing compresses)
is served from a temp dir by tests/support/http_faults.py with os.sendfile, in
a process of its own. Each round downloads it with `curl -o` and with `pull()`
into the same filesystem, in rotating order with a sync between runs; the table
gives median MiB/s, the ratio (goal >= 0.9) and the client's CPU-s per GiB. The
puller's number includes what curl does not do: SHA-256 of every byte, the
GGUF header check, fsync and the atomic rename.

The "curl, then openssl dgst" row is the baseline doing the same integrity work.
The OCI rows serve the same file as the model layer of an OCI artifact from
tests/support/fake_registry.py (same process, same sendfile path): `pull()` of
a `source.oci` (manifest, then the blob) against `curl -o` of that blob's URL.
The resume row runs `localmodel-pull` as a subprocess, SIGKILLs it once half
the file is on disk, restarts it, and counts the bytes the server sent.
`--clients` adds raw streaming loops of the candidate HTTP clients (the
measurement behind the choice of http.client).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFWriter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.fake_registry import FakeRegistry  # noqa: E402
from support.http_faults import FaultyHTTPServer  # noqa: E402

from localmodel_server.puller import parse_source, pull  # noqa: E402
from localmodel_server.puller.oci import DOCKER_GGUF  # noqa: E402
from localmodel_server.puller.store import PARTIAL_FILE  # noqa: E402
from localmodel_server.puller.writer import BLOCK_SIZE as BLOCK  # noqa: E402


def make_model(path: Path, size: int) -> Path:
    writer = GGUFWriter(path, "llama")
    writer.add_file_type(0)
    writer.add_tensor("token_embd.weight", np.frombuffer(os.urandom(size), dtype=np.int8).reshape(-1, 4096))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class ServerProcess:
    """The file server in a process of its own, so its CPU never counts as the client's."""

    def __init__(self, file: Path) -> None:
        self._conn, child = multiprocessing.Pipe()
        self._process = multiprocessing.Process(target=_serve, args=(file, child), daemon=True)
        self._process.start()
        self.url: str = self._conn.recv()
        self.oci_ref, self.blob_url = self._conn.recv()

    def bytes_served(self) -> int:
        self._conn.send("count")
        return int(self._conn.recv())

    def stop(self) -> None:
        self._conn.send("stop")
        self._process.join()


def _serve(file: Path, conn: Any) -> None:
    server = FaultyHTTPServer().start()
    served = server.add_file("/m.gguf", file)
    conn.send(f"{server.base_url}/m.gguf")
    registry = FakeRegistry(file.parent)
    registry.start()
    pushed = registry.push("bench/model", "v1", [(DOCKER_GGUF, file)])
    layer = pushed.manifest["layers"][0]["digest"]
    conn.send((f"{registry.host}/bench/model:v1", f"{registry.base_url}/v2/bench/model/blobs/{layer}"))
    while conn.recv() == "count":
        conn.send(served.bytes_served)
    registry.stop()
    server.stop()


def measured(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its children) for one run."""
    cpu, children, start = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    fn()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return wall, time.process_time() - cpu + child_cpu


def run_curl(url: str, out: Path) -> None:
    subprocess.run(["curl", "-sS", "--fail", "-o", str(out), url], check=True)


def run_curl_then_hash(url: str, out: Path) -> None:
    """curl plus the integrity work the puller does: SHA-256 of every byte (OpenSSL, read from page cache)."""
    run_curl(url, out)
    subprocess.run(["openssl", "dgst", "-sha256", str(out)], check=True, stdout=subprocess.DEVNULL)


def run_puller(url: str, dest: Path) -> None:
    pull(parse_source({"url": url}), dest)


def client_loops(url: str, out: Path) -> dict[str, Callable[[], None]]:
    """Each candidate streams the body to `out` in BLOCK reads, as the puller would."""
    import aiohttp
    import httpx
    import urllib3

    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("//", 1)[1].split("/", 1)[1]

    def stdlib() -> None:
        conn = http.client.HTTPConnection(host, int(port))
        conn.request("GET", path)
        response, view = conn.getresponse(), memoryview(bytearray(BLOCK))
        with out.open("wb", buffering=0) as f:
            while n := response.readinto(view):
                f.write(view[:n])

    def with_urllib3() -> None:
        response = urllib3.PoolManager().request("GET", url, preload_content=False)
        view = memoryview(bytearray(BLOCK))
        with out.open("wb", buffering=0) as f:
            while n := response.readinto(view):
                f.write(view[:n])

    def with_httpx() -> None:
        with httpx.Client() as c, c.stream("GET", url) as response, out.open("wb", buffering=0) as f:
            for chunk in response.iter_raw(BLOCK):
                f.write(chunk)

    def with_aiohttp() -> None:
        async def go() -> None:
            async with aiohttp.ClientSession(read_bufsize=BLOCK) as s, s.get(url) as response:
                with out.open("wb", buffering=0) as f:
                    async for chunk in response.content.iter_chunked(BLOCK):
                        f.write(chunk)

        asyncio.run(go())

    return {"http.client": stdlib, "urllib3": with_urllib3, "httpx": with_httpx, "aiohttp": with_aiohttp}


def resume_run(server: ServerProcess, dest: Path, size: int) -> dict[str, int]:
    command = [str(Path(sys.executable).with_name("localmodel-pull")), "--source", json.dumps({"url": server.url})]
    command += ["--dest", str(dest)]
    start = server.bytes_served()
    first = subprocess.Popen(command, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    partial = dest / PARTIAL_FILE
    while not (partial.exists() and partial.stat().st_size >= size // 2):
        if first.poll() is not None:
            raise SystemExit("the pull finished before it could be killed; use a larger --size-mib")
        time.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(0.2)  # let the server notice the closed connection and finish counting
    kept = partial.stat().st_size
    served_first = server.bytes_served() - start
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    served_second = server.bytes_served() - start - served_first
    return {"kept": kept, "first": served_first, "second": served_second, "refetched": served_second - (size - kept)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", action="store_true", help="also time raw loops of candidate HTTP clients")
    args = parser.parse_args()
    if shutil.which("curl") is None or shutil.which("openssl") is None:
        raise SystemExit("curl and openssl are the baselines (apt-get install -y curl openssl)")

    with tempfile.TemporaryDirectory(prefix="puller-bench-") as tmp:
        root = Path(tmp)
        model = make_model(root / "served.gguf", args.size_mib << 20)
        size = model.stat().st_size
        os.sync()
        server = ServerProcess(model)
        url = server.url
        contenders: dict[str, Callable[[Path], None]] = {
            "curl -o": lambda d: run_curl(url, d / "curl.out"),
            "curl -o, then openssl dgst -sha256": lambda d: run_curl_then_hash(url, d / "curl.out"),
            "pull() (localmodel-pull)": lambda d: run_puller(url, d),
            "OCI blob: curl -o": lambda d: run_curl(server.blob_url, d / "curl.out"),
            "OCI: pull() of source.oci": lambda d: pull(parse_source({"oci": {"ref": server.oci_ref, "insecure": True}}), d),
        }
        if args.clients:
            for name, loop in client_loops(url, root / "out" / "client.out").items():
                contenders[f"raw loop: {name}"] = lambda d, loop=loop: loop()
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in contenders}
        names = list(contenders)
        for round_ in range(args.rounds):
            # Rotate the order: the kernel charges a writer differently depending on what ran before it.
            for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                run = contenders[name]
                out = root / "out"
                out.mkdir()
                runs[name].append(measured(lambda run=run, out=out: run(out)))
                shutil.rmtree(out)
                os.sync()  # no contender pays for the previous one's writeback
        resume = resume_run(server, root / "resume", size)
        server.stop()

    gib = size / (1 << 30)
    rate = {name: statistics.median(size / (1 << 20) / wall for wall, _ in r) for name, r in runs.items()}
    print(f"file: {size} bytes ({args.size_mib} MiB GGUF), {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.1f}")  # fmt: skip
    print("| contender | median MiB/s | ÷ curl of the same URL kind | client CPU-s per GiB |")
    print("|---|---|---|---|")
    for name, r in runs.items():
        cpu = statistics.median(c for _, c in r) / gib
        baseline = "OCI blob: curl -o" if name.startswith("OCI") else "curl -o"
        print(f"| {name} | {rate[name]:.0f} | {rate[name] / rate[baseline]:.2f} | {cpu:.2f} |")
    print()
    print("| resume after SIGKILL at ≥50% | bytes |")
    print("|---|---|")
    print(f"| kept on disk at the kill | {resume['kept']} |")
    print(f"| served before the kill (incl. in flight, lost) | {resume['first']} |")
    print(f"| served after the restart | {resume['second']} |")
    print(f"| re-fetched by the restart (served − missing) | {resume['refetched']} |")


if __name__ == "__main__":
    main()
