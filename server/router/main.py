"""`localmodel-router`: one OpenAI /v1 endpoint for many models, routed by the `model` field.

Every flag can also be set as an environment variable LOCALMODEL_ROUTER_<FLAG>
(upper snake case), e.g. LOCALMODEL_ROUTER_API_KEYS_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from .app import Router, RouterSettings
from .auth import ENV_KEYS, ApiKeys, parse_keys_env, read_keys_file
from . import scaler
from .filewatch import watch_file
from .static import RoutesFileError, load_routes_file, parse_route_flags, reloader

log = logging.getLogger("localmodel_server.router")


def _env(flag: str, default: Any = None) -> Any:
    return os.environ.get("LOCALMODEL_ROUTER_" + flag.upper().replace("-", "_"), default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="localmodel-router", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--routes", type=Path, default=_env("routes"), help="static route table (YAML or JSON, see docs/router.md); re-read when it changes")
    source.add_argument("--route", action="append", default=None, metavar="NAME[,ALIAS...]=URL[,URL...]", help="a static route; repeatable")
    source.add_argument("--kubernetes", action="store_true", default=(_env("kubernetes") or "").lower() in ("1", "true", "yes"), help="discover LocalModels and their endpoints in the cluster")
    parser.add_argument("--namespace", action="append", default=None, help="with --kubernetes: watch only this namespace; repeatable (default: all)")
    parser.add_argument("--kubeconfig", default=_env("kubeconfig"), help="with --kubernetes: kubeconfig file (default: in-cluster credentials, else ~/.kube/config)")
    parser.add_argument("--host", default=_env("host", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(_env("port", 8080)), help="0 picks a free port (logged)")
    parser.add_argument("--api-keys-file", type=Path, default=_env("api_keys_file"), help=f"accepted API keys, one per line; also ${ENV_KEYS} (comma-separated). No keys: no auth")
    parser.add_argument("--max-body-bytes", type=int, default=int(_env("max_body_bytes", 16 << 20)), help="larger requests get 413")
    parser.add_argument("--connect-timeout", type=float, default=float(_env("connect_timeout", 5.0)), help="seconds to open a backend connection")
    parser.add_argument("--read-timeout", type=float, default=float(_env("read_timeout", 600.0)), help="seconds a backend may send nothing before 504")
    parser.add_argument("--write-timeout", type=float, default=float(_env("write_timeout", 60.0)), help="seconds a client may read nothing of an answer before it is cut off")
    parser.add_argument("--max-connections", type=int, default=int(_env("max_connections", 10_000)), help="open client connections beyond this are answered 503")
    parser.add_argument("--drain-timeout", type=float, default=float(_env("drain_timeout", 30.0)), help="seconds in-flight requests may finish after SIGTERM")
    scaler.add_arguments(parser, _env)
    parser.add_argument("--log-level", default=_env("log_level", "info"), choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    env_namespaces = [ns for ns in (_env("namespace") or "").split(",") if ns]
    args.namespace = args.namespace or env_namespaces
    if not (args.routes or args.route or args.kubernetes):
        parser.error("give a route source: --routes FILE, --route NAME=URL, or --kubernetes")
    if args.namespace and not args.kubernetes:
        parser.error("--namespace needs --kubernetes")
    return args


def load_keys(args: argparse.Namespace) -> list[str]:
    keys = parse_keys_env(os.environ.get(ENV_KEYS))
    if args.api_keys_file:
        keys += read_keys_file(args.api_keys_file)
    return keys


async def serve(args: argparse.Namespace) -> None:
    settings = RouterSettings(args.max_body_bytes, args.connect_timeout, args.read_timeout, args.write_timeout,
                              args.max_connections)
    keys = ApiKeys(load_keys(args))
    router = Router(settings, keys)
    background: list[Coroutine[Any, Any, None]] = []
    if args.routes:
        router.publish(load_routes_file(args.routes))
        background.append(watch_file(args.routes, reloader(args.routes, router.publish)))
    elif args.route:
        router.publish(parse_route_flags(args.route))
    else:
        import kubernetes.config

        from .kube_discovery import KubeConnection, KubeDiscovery

        try:
            api = KubeConnection.load(args.kubeconfig)
        except kubernetes.config.ConfigException as exc:
            raise SystemExit(f"localmodel-router: no usable Kubernetes credentials: {exc}") from None
        background.append(KubeDiscovery(api, args.namespace, router.publish).run())
        background.append(scaler.enable(router, api, args))
    if args.api_keys_file:
        background.append(watch_file(args.api_keys_file, lambda: _reload_keys(args, keys)))

    loop = asyncio.get_running_loop()
    server = router.server()
    try:
        listener = await loop.create_server(server, args.host, args.port, reuse_address=True, backlog=1024)
    except OSError as exc:
        raise SystemExit(f"localmodel-router: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    port = listener.sockets[0].getsockname()[1]
    log.info("serving on http://%s:%d (%s, auth %s)", args.host, port, _source_name(args), "on" if keys.enabled else "off")

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [asyncio.create_task(c) for c in background]
    await stop.wait()
    log.info("stopping: no new connections; waiting up to %g s for requests in flight", args.drain_timeout)
    listener.close()
    await server.shutdown(args.drain_timeout)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    router.close()


def _reload_keys(args: argparse.Namespace, keys: ApiKeys) -> None:
    try:
        keys.replace(load_keys(args))
    except ValueError as exc:
        log.error("keeping the previous API keys: %s", exc)
        return
    log.info("API keys reloaded (%s)", "auth on" if keys.enabled else "auth off")


def _source_name(args: argparse.Namespace) -> str:
    if args.routes:
        return f"routes from {args.routes}"
    if args.route:
        return f"{len(args.route)} routes from flags"
    return "LocalModels in " + (", ".join(args.namespace) if args.namespace else "all namespaces")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # uvloop is optional; the standard loop is slower, not wrong
        run = asyncio.run
    try:
        run(serve(args))
    except (RoutesFileError, ValueError) as exc:
        raise SystemExit(f"localmodel-router: {exc}") from None


if __name__ == "__main__":
    main()
