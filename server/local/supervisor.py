"""`localmodel up`: pull, serve and route a set of LocalModels on this machine until stopped.

What the operator and kubelet do in a cluster happens here in one process:
each model is pulled with localmodel-pull, then served by its own
localmodel-server on a free loopback port, started when the first request
names it (or at once with --preload) and stopped after --keep-alive idle, or to
make room under --max-loaded (schedule.py decides, ondemand.py executes). The
router runs in this process behind front.py, which holds a request while its
model loads. A model that fails stays listed with the reason, so clients get
the same 503 as in a cluster while the other models keep serving.
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

from localmodel_server.router.app import Router, RouterSettings
from localmodel_server.router.auth import ApiKeys
from localmodel_server.router.http1 import HTTPServer
from localmodel_server.router.routes import RouteEntry, RouteTable

from . import children
from .front import Front
from .layout import Layout
from .manifests import Manifest, secret_env, source_json
from .ondemand import Scheduler, Slot
from ..contract import parse_keep_alive
from .schedule import DEFAULT_KEEP_ALIVE, unload_at

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0
# `localmodel ps` reads the state file: after a request ends it is rewritten at most this often.
STATE_DEBOUNCE_S = 0.5


class StartupError(Exception):
    """Something the user must fix before anything can start (e.g. the port is taken)."""


@dataclass(frozen=True)
class Serving:
    """How models are loaded and unloaded (the `up` flags)."""

    keep_alive: str = DEFAULT_KEEP_ALIVE
    max_loaded: int = 0  # 0: no cap
    preload: bool = False
    wait_timeout: float = 120.0
    heartbeat: float = 2.0


@dataclass
class ModelRun:
    manifest: Manifest
    slot: Slot
    keep_alive: str
    pull: str = "pending"  # pending, pulling, pulled, failed
    reason: str = ""  # why the pull or the last load failed, or the server stopped
    model_path: str | None = None
    sha256: str | None = None
    size: int = 0
    port: int | None = None
    proc: asyncio.subprocess.Process | None = None
    timings: dict[str, float] = field(default_factory=dict)  # the last load: processStart, modelLoad seconds
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def name(self) -> str:
        return self.manifest.model.spec.served_name

    @property
    def status(self) -> str:
        if self.pull == "failed":
            return "failed"
        if self.pull != "pulled":
            return "pulling"
        if self.slot.phase == "unloaded" and self.slot.failed is not None:
            return "failed"
        return self.slot.phase

    def describe(self) -> tuple[bool, str]:
        """(whether a request is answered or tried, the status clients see in /v1/models)."""
        status = self.status
        if status == "pulling":
            return False, "downloading"
        if status == "failed":
            return self.pull == "pulled", f"failed: {self.reason}"
        return True, status

    def route(self) -> RouteEntry:
        spec = self.manifest.model.spec
        ready = self.slot.phase == "loaded" and self.port is not None
        return RouteEntry(name=spec.served_name, aliases=tuple(spec.aliases), created=self.created,
                          endpoints=(f"http://{children.LOOPBACK}:{self.port}",) if ready else (),
                          enabled=ready, reason="" if ready else self.describe()[1])

    def summary(self, mono_now: float, wall_now: float) -> dict[str, Any]:
        spec = self.manifest.model.spec
        at = unload_at(self.slot.state())
        return {
            "name": self.manifest.model.name, "namespace": self.manifest.model.namespace,
            "servedName": spec.served_name, "aliases": list(spec.aliases),
            "status": self.status, "reason": self.reason, "port": self.port,
            "pid": self.proc.pid if self.proc else None, "slots": spec.parallel, "file": str(self.manifest.path),
            "inFlight": self.slot.in_flight, "keepAlive": self.keep_alive,
            "unloadAt": None if at is None else wall_now + (at - mono_now),
            "path": self.model_path, "sizeBytes": self.size, "sha256": self.sha256,
            "source": spec.source.summary(), "timings": self.timings,
        }


class Supervisor:
    def __init__(self, manifests: list[Manifest], layout: Layout, *, host: str, port: int,
                 drain_timeout: float = 10.0, volumes: dict[str, Path] | None = None,
                 serving: Serving = Serving(), out: TextIO = sys.stdout) -> None:
        self.layout = layout
        self.host, self.port = host, port
        self.drain_timeout = drain_timeout
        self.volumes = volumes or {}
        self.serving = serving
        self.out = out
        self.runs = [self._run(m) for m in manifests]
        self._by_name = {r.name: r for r in self.runs}
        self.scheduler = Scheduler([r.slot for r in self.runs], load=self._load, unload=self._unload,
                                   changed=self._publish, max_loaded=serving.max_loaded,
                                   wait_timeout=serving.wait_timeout, notice=self._say)
        self.router = Router(RouterSettings(), ApiKeys([]))
        self.phase = "starting"
        self._stop = asyncio.Event()
        self._publish_handle: asyncio.TimerHandle | None = None
        self._routes: tuple[RouteEntry, ...] | None = None
        self._watchers: set[asyncio.Task[None]] = set()  # one per server process: notices one that dies
        # Secrets are checked before anything starts: a missing one is the user's to fix.
        self._secrets = {run.manifest.key: secret_env(run.manifest, layout) for run in self.runs}

    def _run(self, manifest: Manifest) -> ModelRun:
        text = manifest.body["spec"].get("keepAlive") or self.serving.keep_alive
        slot = Slot(manifest.model.spec.served_name, parse_keep_alive(text), blocked="downloading")
        return ModelRun(manifest, slot, text)

    def _say(self, line: str) -> None:
        print(f"localmodel: {line}", file=self.out, flush=True)

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
        self.router.server()  # creates the router's proxy and connection pool
        front = Front(self.router, self.scheduler, lambda name: self._by_name[name].describe(), self.serving.heartbeat)
        http = HTTPServer(front.handle, self.router.refuse, self.router.settings.max_body_bytes)
        try:
            listener = await loop.create_server(http, self.host, self.port, reuse_address=True, backlog=1024)
        except OSError as exc:
            raise StartupError(f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}") from None
        reaper = asyncio.create_task(self.scheduler.reap())
        starting = asyncio.create_task(self._start_models())
        try:
            self._publish()
            stopped = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if starting in done:
                starting.result()
                self.phase = "serving"
                self._publish()
                self._print_ready_line()
                await stopped
            stopped.cancel()
        finally:
            starting.cancel()
            # Let a pull or load in progress unwind (it stops its own child) before shutting down.
            await asyncio.gather(starting, return_exceptions=True)
            await self._shutdown(listener, http, reaper)

    async def _start_models(self) -> None:
        # Pulls run one at a time (one progress bar, one saturated link); a model can be
        # loaded as soon as its own weights are in place.
        for run in self.runs:
            await self._pull(run)
        if self.serving.preload:
            await self.scheduler.preload(r.name for r in self.runs)

    async def _pull(self, run: ModelRun) -> None:
        manifest = run.manifest
        source = manifest.model.spec.source
        run.pull = "pulling"
        self._publish()
        print(f"localmodel: pulling {manifest.model.name} ({source.summary()})", file=self.out, flush=True)
        if source.kind == "pvc":
            claim = source.claim_name or ""
            dest = self.volumes.get(claim, self.layout.volume_dir(claim))
        else:
            dest = self.layout.model_dir(manifest.model.namespace, manifest.model.name)
        outcome = await children.pull(source_json(manifest), dest, self._secrets[manifest.key])
        if not outcome.ok:
            run.pull, run.reason = "failed", f"{outcome.reason}: {outcome.message}"
            self.scheduler.block(run.name, f"failed: {run.reason}")
            print(f"localmodel: {manifest.model.name} failed to pull: {run.reason}", file=self.out, flush=True)
            return
        run.pull, run.model_path, run.sha256 = "pulled", outcome.path, outcome.sha256
        run.size = Path(outcome.path or "").stat().st_size if outcome.path else 0
        self.scheduler.block(run.name, "")

    async def _load(self, name: str) -> str | None:
        """Start the model's server; None once it is ready, else why it is not (its process is then gone)."""
        run = self._by_name[name]
        assert run.model_path is not None
        spec = run.manifest.model.spec
        logfile = self.layout.logs / f"{run.manifest.model.name}.log"
        run.port = children.free_port()
        print(f"localmodel: loading {name}", file=self.out, flush=True)
        proc = run.proc = await children.spawn(
            children.server_command(spec, run.model_path, run.port, self.drain_timeout), logfile,
            env=children.plain_env(spec))
        try:
            problem, run.timings = await children.wait_loaded(
                proc, f"http://{children.LOOPBACK}:{run.port}/readyz", LOAD_TIMEOUT)
        except asyncio.CancelledError:
            await children.stop(proc, grace=5)
            run.proc = run.port = None
            raise
        if problem:
            await children.stop(proc, grace=5)
            run.proc = run.port = None
            run.reason = f"the server {problem}; see {logfile}"
            print(f"localmodel: {name} failed to load: {run.reason}", file=self.out, flush=True)
            return run.reason
        run.reason = ""
        watcher = asyncio.create_task(self._watch(run, proc))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return None

    async def _unload(self, name: str, why: str) -> None:
        run = self._by_name[name]
        proc = run.proc
        if proc is not None:
            print(f"localmodel: unloading {name} ({why})", file=self.out, flush=True)
            await children.stop(proc, self.drain_timeout + 5)
        run.proc = run.port = None

    async def _watch(self, run: ModelRun, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        # An exit we did not ask for: no unload under way and this is still the model's process.
        if run.proc is proc and run.slot.phase == "loaded" and self.phase != "stopping":
            run.proc = run.port = None
            run.reason = f"the server exited with status {code}"
            self.scheduler.crashed(run.name, run.reason)
            print(f"localmodel: {run.manifest.model.name} stopped unexpectedly ({code})", file=self.out, flush=True)

    def _publish(self) -> None:
        """Swap in the route table now if it changed (requests see it at once); rewrite the state file soon."""
        entries = tuple(r.route() for r in self.runs)
        if entries != self._routes:
            self._routes = entries
            self.router.publish(RouteTable.build(entries))
        if self._publish_handle is None:
            loop = asyncio.get_running_loop()
            self._publish_handle = loop.call_later(STATE_DEBOUNCE_S if self.phase == "serving" else 0,
                                                   self._write_state)

    def _write_state(self) -> None:
        self._publish_handle = None
        mono, wall = time.monotonic(), time.time()
        state = {"pid": os.getpid(), "url": self.url, "phase": self.phase,
                 "router": {"pid": os.getpid(), "host": self.host, "port": self.port},
                 "serving": {"keepAlive": self.serving.keep_alive, "maxLoaded": self.serving.max_loaded,
                             "preload": self.serving.preload},
                 "volumes": {k: str(v) for k, v in self.volumes.items()},
                 "models": [r.summary(mono, wall) for r in self.runs]}
        _write_atomic(self.layout.state_file, json.dumps(state, indent=2))

    def _print_ready_line(self) -> None:
        ready = [r for r in self.runs if r.pull == "pulled"]
        names = ", ".join(
            r.name + (f" (aliases: {', '.join(r.manifest.model.spec.aliases)})" if r.manifest.model.spec.aliases else "")
            for r in ready
        ) or "none"
        print(f"localmodel: serving {self.url} — ready: {names}", file=self.out, flush=True)
        if not self.serving.preload:
            cap = f", at most {self.serving.max_loaded} at once" if self.serving.max_loaded else ""
            print(f"localmodel: models load on their first request{cap} and unload after "
                  f"{self.serving.keep_alive} idle (--keep-alive)", file=self.out, flush=True)
        for r in self.runs:
            if r.status == "failed":
                print(f"localmodel: not serving {r.name}: failed: {r.reason}", file=self.out, flush=True)

    async def _shutdown(self, listener: asyncio.Server, http: HTTPServer, reaper: asyncio.Task[None]) -> None:
        self.phase = "stopping"
        self._write_state()
        print("localmodel: stopping (draining in-flight requests)", file=self.out, flush=True)
        listener.close()
        reaper.cancel()
        await asyncio.gather(reaper, return_exceptions=True)
        # Held requests are refused and loads under way stopped; answers being relayed may finish.
        await self.scheduler.close()
        await http.shutdown(self.drain_timeout)
        procs = [r.proc for r in self.runs if r.proc is not None]
        await asyncio.gather(*(children.stop(p, self.drain_timeout + 5) for p in procs))
        self.router.close()
        for watcher in list(self._watchers):
            watcher.cancel()
        if self._publish_handle is not None:
            self._publish_handle.cancel()
        self.layout.state_file.unlink(missing_ok=True)
        print("localmodel: stopped", file=self.out, flush=True)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
