"""Optional API keys for /v1: `Authorization: Bearer <key>`.

Keys come from a file (one per line, `#` comments; a mounted Secret updates
in place, so the file is re-read when it changes) and/or the environment. Only
SHA-256 digests are kept in memory; a presented key is hashed and compared
with every digest in constant time, so neither timing nor an early exit tells
which key or how much of it matched. Keys are never logged.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from localmodel_server.protocol.errors import authentication_error

ENV_KEYS = "LOCALMODEL_ROUTER_API_KEYS"  # comma-separated


def parse_keys_text(text: str) -> list[str]:
    keys = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keys.append(line)
    return keys


def parse_keys_env(value: str | None) -> list[str]:
    return [k.strip() for k in (value or "").split(",") if k.strip()]


def read_keys_file(path: Path) -> list[str]:
    try:
        return parse_keys_text(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read API keys file {path}: {exc.strerror or exc}") from exc


class ApiKeys:
    """The accepted keys. With none configured, every request is let through."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._digests: tuple[bytes, ...] = ()
        self.replace(keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def replace(self, keys: Iterable[str]) -> None:
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in keys)

    def check(self, authorization: str | None) -> None:
        """Raise 401 unless auth is off or the header carries an accepted key."""
        if not self._digests:
            return
        if not authorization:
            raise authentication_error("Missing API key. Send it as 'Authorization: Bearer <key>'.")
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise authentication_error("Malformed Authorization header. Send 'Authorization: Bearer <key>'.")
        if not self.accepts(key.strip()):
            raise authentication_error("Invalid API key.")

    def accepts(self, key: str) -> bool:
        presented = hashlib.sha256(key.encode()).digest()
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented, digest)
        return matched

