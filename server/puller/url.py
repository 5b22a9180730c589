"""`source.url`: a plain HTTP(S) file, optionally behind a bearer token."""

from __future__ import annotations

import os

from .transfer import HttpRequest
from .remote import RemoteFile


def resolve_url(url: str) -> RemoteFile:
    headers = {"User-Agent": "localmodel-pull"}
    if token := os.environ.get("BEARER_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    request = HttpRequest(url, headers)
    return RemoteFile(request=lambda: request)
