"""Load models when a request names them, evict and unload them when idle: schedule.py's decisions, executed.

The executor owns each model's scheduling state (`Slot`) and changes it only on
the event loop, so a decision and the state change it asks for happen without
another request in between. Starting and stopping server processes is the
supervisor's (the `load` and `unload` callbacks); they run as tasks of their own,
so a client that leaves while its model loads does not stop the load.

What always holds:
- `in_flight` counts requests between `acquire` and `release`; a model is
  stopped only by `_begin_unload`, and only the decisions' idle models reach it;
- every waiter is woken on every state change and decides again, so no wake-up is lost;
- at most `max_loaded` processes hold memory at any moment: a load waits until
  the models it evicts have stopped;
- a request waits on a load it started or found under way, and fails with that
  load's reason if that load fails; the next request tries a fresh load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass

from localmodel_server.protocol.errors import APIError, service_unavailable

from .schedule import AwaitLoad, AwaitRoom, Load, ModelState, Phase, Use, admit, expired, next_deadline

log = logging.getLogger(__name__)

# Retry-After for a request that found every place taken until --wait-timeout.
ROOM_RETRY_AFTER = 5
LOAD_RETRY_AFTER = 1


@dataclass
class Slot:
    """One model's scheduling state; `blocked` refuses it outright (weights still downloading or failed)."""

    name: str
    keep_alive: float | None
    phase: Phase = "unloaded"
    in_flight: int = 0
    last_used: float = 0.0
    attempt: int = 0  # loads started so far
    failed: tuple[int, str] | None = None  # (attempt, why) of the last load that failed
    blocked: str = ""

    def state(self) -> ModelState:
        return ModelState(self.phase, self.in_flight, self.last_used, self.keep_alive)


Loader = Callable[[str], Awaitable[str | None]]  # the model's name -> None when serving, else why not
Unloader = Callable[[str, str], Awaitable[None]]  # (name, why) -> the server process is gone


