"""The model directory on the volume: model.gguf, its marker, and the partial download.

Invariants (the model server loads `model.gguf` whenever it exists):
- bytes arrive only in `model.gguf.partial`, on the same volume, so the final
  `rename` is atomic and a half-written or unverified file is never at model.gguf;
- `model.gguf.partial.json` records which source and which remote version the
  partial bytes belong to, so a restarted process resumes only matching bytes;
- the marker `model.gguf.json` is written after the rename and removed before a
  different source is fetched, so it never describes bytes that are not there.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PullError, Reason

MODEL_FILE = "model.gguf"
MARKER_FILE = "model.gguf.json"
PARTIAL_FILE = "model.gguf.partial"
PARTIAL_STATE_FILE = "model.gguf.partial.json"
_HASH_BLOCK = 1 << 22


@dataclass(frozen=True)
class RemoteVersion:
    """What a server said about the bytes: the validators used for If-Range."""

    etag: str | None = None
    last_modified: str | None = None
    size: int | None = None

    def if_range(self) -> str | None:
        """A strong ETag, else Last-Modified (RFC 9110 forbids weak ETags in If-Range)."""
        if self.etag and not self.etag.startswith("W/"):
            return self.etag
        return self.last_modified


@dataclass(frozen=True)
class Marker:
    source: dict[str, Any]
    size_bytes: int
    sha256: str
    gguf: dict[str, Any]
    # Request defaults the model server applies (Ollama's params layer), in Ollama's option names.
    defaults: dict[str, Any] | None = None

    def to_json(self) -> str:
        data = {"source": self.source, "sizeBytes": self.size_bytes, "sha256": self.sha256, "gguf": self.gguf}
        if self.defaults:
            data["defaults"] = self.defaults
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Marker:
        data = json.loads(text)
        return cls(data["source"], int(data["sizeBytes"]), str(data["sha256"]), dict(data["gguf"]),
                   data.get("defaults"))


def sha256_of_prefix(path: Path, length: int) -> hashlib._Hash:
    """Hash the first `length` bytes of a file, block by block (never all in memory)."""
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as f:
        remaining = length
        buffer = memoryview(bytearray(min(_HASH_BLOCK, max(length, 1))))
        while remaining > 0:
            n = f.readinto(buffer[: min(len(buffer), remaining)])
            if not n:
                raise OSError(f"{path} is shorter than {length} bytes")
            digest.update(buffer[:n])
            remaining -= n
    return digest


def storage_error(err: OSError, dest: Path) -> PullError | None:
    """Volume problems get the storage reason, with the real cause in the message; others are not ours."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return PullError(Reason.INSUFFICIENT_STORAGE, f"the volume at {dest} is full: {err.strerror}")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PullError(
            Reason.INSUFFICIENT_STORAGE,
            f"cannot write to {dest}: {err.strerror} (check the volume's access mode and the pod's fsGroup)",
        )
    return None


class PartialDownload:
    """The partial file plus the state that says whether its bytes may be resumed."""

    def __init__(self, directory: Path, key: dict[str, Any]) -> None:
        self.path = directory / PARTIAL_FILE
        self.state_path = directory / PARTIAL_STATE_FILE
        self.key = key
        self.version: RemoteVersion | None = None
        state = self._load_state()
        if state is not None and state.get("key") == key and self.path.exists():
            self.version = RemoteVersion(**state.get("version", {}))
        else:
            self.restart(None)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def restart(self, version: RemoteVersion | None) -> None:
        """Drop any bytes: the next ones start at offset 0 and belong to `version`."""
        with self.path.open("wb"):
            pass
        self.record(version)

    def record(self, version: RemoteVersion | None) -> None:
        self.version = version
        state = {"key": self.key, "version": {} if version is None else version.__dict__}
        _write_atomically(self.state_path, json.dumps(state, sort_keys=True))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.state_path.unlink(missing_ok=True)

    def _load_state(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None


class ModelDir:
    """`dest` as the puller sees it."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.model_path = dest / MODEL_FILE
        self.marker_path = dest / MARKER_FILE

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One puller per directory at a time (two Jobs on one node, say); a second one waits.

        flock on the directory itself, so no lock file is left on the volume.
        """
        self.dest.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.dest, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def current(self, identity: dict[str, Any]) -> Marker | None:
        """The marker, if it describes this source and model.gguf is still there at that size."""
        try:
            marker = Marker.from_json(self.marker_path.read_text())
            size = self.model_path.stat().st_size
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return marker if marker.source == identity and marker.size_bytes == size else None

    def forget_marker(self) -> None:
        """The marker is about to stop describing what is being fetched."""
        self.marker_path.unlink(missing_ok=True)

    def partial(self, key: dict[str, Any]) -> PartialDownload:
        return PartialDownload(self.dest, key)

    def ensure_free_space(self, needed: int) -> None:
        free = shutil.disk_usage(self.dest).free
        if needed > free:
            raise PullError(
                Reason.INSUFFICIENT_STORAGE,
                f"{needed} more bytes are needed at {self.dest} but only {free} are free; "
                "raise spec.storage.size",
            )

    def install(self, partial: PartialDownload, marker: Marker) -> None:
        """Move verified bytes into place, then write the marker that vouches for them."""
        with partial.path.open("rb+") as f:
            os.fsync(f.fileno())
        os.replace(partial.path, self.model_path)
        _fsync_dir(self.dest)
        _write_atomically(self.marker_path, marker.to_json())
        partial.state_path.unlink(missing_ok=True)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
