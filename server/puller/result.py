"""What a finished pull produced."""

from __future__ import annotations

from dataclasses import dataclass

from .gguf_info import GGUFInfo


@dataclass(frozen=True)
class PullResult:
    path: str
    size_bytes: int
    sha256: str | None  # None only for a pvc source given without sha256 (nothing to verify against)
    gguf: GGUFInfo
    bytes_fetched: int  # network bytes this run wrote (0 when the marker was honoured)
    skipped: bool  # the marker already described this source
