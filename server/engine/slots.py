"""Which free slot a new request takes.

A slot keeps the KV of its last request. A request whose prompt shares a large
enough prefix with a free slot's cache goes to the slot sharing the most, and
skips evaluating that prefix again. Any other request takes the least recently
used free slot, so cold requests rotate through the slots instead of evicting
one warm cache over and over. llama-server's `get_available_slot` chooses the
same way, with the same default threshold.
"""

from __future__ import annotations

from typing import Sequence

# Fraction of the new prompt that a cache must share to attract it
# (llama-server's default --slot-prompt-similarity).
PREFIX_SIMILARITY = 0.1


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def pick_slot(
    free: Sequence[int], caches: Sequence[Sequence[int]], last_used: Sequence[int], prompt: Sequence[int],
    *, similarity: float = PREFIX_SIMILARITY,
) -> int:
    """The free slot for `prompt`; `last_used[i]` grows each time slot i is released."""
    if not free:
        raise ValueError("no free slot")
    best, best_share = None, similarity
    for i in free:
        share = common_prefix(caches[i], prompt) / max(len(prompt), 1)
        if share > best_share:
            best, best_share = i, share
    if best is not None:
        return best
    return min(free, key=lambda i: last_used[i])