class Scheduler:
    def __init__(self, slots: Iterable[Slot], *, load: Loader, unload: Unloader, changed: Callable[[], None],
                 max_loaded: int = 0, wait_timeout: float = 120.0, notice: Callable[[str], None] = log.info,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = {s.name: s for s in slots}
        self.max_loaded = max_loaded
        self.wait_timeout = wait_timeout
        self.clock = clock
        self._load, self._unload, self._changed_cb = load, unload, changed
        self._notice = notice  # tells the user why a request waits
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False

    def states(self) -> dict[str, ModelState]:
        return {name: slot.state() for name, slot in self.slots.items()}

    # requests

    async def acquire(self, name: str) -> None:
        """Return once `name` is loaded and counts this request in flight; or raise the 503 to send."""
        slot = self.slots[name]
        if slot.phase == "loaded" and not slot.blocked and not self._stopping:  # the warm path: nothing to decide
            slot.in_flight += 1
            slot.last_used = self.clock()
            return
        room_deadline = self.clock() + self.wait_timeout
        awaited: int | None = None  # the load attempt this request waits on
        told = False
        while True:
            if self._stopping:
                raise service_unavailable("localmodel is stopping.", retry_after=LOAD_RETRY_AFTER, code="shutting_down")
            if slot.blocked:
                raise service_unavailable(f"The model '{name}' is not ready: {slot.blocked}.",
                                          retry_after=ROOM_RETRY_AFTER, code="model_not_ready")
            if awaited is not None and slot.failed is not None and slot.failed[0] == awaited:
                raise service_unavailable(f"The model '{name}' failed to load: {slot.failed[1]}. "
                                          "The next request tries to load it again.",
                                          retry_after=LOAD_RETRY_AFTER, code="model_load_failed")
            decision = admit(self.states(), name, self.max_loaded)
            if isinstance(decision, Use):
                slot.in_flight += 1
                slot.last_used = self.clock()
                return
            if isinstance(decision, Load) and decision.evict:
                # Load only once the victims' processes have exited: until then their memory (a GPU's
                # above all) is not free. Their unloads wake us, and admit() then says Load().
                for victim in decision.evict:
                    self._begin_unload(victim, f"evicted to make room for {name} (--max-loaded {self.max_loaded})")
                told = True  # the eviction's own line says why this request waits
                continue
            if isinstance(decision, Load):
                self._begin_load(slot)
                awaited = slot.attempt
                continue
            wake = self._wake
            if isinstance(decision, AwaitLoad):
                awaited = slot.attempt
                await wake.wait()  # the load has its own timeout and then fails, which wakes us
                continue
            assert isinstance(decision, AwaitRoom)
            if not told:
                told = True
                busy = ", ".join(sorted(n for n, s in self.slots.items() if s.phase != "unloaded" and n != name))
                self._notice(f"{name} waits for a place (--max-loaded {self.max_loaded}; loaded: {busy or 'none'})")
            left = room_deadline - self.clock()
            if left <= 0:
                raise self._no_room(name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), left)

    def release(self, name: str) -> None:
        slot = self.slots[name]
        slot.in_flight = max(0, slot.in_flight - 1)
        slot.last_used = self.clock()
        if slot.in_flight == 0:
            self._notify()  # a waiter may evict it now, and the reaper re-arms its timer

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        await self.acquire(name)
        try:
            yield
        finally:
            self.release(name)

    def _no_room(self, name: str) -> APIError:
        busy = sorted(n for n, s in self.slots.items() if s.phase != "unloaded" and n != name)
        return service_unavailable(
            f"The model '{name}' cannot be loaded now: {len(busy)} models are loaded (--max-loaded {self.max_loaded}) "
            f"and none went idle within {self.wait_timeout:g} s ({', '.join(busy)}). Retry after {ROOM_RETRY_AFTER} s.",
            retry_after=ROOM_RETRY_AFTER, code="model_busy")

    # the supervisor's events

    def block(self, name: str, why: str) -> None:
        self.slots[name].blocked = why
        self._notify()

    def crashed(self, name: str, why: str) -> None:
        """The server exited on its own: the memory is gone; the next request loads it again."""
        slot = self.slots[name]
        slot.phase = "unloaded"
        slot.failed = (slot.attempt, why)
        self._notify()

    async def preload(self, names: Iterable[str]) -> None:
        """Load `names` now, as far as --max-loaded allows, and wait for them."""
        for name in names:
            decision = admit(self.states(), name, self.max_loaded)
            # Preloading never evicts: what it loaded first stays.
            if not self.slots[name].blocked and isinstance(decision, Load) and not decision.evict:
                self._begin_load(self.slots[name])
        await self.settle()

    async def settle(self) -> None:
        """Wait until no load or unload is under way."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def reap(self) -> None:
        """Unload idle models as their keep-alive runs out; runs until cancelled."""
        while True:
            wake = self._wake
            deadline = next_deadline(self.states())
            for name in expired(self.states(), self.clock()):
                keep_alive = self.slots[name].keep_alive or 0
                self._begin_unload(name, f"idle for {keep_alive:g} s")
            if deadline is None or deadline > self.clock():
                timeout = None if deadline is None else deadline - self.clock()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout)

    async def close(self) -> None:
        """Refuse new requests and wake waiters; loads under way are cancelled (they stop their process)."""
        self._stopping = True
        self._notify()
        for task in list(self._tasks):
            if self.slots[task.get_name()].phase == "loading":
                task.cancel()
        await self.settle()

    # execution

    def _begin_load(self, slot: Slot) -> None:
        slot.phase = "loading"
        slot.attempt += 1
        self._spawn(slot.name, self._run_load(slot, slot.attempt))
        self._notify()

    async def _run_load(self, slot: Slot, attempt: int) -> None:
        problem: str | None = "the load was cancelled"
        try:
            problem = await self._load(slot.name)
        except Exception as exc:  # a bug in starting the process must fail this load, not wedge the model
            log.exception("loading %s failed", slot.name)
            problem = f"unexpected error: {exc}"
        finally:
            if problem is None:
                slot.phase, slot.failed = "loaded", None
                slot.last_used = self.clock()  # the keep-alive counts from the load, if no request comes
            else:
                slot.phase, slot.failed = "unloaded", (attempt, problem)
            self._notify()

    def _begin_unload(self, name: str, why: str) -> None:
        slot = self.slots[name]
        assert slot.in_flight == 0, "only idle models are stopped"
        slot.phase = "unloading"
        self._spawn(name, self._run_unload(slot, why))
        self._notify()

    async def _run_unload(self, slot: Slot, why: str) -> None:
        try:
            await self._unload(slot.name, why)
        finally:
            slot.phase = "unloaded"
            self._notify()

    def _spawn(self, name: str, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()
        self._changed_cb()
