"""The processes single-machine mode runs: the puller and one server per loaded model.

They are the same programs a cluster runs (localmodel-pull in the pull Job,
localmodel-server in each pod), started with the same flags the operator would
give them. The router runs inside `localmodel up` itself (front.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from localmodel_operator.spec import ModelSpec

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class PullOutcome:
    ok: bool
    path: str | None = None
    sha256: str | None = None
    fetched: int = 0
    reason: str | None = None
    message: str | None = None


async def pull(source_json: str, dest: Path, env: dict[str, str]) -> PullOutcome:
    """Run localmodel-pull; its progress bar goes to our terminal, its outcome comes back as JSON."""
    with tempfile.TemporaryDirectory() as tmp:
        outcome_file = Path(tmp) / "outcome.json"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "localmodel_server.puller.cli", "--source", source_json, "--dest", str(dest),
            "--termination-log", str(outcome_file),
            stdout=asyncio.subprocess.DEVNULL, env={**os.environ, **env},
        )
        try:
            await proc.wait()
        except asyncio.CancelledError:
            await stop(proc, grace=5)
            raise
        outcome: dict[str, Any] = json.loads(outcome_file.read_text()) if outcome_file.exists() else {}
    if proc.returncode == 0 and outcome.get("result") == "Succeeded":
        return PullOutcome(True, outcome["path"], outcome.get("sha256"), outcome.get("bytesFetched", 0))
    return PullOutcome(False, reason=outcome.get("reason", "PullFailed"),
                       message=outcome.get("message", f"localmodel-pull exited with {proc.returncode}"))


def server_command(spec: ModelSpec, model_path: str, port: int, drain_timeout: float) -> list[str]:
    """The flags build_server gives the container, for a loopback port."""
    cmd = [
        sys.executable, "-m", "localmodel_server.main", "--model-path", model_path,
        "--served-name", spec.served_name, "--parallel", str(spec.parallel),
        "--gpu-layers", str(spec.effective_gpu_layers), "--host", LOOPBACK, "--port", str(port),
        "--drain-timeout", str(drain_timeout),
    ]
    if spec.aliases:
        cmd += ["--aliases", ",".join(spec.aliases)]
    if spec.context_size:
        cmd += ["--context-size", str(spec.context_size)]
    return [*cmd, *spec.args]


def plain_env(spec: ModelSpec) -> dict[str, str]:
    """spec.env entries with literal values (valueFrom needs a cluster and is skipped)."""
    return {e["name"]: str(e["value"]) for e in spec.env if "value" in e}


async def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *cmd, stdout=out, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )


async def wait_loaded(proc: asyncio.subprocess.Process, url: str, timeout: float,
                      interval: float = 0.02) -> tuple[str | None, dict[str, float]]:
    """None once `url` answers 200, else why not (exited, or not ready by the deadline); and how long
    the start took: `processStart` until the server first answered (its readiness failing while the
    model loads), then `modelLoad` until it was ready.

    Polled often: a request is waiting on this, and each poll is one loopback round trip.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + timeout
    answered: float | None = None
    last = "no answer"
    async with httpx.AsyncClient(timeout=2) as client:
        while loop.time() < deadline:
            if proc.returncode is not None:
                return f"exited with status {proc.returncode}", {}
            try:
                response = await client.get(url)
                now = loop.time()
                answered = now if answered is None else answered
                if response.status_code == 200:
                    return None, {"processStart": answered - started, "modelLoad": now - answered}
                last = _error_message(response)
            except httpx.TransportError:
                pass
            await asyncio.sleep(interval)
    return f"not ready after {timeout:.0f}s ({last})", {}


def _error_message(response: httpx.Response) -> str:
    try:
        return response.json()["error"]["message"]
    except Exception:  # noqa: BLE001 - any non-envelope answer: say its status
        return f"HTTP {response.status_code}"


async def stop(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM (the child drains), then SIGKILL after `grace` seconds."""
    if proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()
