"""A file to download, as each source resolves it for the HTTP transfer engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .transfer import HttpRequest


@dataclass(frozen=True)
class RemoteFile:
    request: Callable[[], HttpRequest]  # called before every attempt: presigned URLs expire
    size: int | None = None  # known before the transfer (Hub or S3 metadata)
    sha256: str | None = None  # what the bytes must hash to, from the remote's own metadata
    version: str | None = None  # pins a partial download: a different value starts it over
    defaults: dict[str, Any] | None = None  # request defaults the model carries (Ollama's params layer)
