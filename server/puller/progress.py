"""Where pull progress goes: a terminal, a log, or a LocalModel's status (k8s_status.py).

A pull calls `progress` after every block, so sinks throttle themselves.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol, TextIO

from ..contract import human_bytes
from .errors import PullError
from .result import PullResult


class ProgressSink(Protocol):
    def progress(self, done: int, total: int | None) -> None: ...

    def succeeded(self, result: PullResult) -> None: ...

    def probed(self, total: int | None) -> None: ...

    def failed(self, error: PullError) -> None: ...


def percent(done: int, total: int | None) -> int | None:
    """Whole percent, floored so that 100 means every byte is there."""
    if not total:
        return None
    return min(100, done * 100 // total)


def download_status(done: int, total: int | None) -> dict[str, Any]:
    """`status.download` while bytes arrive; None clears fields left by an earlier pull (merge patch)."""
    return {
        "bytesDone": done,
        "bytesTotal": total,
        "percent": percent(done, total),
        "sha256": None,
        "result": None,
        "reason": None,
        "message": None,
    }


def success_status(result: PullResult) -> dict[str, Any]:
    """The whole `status` patch of a finished pull."""
    download = download_status(result.size_bytes, result.size_bytes)
    download.update(sha256=result.sha256, result="Succeeded", message=_success_message(result))
    return {"download": download, "gguf": result.gguf.to_status()}


def probe_status(total: int | None) -> dict[str, Any]:
    """What a probe reports: the size only; no result, so nobody mistakes it for a finished pull."""
    return {"download": download_status(0, total)}


def failure_status(error: PullError, done: int, total: int | None) -> dict[str, Any]:
    download = download_status(done, total)
    download.update(result="Failed", reason=str(error.reason), message=error.message)
    return {"download": download, "gguf": None}


def _success_message(result: PullResult) -> str:
    if result.outcome == "present":
        return "weights already present and verified by an earlier pull"
    if result.outcome == "in-place":
        return "file on the claim used in place" + ("; sha256 verified" if result.sha256 else "")
    return f"downloaded {human_bytes(result.bytes_fetched)}; size and sha256 verified"


class NullSink:
    def progress(self, done: int, total: int | None) -> None:
        pass

    def succeeded(self, result: PullResult) -> None:
        pass

    def probed(self, total: int | None) -> None:
        pass

    def failed(self, error: PullError) -> None:
        pass


class FanOut:
    """Sends every event to several sinks (the Job logs and reports to the status)."""

    def __init__(self, *sinks: ProgressSink) -> None:
        self._sinks = sinks

    def progress(self, done: int, total: int | None) -> None:
        for sink in self._sinks:
            sink.progress(done, total)

    def succeeded(self, result: PullResult) -> None:
        for sink in self._sinks:
            sink.succeeded(result)

    def probed(self, total: int | None) -> None:
        for sink in self._sinks:
            sink.probed(total)

    def failed(self, error: PullError) -> None:
        for sink in self._sinks:
            sink.failed(error)


class TerminalProgress:
    """A one-line bar redrawn in place on a TTY; a line every `interval` seconds otherwise (logs)."""

    def __init__(self, stream: TextIO = sys.stderr, interval: float | None = None) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._interval = interval if interval is not None else (0.2 if self._tty else 5.0)
        self._started = time.monotonic()
        self._last = 0.0
        self._first_done: int | None = None

    def progress(self, done: int, total: int | None) -> None:
        now = time.monotonic()
        if self._first_done is None:
            self._first_done, self._started = done, now
        if now - self._last < self._interval:
            return
        self._last = now
        line = self._line(done, total, now)
        if self._tty:
            self._stream.write(f"\r{line}\x1b[K")
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def succeeded(self, result: PullResult) -> None:
        self._end(f"{result.path}: {result.gguf.architecture} {result.gguf.quantization}, {_success_message(result)}")

    def probed(self, total: int | None) -> None:
        self._end(f"the source holds {human_bytes(total)}" if total is not None else "the source announces no size")

    def failed(self, error: PullError) -> None:
        self._end(f"pull failed: {error}")

    def _line(self, done: int, total: int | None, now: float) -> str:
        elapsed = max(now - self._started, 1e-6)
        rate = f"{human_bytes((done - (self._first_done or 0)) / elapsed)}/s"
        pct = percent(done, total)
        if pct is None:
            return f"{human_bytes(done)}  {rate}"
        filled = pct * 30 // 100
        bar = "#" * filled + "." * (30 - filled)
        return f"[{bar}] {pct:3d}%  {human_bytes(done)} / {human_bytes(total or 0)}  {rate}"

    def _end(self, text: str) -> None:
        self._stream.write(("\r\x1b[K" if self._tty and self._last else "") + text + "\n")
        self._stream.flush()
