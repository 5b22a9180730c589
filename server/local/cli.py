"""`localmodel`: run LocalModel manifests on one machine, Ollama-style.

    localmodel up [FILES or DIRS...] [--detach]   pull, serve and route until Ctrl-C
    localmodel down                               stop a detached `up`
    localmodel pull FILES...                      pull only
    localmodel list                               cached models
    localmodel ps                                 what `up` is serving now
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
from pathlib import Path

import httpx
import psutil

from ..contract import human_bytes
from .layout import Layout
from .manifests import ManifestError, load, secret_env, source_json
from .supervisor import StartupError, Supervisor
from . import children

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

    sub.add_parser("down", help="stop a detached `localmodel up`")
    pull = sub.add_parser("pull", help="pull the weights of manifests, without serving")
    pull.add_argument("paths", nargs="+", type=Path)
    sub.add_parser("list", help="models whose weights are cached")
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
    supervisor = Supervisor(manifests, layout, host=args.host, port=args.port,
                            drain_timeout=args.drain_timeout, volumes=volumes)
    asyncio.run(supervisor.run())
    return 0


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
    rows = []
    for marker in sorted((layout.cache / "models").glob("*/*/model.gguf.json")):
        data = json.loads(marker.read_text())
        namespace, name = marker.parent.parent.name, marker.parent.name
        rows.append((f"{namespace}/{name}", human_bytes(data.get("sizeBytes", 0)), (data.get("sha256") or "")[:16],
                     _source_text(data.get("source", {}))))
    _table(("NAME", "SIZE", "SHA256", "SOURCE"), rows)
    return 0


def cmd_ps(args: argparse.Namespace, layout: Layout) -> int:
    state = _running(layout)
    if state is None:
        print("localmodel: nothing is running")
        return 0
    print(f"router: {state['url']} (pid {state['router']['pid']})")
    rows = []
    for m in state["models"]:
        busy, memory = "-", "-"
        if m["status"] == "ready" and m["port"]:
            busy = f"{_busy_slots(m['port'])}/{m['slots']}"
            memory = human_bytes(_rss(m["pid"]))
        served = m["servedName"] + (f" ({', '.join(m['aliases'])})" if m["aliases"] else "")
        rows.append((served, m["status"] + (f": {m['reason']}" if m["status"] == "failed" else ""),
                     str(m["port"] or "-"), busy, memory))
    _table(("MODEL", "STATUS", "PORT", "SLOTS BUSY", "MEMORY"), rows)
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
    ready = [m["servedName"] for m in state["models"] if m["status"] == "ready"]
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


def _source_text(source: dict) -> str:
    kind = next(iter(k for k in source if k != "sha256"), "?")
    value = source.get(kind)
    return f"{kind}:{value}" if isinstance(value, str) else f"{kind}:{json.dumps(value, sort_keys=True)}"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    for row in (header, *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
