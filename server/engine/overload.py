"""How long a refused client should wait before it tries again.

When the queue is full a request is refused with 503 and a Retry-After. If every
refused client hears the same short number, they all sleep together and return
together: the queue swings between full and empty and the slots idle while it
is empty. So the wait is the time the queue ahead needs to drain at the recent
completion rate, times a random factor that spreads the clients' returns.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

RATE_WINDOW_S = 10.0  # completions further back than this no longer describe the rate
MIN_RETRY_S = 0.05
# OpenAI's SDKs ignore a Retry-After above 60 s and fall back to their own backoff.
MAX_RETRY_S = 60.0


class CompletionRate:
    """Slot releases per second over the last RATE_WINDOW_S; recorded by the engine thread,
    read by the event loop."""

    def __init__(self, window: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._started = clock()
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def record(self) -> None:
        with self._lock:
            self._times.append(self._clock())
            self._prune()

    def observed(self) -> tuple[int, float]:
        """(completions, seconds they were counted over): the window, or less just after start."""
        with self._lock:
            self._prune()
            return len(self._times), min(self._window, self._clock() - self._started)

    def _prune(self) -> None:
        horizon = self._clock() - self._window
        while self._times and self._times[0] < horizon:
            self._times.popleft()


def retry_after(queued: int, completions: int, span: float, jitter: float) -> float:
    """Seconds a refused client should wait.

    `queued` requests are ahead of it; `completions` finished in the last `span` seconds;
    `jitter` is uniform in [0, 1) and scales the wait by 0.5 to 1.5.
    """
    if completions:
        expected = (queued + 1) * span / completions
    else:
        # Nothing finished for `span` seconds: the queue will not drain sooner than that.
        expected = max(1.0, span)
    return min(MAX_RETRY_S, max(MIN_RETRY_S, expected * (0.5 + jitter)))


class Admission:
    """The places a generation request can hold: one per slot plus one per queue entry.

    A request takes its place as it arrives, before its body is read, parsed, templated
    and tokenized, and gives it back when its response has been sent. Refused early, an
    excess request costs next to nothing; refused at the engine's queue, it cost all that
    work first, and under 3x overload that work starved the decode loop (goodput fell to
    a third of capacity, docs/benchmarks.md). Used on the event loop only.
    """

    def __init__(self, places: int) -> None:
        self.places = places
        self.taken = 0

    def enter(self) -> bool:
        if self.taken >= self.places:
            return False
        self.taken += 1
        return True

    def leave(self) -> None:
        self.taken -= 1
