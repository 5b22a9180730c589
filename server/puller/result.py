"""What a finished pull produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .gguf_info import GGUFInfo

# downloaded: bytes fetched now; present: the marker vouched for model.gguf; in-place: a pvc file checked
Outcome = Literal["downloaded", "present", "in-place"]


@dataclass(frozen=True)
class PullResult:
    path: str
    size_bytes: int
    sha256: str | None  # None only for a pvc source given without sha256 (nothing to verify against)
    gguf: GGUFInfo
    bytes_fetched: int  # network bytes this run wrote (0 when the marker was honoured)
    outcome: Outcome

    @property
    def skipped(self) -> bool:
        """Nothing crossed the network."""
        return self.outcome != "downloaded"
