"""`localmodel up`: pull, serve and route a set of LocalModels on this machine until stopped.

What the operator and kubelet do in a cluster happens here in one process:
each model is pulled with localmodel-pull, served by its own localmodel-server
on a free loopback port, and listed in the router's static route table, which
is rewritten whenever a model changes state. A model that fails stays in the
table as not ready, so clients get the same 503 (with the reason) as in a
cluster while the other models keep serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
import yaml

from . import children
from .layout import Layout
from .manifests import Manifest, secret_env, source_json

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0


class StartupError(Exception):
    """Something the user must fix before anything can start (e.g. the port is taken)."""


@dataclass
class ModelRun:
    manifest: Manifest
    status: str = "pending"  # pending, pulling, loading, ready, failed
    reason: str = ""
    port: int | None = None
    proc: asyncio.subprocess.Process | None = None
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def name(self) -> str:
        return self.manifest.model.spec.served_name

    def route(self) -> dict[str, Any]:
        spec = self.manifest.model.spec
        ready = self.status == "ready"
        return {
            "name": spec.served_name, "aliases": list(spec.aliases),
            "endpoints": [f"http://{children.LOOPBACK}:{self.port}"] if ready else [],
            "ready": ready, "status": self.reason or self.status, "created": self.created,
        }

    def summary(self) -> dict[str, Any]:
        spec = self.manifest.model.spec
        return {
            "name": self.manifest.model.name, "servedName": spec.served_name, "aliases": list(spec.aliases),
            "status": self.status, "reason": self.reason, "port": self.port,
            "pid": self.proc.pid if self.proc else None, "slots": spec.parallel, "file": str(self.manifest.path),
        }


class Supervisor:
    def __init__(self, manifests: list[Manifest], layout: Layout, *, host: str, port: int,
                 drain_timeout: float = 10.0, volumes: dict[str, Path] | None = None,
                 out: TextIO = sys.stdout) -> None:
        self.layout = layout
        self.host, self.port = host, port
        self.drain_timeout = drain_timeout
        self.volumes = volumes or {}
        self.out = out
        self.runs = [ModelRun(m) for m in manifests]
        self.router: asyncio.subprocess.Process | None = None
        self.phase = "starting"
        self._stop = asyncio.Event()
        self._watchers: list[asyncio.Task] = []  # one per serving model: notices a server that dies
        # Secrets are checked before anything starts: a missing one is the user's to fix.
        self._secrets = {run.manifest.key: secret_env(run.manifest, layout) for run in self.runs}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    async def run(self) -> None:
        if not children.port_is_free(self.host, self.port):
            raise StartupError(f"{self.host}:{self.port} is already in use; stop what holds it or pass --port")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop.set)
        self.layout.run.mkdir(parents=True, exist_ok=True)
        try:
            self._publish()
            self.router = await children.spawn(
                [sys.executable, "-m", "localmodel_server.router.main",
                 "--routes", str(self.layout.routes_file), "--host", self.host, "--port", str(self.port)],
                self.layout.logs / "router.log",
            )
            problem = await children.wait_ready(self.router, f"http://{self.host}:{self.port}/readyz", 60)
            if problem:
                raise StartupError(f"the router did not start ({problem}); see {self.layout.logs / 'router.log'}")
            starting = asyncio.create_task(self._start_models())
            stopped = asyncio.create_task(self._stop.wait())
            router_died = asyncio.create_task(self.router.wait())
            done, _ = await asyncio.wait({starting, stopped, router_died}, return_when=asyncio.FIRST_COMPLETED)
            if starting in done:
                starting.result()
                await self._router_caught_up()
                self.phase = "serving"
                self._publish()
                self._print_ready_line()
                await asyncio.wait({stopped, router_died}, return_when=asyncio.FIRST_COMPLETED)
            if router_died.done() and not self._stop.is_set():
                print(f"localmodel: the router exited ({self.router.returncode}); stopping", file=self.out)
            for task in (starting, stopped, router_died):
                task.cancel()
            # Let a pull or load in progress unwind (it stops its own child) before shutting down.
            await asyncio.gather(starting, return_exceptions=True)
        finally:
            await self._shutdown()

    async def _start_models(self) -> None:
        # Pulls run one at a time (one progress bar, one saturated link); each model starts
        # serving as soon as its own weights are in place.
        loads = []
        for run in self.runs:
            model_path = await self._pull(run)
            if model_path is not None:
                loads.append(asyncio.create_task(self._serve(run, model_path)))
        await asyncio.gather(*loads)

    async def _pull(self, run: ModelRun) -> str | None:
        manifest = run.manifest
        source = manifest.model.spec.source
        self._set(run, "pulling", "downloading")
        print(f"localmodel: pulling {manifest.model.name} ({source.summary()})", file=self.out, flush=True)
        if source.kind == "pvc":
            claim = source.claim_name or ""
            dest = self.volumes.get(claim, self.layout.volume_dir(claim))
        else:
            dest = self.layout.model_dir(manifest.model.namespace, manifest.model.name)
        outcome = await children.pull(source_json(manifest), dest, self._secrets[manifest.key])
        if not outcome.ok:
            self._set(run, "failed", f"failed: {outcome.reason}: {outcome.message}")
            print(f"localmodel: {manifest.model.name} failed to pull: {outcome.reason}: {outcome.message}",
                  file=self.out, flush=True)
            return None
        return outcome.path

    async def _serve(self, run: ModelRun, model_path: str) -> None:
        spec = run.manifest.model.spec
        run.port = children.free_port()
        self._set(run, "loading", "loading the model")
        run.proc = await children.spawn(
            children.server_command(spec, model_path, run.port, self.drain_timeout),
            self.layout.logs / f"{run.manifest.model.name}.log", env=children.plain_env(spec),
        )
        problem = await children.wait_ready(run.proc, f"http://{children.LOOPBACK}:{run.port}/readyz", LOAD_TIMEOUT)
        if problem:
            self._set(run, "failed", f"failed: the server {problem}")
            print(f"localmodel: {run.manifest.model.name} failed to load: {problem}; see "
                  f"{self.layout.logs / (run.manifest.model.name + '.log')}", file=self.out, flush=True)
            await children.stop(run.proc, grace=5)
            return
        self._set(run, "ready", "")
        self._watchers.append(asyncio.create_task(self._watch(run)))

    async def _watch(self, run: ModelRun) -> None:
        assert run.proc is not None
        code = await run.proc.wait()
        if self.phase != "stopping":
            self._set(run, "failed", f"failed: the server exited with status {code}")
            print(f"localmodel: {run.manifest.model.name} stopped unexpectedly ({code})", file=self.out, flush=True)

    def _set(self, run: ModelRun, status: str, reason: str) -> None:
        run.status, run.reason = status, reason
        self._publish()

    def _publish(self) -> None:
        """Rewrite the route table and the state file, each atomically."""
        _write_atomic(self.layout.routes_file, yaml.safe_dump({"models": [r.route() for r in self.runs]}))
        state = {"pid": os.getpid(), "url": self.url, "phase": self.phase,
                 "router": {"pid": self.router.pid if self.router else None, "host": self.host, "port": self.port},
                 "models": [r.summary() for r in self.runs]}
        _write_atomic(self.layout.state_file, json.dumps(state, indent=2))

    async def _router_caught_up(self, timeout: float = 15.0) -> None:
        """Wait until the router has re-read the route table, so "serving" means clients get answers."""
        expected = {r.name for r in self.runs if r.status == "ready"}
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(timeout=2) as client:
            while asyncio.get_running_loop().time() < deadline:
                try:
                    cards = (await client.get(f"{self.url}/models")).json()["data"]
                    if expected <= {c["id"] for c in cards if c.get("ready")}:
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await asyncio.sleep(0.1)
        log.warning("the router did not pick up the route table within %.0fs", timeout)

    def _print_ready_line(self) -> None:
        ready = [r for r in self.runs if r.status == "ready"]
        names = ", ".join(
            r.name + (f" (aliases: {', '.join(r.manifest.model.spec.aliases)})" if r.manifest.model.spec.aliases else "")
            for r in ready
        ) or "none"
        print(f"localmodel: serving {self.url} — ready: {names}", file=self.out, flush=True)
        for r in self.runs:
            if r.status == "failed":
                print(f"localmodel: not serving {r.name}: {r.reason}", file=self.out, flush=True)

    async def _shutdown(self) -> None:
        self.phase = "stopping"
        self._publish()
        print("localmodel: stopping (draining in-flight requests)", file=self.out, flush=True)
        procs = [r.proc for r in self.runs if r.proc is not None]
        # Servers first, so the router can still answer while they drain; grace > their drain timeout.
        await asyncio.gather(*(children.stop(p, self.drain_timeout + 5) for p in procs))
        if self.router is not None:
            await children.stop(self.router, 10)
        for task in self._watchers:
            task.cancel()
        self.layout.state_file.unlink(missing_ok=True)
        print("localmodel: stopped", file=self.out, flush=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
