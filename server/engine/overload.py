"""Overload: how many generation requests the server holds, and when a refused one should return.

When every place is taken a request is refused with 503 and a Retry-After. If every
refused client hears the same short number, they all sleep together and return
together: the queue swings between full and empty and the slots idle while it
is empty, or the returning lump is refused again, each refusal costing CPU that
the decode loop needs. So refused clients are told to come back one after another
at the rate the queue drains (ReturnSchedule).
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
# Line spacing of at most this many completion intervals: refusals stay near 1/64 of completions.
MAX_STRETCH = 64.0
RETURN_GRACE_S = 0.02
MAX_LINE = 100_000  # due times kept; a longer line is told the longest wait


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


class ReturnSchedule:
    """When each refused client should come back: one after another, at the rate places free.

    The first refused client is sent back when the queue ahead of it will have drained
    at the recent completion rate; each further one a completion interval after the
    previous, like a line that waits outside. A burst of refusals thus returns spread
    over the time the server needs to take it, instead of all together (a jittered
    wait of its own for each still returned them in one lump, most to be refused again).

    The line's pace follows what returning clients find. A refusal that comes just when
    refused clients were due back means they found no room: the places went to requests
    from elsewhere (in a closed loop, to clients that resend the moment their answer
    arrives), and each such round of refusals costs CPU that the decode loop needs. So
    the spacing doubles with each such refusal, up to MAX_STRETCH completion intervals.
    Once the line has emptied, or a slot is free (Admission clears it), it starts again
    at the drain rate. Used on the event loop only.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._line: collections.deque[float] = collections.deque()  # due times, in order
        self._stretch = 1.0  # spacing of the line, in completion intervals

    def wait(self, queued: int, completions: int, span: float, jitter: float) -> float:
        """Seconds a refused client should wait.

        `queued` requests are ahead of it; `completions` finished in the last `span` seconds;
        `jitter` is uniform in [0, 1) and adds up to one spacing, so clients that round the
        wait alike still arrive apart.
        """
        if not completions:
            # Nothing finished for `span` seconds: the queue will not drain sooner than that,
            # and there is no rate to pace the line by.
            return min(MAX_RETRY_S, max(1.0, span) * (0.5 + jitter))
        now = self._clock()
        interval = span / completions
        self._note_returns(now, interval)
        spacing = interval * self._stretch
        due = now + (queued + 1) * interval
        if self._line:
            due = max(due, self._line[-1] + spacing)
        due = min(due, now + MAX_RETRY_S)
        if len(self._line) < MAX_LINE:
            self._line.append(due)
        return min(MAX_RETRY_S, max(MIN_RETRY_S, due - now + jitter * spacing))

    def clear(self) -> None:
        self._line.clear()
        self._stretch = 1.0

    def _note_returns(self, now: float, interval: float) -> None:
        """Drop the entries whose time has come; stretch the line if some were due just now."""
        # A returning client arrives a little after its time: the jitter, the network, a router.
        grace = 2 * interval * self._stretch + RETURN_GRACE_S
        missed = False
        while self._line and self._line[0] <= now:
            due = self._line.popleft()
            missed = missed or due > now - grace
        if missed:
            self._stretch = min(MAX_STRETCH, self._stretch * 2)
        elif not self._line:
            self._stretch = 1.0


class Admission:
    """The places a generation request can hold: one per slot plus one per queue entry.

    This is the server's only bound on waiting requests; the engine's queue never holds
    more than it lets through.

    A request takes its place as it arrives, before its body is read, parsed, templated
    and tokenized, and gives it back when its response has been sent. Refused early, an
    excess request costs next to nothing; refused at the engine's queue, it cost all that
    work first, and under 3x overload that work starved the decode loop (goodput fell to
    a third of capacity, docs/benchmarks.md). Used on the event loop only.
    """

    def __init__(self, slots: int, queue_size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.places = slots + queue_size
        self.taken = 0
        self.returns = ReturnSchedule(clock)

    def enter(self) -> bool:
        if self.taken >= self.places:
            return False
        self.taken += 1
        if self.taken <= self.slots:
            # Nothing waits for a slot: the overload has passed, and the clients still in the
            # return line got in or gave up. The next refusal starts a new line.
            self.returns.clear()
        return True

    def leave(self) -> None:
        self.taken -= 1
