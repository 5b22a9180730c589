"""What this router tells the operator about each LocalModel's requests: status.activity.<router>.

The operator's keepAlive and autoscaling decisions (operator/scaling.py) read
these entries, so they must say, at low cost:
- how many requests are in flight here (a busy router rewrites its entry every
  `interval`, so a router that died leaves an entry that goes stale), and how many
  of them are held waiting for the model to load: only those ask the operator to
  wake a model at zero, since a request forwarded just before a scale to zero
  (a user's, or keepAlive's) still counts as in flight until the next write;
- when a request last started or ended here.

Why a status patch and not a metrics scrape: the entry lives in the object the
decision is made for, so it survives operator and router restarts and needs no
discovery of router pods; the write is a merge patch of this router's own key
(no conflict with the operator, the puller or another router), at most one per
model per `interval` while the model is used and none while it is idle. It
needs `patch` on localmodels/status only, which cannot touch a spec.

Counting is two dictionary updates per request; the writes run off the hot path.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (namespace, LocalModel name)
DEFAULT_INTERVAL_S = 10.0


@dataclass
class Counts:
    in_flight: int = 0
    last_request: float = 0.0  # wall clock (time.time()); 0 before the first request
    reported: tuple[int, int, float] | None = None  # (in_flight, held, last_request) of the last write
    reported_at: float = 0.0  # monotonic time of the last write, or of the last failed one


def report_due(counts: Counts, held: int, now: float, interval: float) -> bool:
    """A write is due when something changed since the last one, or as a heartbeat while busy;
    never more often than `interval`. `held` is how many of the requests in flight wait for the model."""
    if counts.reported_at and now - counts.reported_at < interval:
        return False
    if counts.reported is None and not counts.last_request:
        return False  # never used: nothing to say
    changed = counts.reported != (counts.in_flight, held, counts.last_request)
    return changed or counts.in_flight > 0


def _rfc3339(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_patch(identity: str, in_flight: int, held: int, last_request: float, now_wall: float) -> dict[str, Any]:
    """The merge patch of this router's own entry."""
    entry: dict[str, Any] = {"inFlight": in_flight, "held": held, "reportedAt": _rfc3339(now_wall)}
    if last_request:
        entry["lastRequestTime"] = _rfc3339(last_request)
    return {"status": {"activity": {identity: entry}}}


Writer = Callable[[str, str, dict[str, Any]], Awaitable[None]]


class Activity:
    def __init__(self, identity: str, write: Writer, interval: float = DEFAULT_INTERVAL_S,
                 *, held: Callable[[Key], int]) -> None:
        self.identity = identity
        self.interval = interval
        self._write = write
        self._held = held  # requests of a model waiting for it to load (Holding.held)
        self._counts: dict[Key, Counts] = {}
        self._flushes: set[asyncio.Task[None]] = set()  # flush_soon's writes, kept from the collector

    def begin(self, key: Key) -> None:
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        counts.in_flight += 1
        counts.last_request = time.time()

    def end(self, key: Key) -> None:
        counts = self._counts[key]
        counts.in_flight -= 1
        counts.last_request = time.time()

    def in_flight(self, key: Key) -> int:
        counts = self._counts.get(key)
        return counts.in_flight if counts else 0

    async def flush(self, key: Key) -> None:
        """Write this model's entry now (before waking it, so the operator never sees a wake-up
        without the request that caused it)."""
        counts = self._counts.get(key)
        if counts is not None:
            await self._report(key, counts)

    def flush_soon(self, key: Key) -> None:
        """Write this model's entry as soon as the loop can, outside the interval: when its last
        held request leaves the hold. Until then the entry still says `held`, which would let
        the operator wake the model again if someone scaled it to zero meanwhile."""
        task = asyncio.create_task(self._flush_logged(key))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush_logged(self, key: Key) -> None:
        try:
            await self.flush(key)
        except Exception as exc:  # the heartbeat loop writes it later
            log.warning("activity report for %s/%s failed: %s", key[0], key[1], exc)

    async def _report(self, key: Key, counts: Counts) -> None:
        state = (counts.in_flight, self._held(key), counts.last_request)
        await self._write(key[0], key[1], report_patch(self.identity, *state, time.time()))
        counts.reported, counts.reported_at = state, time.monotonic()

    async def run(self) -> None:
        """Writes whatever is due, checking every second."""
        while True:
            await asyncio.sleep(min(1.0, self.interval))
            now = time.monotonic()
            for key, counts in list(self._counts.items()):
                if not report_due(counts, self._held(key), now, self.interval):
                    continue
                try:
                    await self._report(key, counts)
                except Exception as exc:  # a deleted model (404), the apiserver away: the next tick retries
                    counts.reported_at = now  # not before `interval`
                    log.warning("activity report for %s/%s failed: %s", key[0], key[1], exc)
                    if getattr(exc, "status", None) == 404 and counts.in_flight == 0:
                        del self._counts[key]
