"""`localmodel`: run LocalModel manifests on one machine, Ollama-style.

    localmodel up [FILES or DIRS...] [--detach]   pull, serve and route until Ctrl-C
    localmodel down                               stop a detached `up`
    localmodel pull FILES...                      pull only
    localmodel list [FILES or DIRS...]            models on this machine: served, named, cached
    localmodel ps                                 what `up` serves now, loaded or not
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import psutil

from ..contract import human_bytes
from .layout import Layout
from .manifests import ManifestError, load, secret_env, source_json
from ..contract import parse_keep_alive
from .schedule import DEFAULT_KEEP_ALIVE
from .supervisor import Serving, StartupError, Supervisor
from . import children, listing

DEFAULT_PORT = 11434  # Ollama's: clients written for its OpenAI endpoint work unchanged
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="localmodel", description="Run LocalModel manifests on this machine.")
    parser.add_argument("--cache-dir", type=Path, help="weights, volumes and run state (default: ~/.cache/localmodel)")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="pull, serve and route models until stopped")
    up.add_argument("paths", nargs="*", type=Path, default=[Path("localmodels")],
                    help="manifest files or directories (default: ./localmodels)")
    up.add_argument("--host", default="127.0.0.1", help="router address (default: 127.0.0.1)")
    up.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"router port (default: {DEFAULT_PORT})")
    up.add_argument("--volume", action="append", default=[], metavar="CLAIM=DIR",
                    help="directory standing in for a pvc source's claim (default: <cache>/volumes/<claim>)")
    up.add_argument("--drain-timeout", type=float, default=10.0, help="seconds requests may finish on stop")
    up.add_argument("--detach", action="store_true", help="run in the background; `localmodel down` stops it")
    up.add_argument("--keep-alive", metavar="DURATION",
                    help="how long a model stays loaded with no request, as Ollama's keep_alive: 30s, 10m, 1h, "
                         f"0 (unload after each request), -1 (never); spec.keepAlive overrides it "
                         f"(default: {DEFAULT_KEEP_ALIVE}, or -1 with --preload)")
    up.add_argument("--max-loaded", type=int, default=0, metavar="N",
                    help="models loaded at once, as OLLAMA_MAX_LOADED_MODELS; a request for another evicts the "
                         "least recently used idle one (default: 0, no cap)")
    up.add_argument("--preload", action="store_true",
                    help="load every model at start (up to --max-loaded) instead of on its first request")
    up.add_argument("--wait-timeout", type=float, default=120.0, metavar="SECONDS",
                    help="how long a request waits for a place under --max-loaded before 503 (default: 120)")
    up.add_argument("--loading-heartbeat", type=float, default=2.0, metavar="SECONDS",
                    help="a streamed request waiting for its model gets an SSE ': loading' comment this often")

    sub.add_parser("down", help="stop a detached `localmodel up`")
    pull = sub.add_parser("pull", help="pull the weights of manifests, without serving")
    pull.add_argument("paths", nargs="+", type=Path)
    listing = sub.add_parser("list", help="models on this machine: those `up` serves, those FILES name, and the cache")
    listing.add_argument("paths", nargs="*", type=Path, help="manifest files or directories to include")
    listing.add_argument("--volume", action="append", default=[], metavar="CLAIM=DIR",
                         help="directory standing in for a pvc source's claim, as for `up`")
    sub.add_parser("ps", help="models being served now")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    layout = Layout.default(args.cache_dir)
    try:
        return COMMANDS[args.command](args, layout)
    except (ManifestError, StartupError) as exc:
        print(f"localmodel: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def cmd_up(args: argparse.Namespace, layout: Layout) -> int:
    manifests = load(args.paths)
    volumes = _volumes(args.volume)
    if _running(layout) is not None:
        raise StartupError("already running (see `localmodel ps`); stop it with `localmodel down`")
    if args.detach:
        return _detach(args, layout)
    serving = _serving(args)
    supervisor = Supervisor(manifests, layout, host=args.host, port=args.port,
                            drain_timeout=args.drain_timeout, volumes=volumes, serving=serving)
    _event_loop_run(supervisor.run())
    return 0


def _serving(args: argparse.Namespace) -> Serving:
    keep_alive = args.keep_alive if args.keep_alive is not None else ("-1" if args.preload else DEFAULT_KEEP_ALIVE)
    try:
        parse_keep_alive(keep_alive)
    except ValueError as exc:
        raise StartupError(f"--keep-alive: {exc}") from None
    if args.max_loaded < 0:
        raise StartupError("--max-loaded wants 0 (no cap) or more")
    return Serving(keep_alive=keep_alive, max_loaded=args.max_loaded, preload=args.preload,
                   wait_timeout=args.wait_timeout, heartbeat=args.loading_heartbeat)


def _event_loop_run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop  # the router's server was measured on it (docs/router.md)
    except ImportError:  # optional: the standard loop is slower, not wrong
        asyncio.run(main)
        return
    uvloop.run(main)


def _volumes(specs: list[str]) -> dict[str, Path]:
    volumes = {}
    for spec in specs:
        claim, sep, directory = spec.partition("=")
        if not sep or not claim or not directory:
            raise StartupError(f"--volume wants CLAIM=DIR, got {spec!r}")
        volumes[claim] = Path(directory).resolve()
    return volumes


def _detach(args: argparse.Namespace, layout: Layout) -> int:
    argv = [a for a in args.argv if a != "--detach"]
    layout.run.mkdir(parents=True, exist_ok=True)
    log = layout.run / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "localmodel_server.local.cli", *argv],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    while proc.poll() is None:
        state = _state(layout)
        if state and state.get("phase") == "serving" and state.get("pid") == proc.pid:
            print(_ready_line(state))
            return 0
        time.sleep(0.2)
    print(f"localmodel: `up` exited with status {proc.returncode}:\n{log.read_text()[-2000:]}", file=sys.stderr)
    return 1


def cmd_down(args: argparse.Namespace, layout: Layout) -> int:
    state = _running(layout)
    if state is None:
        print("localmodel: nothing is running")
        return 0
    os.kill(state["pid"], signal.SIGTERM)
    try:
        psutil.Process(state["pid"]).wait(120)
    except psutil.NoSuchProcess:
        pass
    print("localmodel: stopped")
    return 0


def cmd_pull(args: argparse.Namespace, layout: Layout) -> int:
    manifests = load(args.paths)
    failed = 0
    for m in manifests:
        source = m.model.spec.source
        dest = (layout.volume_dir(source.claim_name or "") if source.kind == "pvc"
                else layout.model_dir(m.model.namespace, m.model.name))
        outcome = asyncio.run(children.pull(source_json(m), dest, secret_env(m, layout)))
        if outcome.ok:
            print(f"{m.model.name}: {outcome.path} sha256:{outcome.sha256} ({outcome.fetched} bytes fetched)")
        else:
            failed += 1
            print(f"{m.model.name}: failed: {outcome.reason}: {outcome.message}", file=sys.stderr)
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace, layout: Layout) -> int:
    state = _running(layout)
    volumes = _volumes(args.volume)
    if state is not None:
        volumes = {**{k: Path(v) for k, v in state.get("volumes", {}).items()}, **volumes}
    named = listing.from_manifests(load(args.paths), layout, volumes) if args.paths else []
    items = listing.merged(listing.from_state(state) if state else [], named, listing.from_cache(layout))
    digests = listing.DigestCache(layout)
    _table(("NAME", "SIZE", "SHA256", "SOURCE"), [item.row(digests) for item in items])
    digests.save()
    return 0


def cmd_ps(args: argparse.Namespace, layout: Layout) -> int:
    state = _running(layout)
    if state is None:
        print("localmodel: nothing is running")
        return 0
    print(f"serving: {state['url']} (pid {state['pid']})")
    rows = []
    for m in state["models"]:
        busy, memory, busy_now = "-", "-", False
        if m["status"] == "loaded" and m["port"]:
            slots = _busy_slots(m["port"])
            busy, busy_now = f"{slots}/{m['slots']}", slots not in ("0", "?")
            memory = human_bytes(_rss(m["pid"]))
        served = m["servedName"] + (f" ({', '.join(m['aliases'])})" if m["aliases"] else "")
        rows.append((served, m["status"] + (f": {m['reason']}" if m["status"] == "failed" else ""),
                     listing.until(m, busy_now), str(m["port"] or "-"), busy, memory))
    _table(("MODEL", "STATUS", "UNTIL", "PORT", "SLOTS BUSY", "MEMORY"), rows)
    return 0


COMMANDS = {"up": cmd_up, "down": cmd_down, "pull": cmd_pull, "list": cmd_list, "ps": cmd_ps}


def _state(layout: Layout) -> dict | None:
    try:
        return json.loads(layout.state_file.read_text())
    except (OSError, ValueError):
        return None


def _running(layout: Layout) -> dict | None:
    state = _state(layout)
    if state and psutil.pid_exists(state["pid"]):
        return state
    return None


def _ready_line(state: dict) -> str:
    ready = [m["servedName"] for m in state["models"] if m["status"] not in ("pulling", "failed")]
    return f"localmodel: serving {state['url']} — ready: {', '.join(ready) or 'none'}"


def _busy_slots(port: int) -> str:
    try:
        text = httpx.get(f"http://{children.LOOPBACK}:{port}/metrics", timeout=2).text
    except httpx.HTTPError:
        return "?"
    for line in text.splitlines():
        if line.startswith("localmodel_busy_slots "):
            return str(int(float(line.split()[1])))
    return "?"


def _rss(pid: int | None) -> int:
    try:
        return psutil.Process(pid).memory_info().rss if pid else 0
    except psutil.NoSuchProcess:
        return 0


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
