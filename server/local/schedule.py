"""Which models to load, evict and unload on one machine: pure decisions over state and a clock.

Rules every decision keeps (the executor in ondemand.py relies on them):
- a model with a request in flight is never chosen for eviction or idle unload,
  so no request (a stream included) is cut by either;
- at most `max_loaded` models hold memory at once, counting those still loading
  and those being stopped (their memory is not back yet); 0 means no cap;
- eviction takes the least recently used idle model, pinned ones (keep-alive -1) last,
  as Ollama's scheduler and llama-server's --models-max do;
- an idle model unloads `keep_alive` seconds after its last request ended; None never.

Times are seconds on one monotonic clock; nothing here reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Phase = Literal["unloaded", "loading", "loaded", "unloading"]

DEFAULT_KEEP_ALIVE = "5m"  # Ollama's default


@dataclass(frozen=True)
class ModelState:
    phase: Phase = "unloaded"
    in_flight: int = 0
    last_used: float = 0.0  # when the model last admitted or finished a request
    keep_alive: float | None = 300.0

    @property
    def holds_memory(self) -> bool:
        return self.phase != "unloaded"

    @property
    def idle(self) -> bool:
        return self.phase == "loaded" and self.in_flight == 0


@dataclass(frozen=True)
class Use:
    """Loaded: send the request now."""


@dataclass(frozen=True)
class AwaitLoad:
    """Its load is under way: wait for it."""


@dataclass(frozen=True)
class Load:
    """Stop `evict` (all idle) and, once their processes have exited, start loading this model."""

    evict: tuple[str, ...] = ()


@dataclass(frozen=True)
class AwaitRoom:
    """Every place is taken by busy or loading models (or this one is being stopped): wait for a change."""


Decision = Use | AwaitLoad | Load | AwaitRoom


def admit(models: Mapping[str, ModelState], name: str, max_loaded: int) -> Decision:
    """What a request for `name` does now."""
    state = models[name]
    if state.phase == "loaded":
        return Use()
    if state.phase == "loading":
        return AwaitLoad()
    if state.phase == "unloading":
        return AwaitRoom()  # its process is still stopping; it is loaded afresh once gone
    if max_loaded <= 0:
        return Load()
    occupied = sum(1 for s in models.values() if s.holds_memory)
    needed = occupied + 1 - max_loaded
    if needed <= 0:
        return Load()
    needed -= sum(1 for s in models.values() if s.phase == "unloading")  # room already on its way
    if needed <= 0:
        return AwaitRoom()
    victims = evictable(models, exclude=name)
    if len(victims) < needed:
        return AwaitRoom()  # evicting fewer would free memory without making room
    return Load(evict=tuple(victims[:needed]))


def evictable(models: Mapping[str, ModelState], exclude: str = "") -> list[str]:
    """Idle loaded models, the first to evict first: unpinned before pinned, then least recently used."""
    idle = [(n, s) for n, s in models.items() if n != exclude and s.idle]
    idle.sort(key=lambda item: (item[1].keep_alive is None, item[1].last_used, item[0]))
    return [n for n, _ in idle]


def unload_at(state: ModelState) -> float | None:
    """When an idle model unloads; None while busy, not loaded, or pinned."""
    if not state.idle or state.keep_alive is None:
        return None
    return state.last_used + state.keep_alive


def expired(models: Mapping[str, ModelState], now: float) -> list[str]:
    """Models whose keep-alive has run out at `now`."""
    return sorted(n for n, s in models.items() if (at := unload_at(s)) is not None and at <= now)


def next_deadline(models: Mapping[str, ModelState]) -> float | None:
    """The earliest moment some model is due to unload, for the executor's timer."""
    deadlines = [at for s in models.values() if (at := unload_at(s)) is not None]
    return min(deadlines, default=None)
