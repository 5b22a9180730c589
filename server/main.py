"""`localmodel-server`: serve one GGUF model over the OpenAI API."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp, SettingsError
from starlette.types import ASGIApp

from .api.app import create_app
from .api.http_protocol import LimitedHttpToolsProtocol
from .http_limits import SERVER_KEEP_ALIVE_S
from .logs import configure_logging
from .metrics import ServerMetrics
from .runtime import ModelRuntime
from .settings import ServerSettings

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, with SIGTERM meaning: fail readiness, refuse new work, finish in-flight work, exit.

    A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, runtime: ModelRuntime, drain_timeout: float) -> None:
        super().__init__(config)
        self.runtime = runtime
        self.drain_timeout = drain_timeout
        self._draining = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets=None) -> None:  # type: ignore[no-untyped-def]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._draining or self._loop is None:
            super().handle_exit(sig, frame)
            return
        self._draining = True
        log.info("received %s: draining", signal.Signals(sig).name)
        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain_then_exit()))

    async def _drain_then_exit(self) -> None:
        await self.runtime.drain(self.drain_timeout)
        self.should_exit = True


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    try:
        settings = CliApp.run(ServerSettings, cli_args=sys.argv[1:] if argv is None else argv)
    except (ValidationError, SettingsError) as exc:
        print(f"localmodel-server: invalid configuration:\n{exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if not settings.model_path.is_file():
        print(f"localmodel-server: model file not found: {settings.model_path}", file=sys.stderr)
        raise SystemExit(2)
    runtime = ModelRuntime(settings, ServerMetrics())
    DrainingServer(server_config(create_app(settings, runtime=runtime), settings), runtime, settings.drain_timeout).run()
    exit_now()


def exit_now() -> None:
    """Exit without tearing down the interpreter's modules.

    By now requests are drained and the model is freed (the app's shutdown). Finalizing the
    imports would only add ~150 ms to the exit, and a model evicted under
    `localmodel up --max-loaded` makes the next model's load wait for exactly this exit.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def server_config(app: ASGIApp, settings: ServerSettings) -> uvicorn.Config:
    return uvicorn.Config(
        app, host=settings.host, port=settings.port, access_log=False, log_config=None,
        # In-flight requests were already drained; this only bounds idle keep-alive connections.
        timeout_graceful_shutdown=2,
        # The router's connection pool reuses idle connections inside this window.
        timeout_keep_alive=SERVER_KEEP_ALIVE_S,
        # httptools, as "auto" picks, with the router's limits on a request's head.
        http=LimitedHttpToolsProtocol,
    )


if __name__ == "__main__":
    main()
