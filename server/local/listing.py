"""What `localmodel list` and `localmodel ps` print, from the run state, the manifests and the cache.

`list` names every model whose weights are on this machine: those the running
`up` serves (pvc sources used in place included, which leave nothing in the
cache), those of manifests given on the command line, and every download in
the cache. A pvc file given without a sha256 is hashed once; the digest is kept
beside the cache, keyed by the file's size and modification time.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..contract import human_bytes
from .layout import Layout
from .manifests import Manifest

DIGESTS_FILE = "digests.json"


@dataclass(frozen=True)
class Listed:
    name: str  # namespace/name
    path: Path | None
    sha256: str | None
    source: str

    def row(self, digests: DigestCache) -> tuple[str, str, str, str]:
        size = self.path.stat().st_size if self.path is not None and self.path.is_file() else None
        sha256 = self.sha256 or (digests.of(self.path) if size is not None and self.path is not None else None)
        return (self.name, human_bytes(size) if size is not None else "missing", (sha256 or "-")[:16], self.source)


def from_state(state: dict[str, Any]) -> list[Listed]:
    return [Listed(f"{m.get('namespace', 'default')}/{m['name']}", Path(m["path"]) if m.get("path") else None,
                   m.get("sha256"), m.get("source", "?")) for m in state.get("models", [])]


def from_manifests(manifests: list[Manifest], layout: Layout, volumes: dict[str, Path]) -> list[Listed]:
    listed = []
    for m in manifests:
        source = m.model.spec.source
        if source.kind == "pvc":
            claim = source.claim_name or ""
            path = volumes.get(claim, layout.volume_dir(claim)) / m.source["pvc"]["path"]
            sha256 = source.sha256
        else:
            path = layout.model_dir(m.model.namespace, m.model.name) / "model.gguf"
            sha256 = _marker(path.with_name("model.gguf.json")).get("sha256")
        listed.append(Listed(m.key, path, sha256, source.summary()))
    return listed


def from_cache(layout: Layout) -> list[Listed]:
    listed = []
    for marker in sorted((layout.cache / "models").glob("*/*/model.gguf.json")):
        data = _marker(marker)
        listed.append(Listed(f"{marker.parent.parent.name}/{marker.parent.name}", marker.with_name("model.gguf"),
                             data.get("sha256"), _source_text(data.get("source", {}))))
    return listed


def merged(*groups: list[Listed]) -> list[Listed]:
    """One entry per model, the first group's wins (the running state knows the most)."""
    seen: dict[str, Listed] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item.name, item)
    return list(seen.values())


class DigestCache:
    def __init__(self, layout: Layout) -> None:
        self.file = layout.cache / DIGESTS_FILE
        try:
            self.known: dict[str, Any] = json.loads(self.file.read_text())
        except (OSError, ValueError):
            self.known = {}
        self.dirty = False

    def of(self, path: Path) -> str:
        stat = path.stat()
        key = str(path.resolve())
        entry = self.known.get(key)
        if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime") == stat.st_mtime_ns:
            return entry["sha256"]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        self.known[key] = {"size": stat.st_size, "mtime": stat.st_mtime_ns, "sha256": digest.hexdigest()}
        self.dirty = True
        return digest.hexdigest()

    def save(self) -> None:
        if self.dirty:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            self.file.write_text(json.dumps(self.known, indent=1, sort_keys=True))


def until(model: dict[str, Any], busy: bool, now: float | None = None) -> str:
    """ps's UNTIL: when an idle loaded model unloads, as Ollama's `ollama ps` says it."""
    if model["status"] != "loaded":
        return "-"
    if busy:
        return "busy"
    at = model.get("unloadAt")
    if at is None:
        return "forever"
    left = max(0.0, at - (time.time() if now is None else now))
    if left < 90:
        return f"{left:.0f} s from now"
    if left < 5400:
        return f"{left / 60:.0f} min from now"
    return f"{left / 3600:.1f} h from now"


def _marker(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _source_text(source: dict[str, Any]) -> str:
    kind = next(iter(k for k in source if k != "sha256"), "?")
    value = source.get(kind)
    return f"{kind}:{value}" if isinstance(value, str) else f"{kind}:{json.dumps(value, sort_keys=True)}"
