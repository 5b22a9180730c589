"""Slot choice: shared prefix above a threshold, else least recently used."""

from __future__ import annotations

from localmodel_server.engine.slots import pick_slot

PROMPT = list(range(1, 21))


def test_the_slot_sharing_the_most_of_the_prompt_wins():
    caches = [PROMPT[:5], PROMPT[:15], []]
    assert pick_slot([0, 1, 2], caches, [3, 1, 2], PROMPT) == 1


def test_a_cold_prompt_takes_the_least_recently_used_slot_not_slot_0():
    # Only the BOS token is shared: below the threshold, so no cache attracts the prompt.
    caches = [[1, 90, 91], [1, 80, 81], [1, 70, 71]]
    assert pick_slot([0, 1, 2], caches, [5, 2, 7], PROMPT) == 1


def test_cold_prompts_rotate_through_the_slots():
    caches: list[list[int]] = [[], [], []]
    released = [0, 0, 0]
    chosen = []
    for n in range(6):
        prompt = [1, 100 + n] + [200 + n] * 10
        slot = pick_slot([0, 1, 2], caches, released, prompt)
        chosen.append(slot)
        caches[slot], released[slot] = prompt, n + 1
    assert chosen == [0, 1, 2, 0, 1, 2]


def test_only_free_slots_are_considered():
    caches = [PROMPT, PROMPT[:10], []]
    assert pick_slot([1, 2], caches, [0, 0, 0], PROMPT) == 1
