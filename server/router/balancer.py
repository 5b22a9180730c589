"""Least-in-flight choice among a model's endpoints, with backend back-off.

State is kept per endpoint URL and survives route-table swaps, so a model whose
endpoints are re-listed keeps its in-flight counts and cool-downs.
"""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

# A backend's Retry-After is honoured up to this many seconds, so that one bad
# header cannot take an endpoint out of rotation for long.
MAX_COOLDOWN_S = 60.0


@dataclass
class EndpointState:
    url: str
    in_flight: int = 0
    # Monotonic time before which the endpoint gets no requests, and why.
    cooldown_until: float = 0.0
    cooldown_reason: str = ""


class NoEndpoint(Exception):
    """Every candidate endpoint was tried or asked for a pause."""

    def __init__(self, retry_after: float | None, reason: str = "") -> None:
        super().__init__("no endpoint available")
        # Seconds until the first cooling-down endpoint takes requests again, if any, and why it rests.
        self.retry_after = retry_after
        self.reason = reason


class Balancer:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, EndpointState] = {}
        self._turn = 0

    def state(self, url: str) -> EndpointState:
        state = self._states.get(url)
        if state is None:
            state = self._states[url] = EndpointState(url)
        return state

    def pick(self, endpoints: Sequence[str], exclude: Collection[str] = ()) -> EndpointState:
        """The candidate with the fewest requests in flight; ties rotate.

        Raises NoEndpoint when every endpoint is excluded or cooling down.
        """
        now = self._clock()
        best: EndpointState | None = None
        soonest: EndpointState | None = None
        count = len(endpoints)
        # Starting the scan at a rotating offset spreads ties evenly.
        self._turn = (self._turn + 1) % count if count else 0
        for i in range(count):
            url = endpoints[(self._turn + i) % count]
            if url in exclude:
                continue
            state = self.state(url)
            if state.cooldown_until > now:
                if soonest is None or state.cooldown_until < soonest.cooldown_until:
                    soonest = state
                continue
            if best is None or state.in_flight < best.in_flight:
                best = state
        if best is None:
            if soonest is None:
                raise NoEndpoint(None)
            raise NoEndpoint(soonest.cooldown_until - now, soonest.cooldown_reason)
        return best

    def cool_down(self, url: str, seconds: float, reason: str) -> None:
        """Keep requests away from `url` for `seconds` (a backend's Retry-After, or after a failed connect)."""
        seconds = min(max(seconds, 0.0), MAX_COOLDOWN_S)
        state = self.state(url)
        until = self._clock() + seconds
        if until > state.cooldown_until:
            state.cooldown_until = until
            state.cooldown_reason = reason

    def forget_except(self, live: Collection[str]) -> None:
        """Drop idle state of endpoints that are gone from every route."""
        for url in [u for u, s in self._states.items() if u not in live and s.in_flight == 0]:
            del self._states[url]


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header, in either of its forms (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - now()
        except (TypeError, ValueError):
            return None
        return max(seconds, 0.0)
    return seconds if seconds >= 0 else None
