"""The HTTP limits the model server shares with the router (server/http_limits.py)."""

from __future__ import annotations

from pathlib import Path

from localmodel_server import http_limits
from localmodel_server.main import server_config
from localmodel_server.router.upstream import IDLE_REUSE_S
from localmodel_server.settings import ServerSettings


async def _app(scope, receive, send) -> None:  # never called: only the config is built
    raise AssertionError


def test_the_server_keeps_idle_connections_longer_than_the_router_reuses_them(tmp_path: Path):
    config = server_config(_app, ServerSettings(model_path=tmp_path / "m.gguf"))
    assert config.timeout_keep_alive == http_limits.SERVER_KEEP_ALIVE_S
    assert 0 < http_limits.SERVER_KEEP_ALIVE_S - IDLE_REUSE_S <= 5
