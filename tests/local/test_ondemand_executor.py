"""The scheduler's executor with stand-in processes: who waits, who loads, what a failed load tells its waiters."""

from __future__ import annotations

import asyncio

import pytest

from localmodel_server.local.ondemand import Scheduler, Slot
from localmodel_server.protocol.errors import APIError


class Processes:
    """Stand-in load/unload callbacks: each load waits until the test lets it finish."""

    def __init__(self, gated_unloads: bool = False) -> None:
        self.loads: list[str] = []
        self.unloads: list[tuple[str, str]] = []
        self.gates: dict[str, asyncio.Future[str | None]] = {}
        self.gated_unloads = gated_unloads
        self.unload_gates: dict[str, asyncio.Future[None]] = {}

    async def load(self, name: str) -> str | None:
        self.loads.append(name)
        self.gates[name] = asyncio.get_running_loop().create_future()
        return await self.gates[name]

    async def unload(self, name: str, why: str) -> None:
        self.unloads.append((name, why))
        if self.gated_unloads:  # the process takes its time to stop, until the test lets it
            self.unload_gates[name] = asyncio.get_running_loop().create_future()
            await self.unload_gates[name]

    def finish(self, name: str, problem: str | None = None) -> None:
        self.gates[name].set_result(problem)


def scheduler(procs: Processes, *names: str, max_loaded: int = 0, wait_timeout: float = 5.0,
              keep_alive: float | None = 300.0) -> Scheduler:
    return Scheduler([Slot(n, keep_alive) for n in names], load=procs.load, unload=procs.unload,
                     changed=lambda: None, max_loaded=max_loaded, wait_timeout=wait_timeout, notice=lambda _: None)


async def settle_soon() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_concurrent_requests_for_one_model_share_one_load():
    async def scenario() -> None:
        procs = Processes()
        s = scheduler(procs, "a")
        first, second = asyncio.ensure_future(s.acquire("a")), asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        assert procs.loads == ["a"] and not first.done() and not second.done()
        procs.finish("a")
        await asyncio.gather(first, second)
        assert s.slots["a"].in_flight == 2
    asyncio.run(scenario())


def test_a_failed_load_fails_its_waiters_and_the_next_request_loads_again():
    async def scenario() -> None:
        procs = Processes()
        s = scheduler(procs, "a")
        waiting = asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        procs.finish("a", "the server exited with status 2")
        with pytest.raises(APIError) as caught:
            await waiting
        assert caught.value.status_code == 503 and caught.value.headers["Retry-After"]
        assert "failed to load: the server exited with status 2" in caught.value.message
        retry = asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        assert procs.loads == ["a", "a"]
        procs.finish("a")
        await retry
    asyncio.run(scenario())


def test_a_busy_model_is_not_evicted_and_the_waiter_gets_503_with_retry_after():
    async def scenario() -> None:
        procs = Processes()
        s = scheduler(procs, "a", "b", max_loaded=1, wait_timeout=0.2)
        loading = asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        procs.finish("a")
        await loading  # a is in flight
        with pytest.raises(APIError) as caught:
            await s.acquire("b")
        assert caught.value.status_code == 503 and caught.value.code == "model_busy"
        assert procs.unloads == [] and procs.loads == ["a"]
        # once a's request ends, b evicts it
        s.release("a")
        taking = asyncio.ensure_future(s.acquire("b"))
        await settle_soon()
        assert [u[0] for u in procs.unloads] == ["a"] and procs.loads == ["a", "b"]
        procs.finish("b")
        await taking
    asyncio.run(scenario())


def test_an_evicted_model_has_stopped_before_the_next_one_loads_in_its_place():
    # --max-loaded bounds the processes holding memory at any moment (a GPU's memory is only free once
    # the evicted server has exited), as Ollama waits for an evicted runner to unload.
    async def scenario() -> None:
        procs = Processes(gated_unloads=True)
        s = scheduler(procs, "a", "b", max_loaded=1)
        taking = asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        procs.finish("a")
        await taking
        s.release("a")
        taking = asyncio.ensure_future(s.acquire("b"))
        await settle_soon()
        assert [u[0] for u in procs.unloads] == ["a"] and s.slots["a"].phase == "unloading"
        assert procs.loads == ["a"]  # b waits while a's process is still stopping
        procs.unload_gates["a"].set_result(None)
        await settle_soon()
        assert s.slots["a"].phase == "unloaded" and procs.loads == ["a", "b"]
        procs.finish("b")
        await taking
        assert s.slots["b"].in_flight == 1
    asyncio.run(scenario())


def test_blocked_models_are_refused_at_once_with_the_reason():
    async def scenario() -> None:
        s = scheduler(Processes(), "a")
        s.block("a", "failed: SourceNotFound: no such file")
        with pytest.raises(APIError) as caught:
            await s.acquire("a")
        assert caught.value.status_code == 503 and "SourceNotFound" in caught.value.message
    asyncio.run(scenario())


def test_the_reaper_unloads_an_idle_model_only_after_its_keep_alive():
    async def scenario() -> None:
        procs = Processes()
        s = scheduler(procs, "a", keep_alive=0.2)
        reaper = asyncio.ensure_future(s.reap())
        taking = asyncio.ensure_future(s.acquire("a"))
        await settle_soon()
        procs.finish("a")
        await taking
        await asyncio.sleep(0.4)
        assert procs.unloads == []  # in flight: never unloaded, however long
        s.release("a")
        for _ in range(100):
            if procs.unloads:
                break
            await asyncio.sleep(0.05)
        assert procs.unloads == [("a", "idle for 0.2 s")] and s.slots["a"].phase == "unloaded"
        reaper.cancel()
    asyncio.run(scenario())
