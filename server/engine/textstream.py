"""Turns generated token bytes into text deltas, honouring stop strings.

Two things make this non-trivial: a UTF-8 character can span tokens, and a
stop string can span tokens. Text that might be the start of a stop string is
held back until it is known not to be one, so a client never sees any part of
a stop string.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: list[str]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = stop
        self._longest_stop = max((len(s) for s in stop), default=0)
        self.text = ""  # everything decoded so far
        self._emitted = 0  # length of the prefix already returned as deltas
        self.stopped = False

    def push(self, piece: bytes) -> str:
        """Add a token's bytes; return the text that is now safe to emit."""
        self.text += self._decoder.decode(piece)
        if not self._stop:
            return self._take(len(self.text))
        start = max(0, self._emitted - self._longest_stop + 1)
        hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        if hits:
            self.stopped = True
            cut = min(hits)
            self.text = self.text[:cut]
            return self._take(cut)
        return self._take(len(self.text) - self._partial_stop_suffix())

    def flush(self) -> str:
        """At the end of generation: whatever is still held back is final text."""
        if not self.stopped:
            self.text += self._decoder.decode(b"", final=True)
        return self._take(len(self.text))

    def _partial_stop_suffix(self) -> int:
        """Length of the longest tail of `text` that is a proper prefix of a stop string."""
        tail = self.text[-self._longest_stop:]
        for n in range(min(len(tail), self._longest_stop - 1), 0, -1):
            suffix = tail[-n:]
            if any(s.startswith(suffix) for s in self._stop):
                return n
        return 0

    def _take(self, end: int) -> str:
        end = max(end, self._emitted)
        delta = self.text[self._emitted:end]
        self._emitted = end
        return delta
