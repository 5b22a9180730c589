"""ModelLocks: one reconcile at a time per model, and no lock kept for a model nobody reconciles."""

from __future__ import annotations

import asyncio

from localmodel_operator.reconcile import ModelLocks


def test_reconciles_of_one_model_are_serialized_and_the_table_empties() -> None:
    async def scenario() -> tuple[list[str], int, int]:
        locks = ModelLocks()
        order: list[str] = []

        async def reconcile(name: str, tag: str) -> None:
            async with locks("ns", name):
                order.append(f"{tag}+")
                await asyncio.sleep(0.01)
                order.append(f"{tag}-")

        both = asyncio.gather(reconcile("a", "1"), reconcile("a", "2"), reconcile("b", "3"))
        await asyncio.sleep(0.005)
        during = len(locks)
        await both
        return order, during, len(locks)

    order, during, after = asyncio.run(scenario())
    first, second = order.index("1+"), order.index("2+")
    assert order.index("1-") < second or order.index("2-") < first  # never both inside at once
    assert order.index("3+") < order.index("1-")  # another model does not wait
    assert during == 2 and after == 0


def test_a_failed_reconcile_releases_its_lock() -> None:
    async def scenario() -> int:
        locks = ModelLocks()
        try:
            async with locks("ns", "a"):
                raise RuntimeError("apiserver down")
        except RuntimeError:
            pass
        async with locks("ns", "a"):  # would hang if the lock were still held
            pass
        return len(locks)

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == 0
