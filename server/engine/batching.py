"""Continuous batching over one llama.cpp context.

One engine thread owns the context. Each step it admits waiting requests
into free slots, builds ONE batch holding the next token of every generating
sequence plus chunks of pending prompts, calls `llama_decode` once, and
samples every sequence that produced logits with that sequence's own sampler.
Requests join and leave between steps, so a long generation never blocks a
short one and a cancelled request frees its slot at the next step.

Each slot is a llama.cpp sequence with its own KV stream (`kv_unified=False`),
so sequences never attend to each other. A slot keeps the KV of its last
request; a new request goes to a free slot chosen by `slots.pick_slot` and
only the part of its prompt that slot has not cached is evaluated (prefix
caching).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import threading
from dataclasses import dataclass, field
from typing import Literal

import llama_cpp

from .model import LoadedModel
from .overload import CompletionRate
from .sampling import Sampler, SamplingParams, TokenLogprobs
from .slots import common_prefix, pick_slot
from .textstream import TextStream

log = logging.getLogger(__name__)

FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class EngineConfig:
    context_size: int  # tokens per sequence (prompt + completion)
    parallel: int  # slots decoded together
    threads: int
    batch_size: int = 512  # most tokens in one decode step; longer prompts are chunked


@dataclass(frozen=True)
class GenerationRequest:
    prompt: list[int]
    sampling: SamplingParams
    max_tokens: int | None = None  # None: until the context is full
    stop: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TokenOut:
    id: int
    logprobs: TokenLogprobs | None


@dataclass(frozen=True)
class Delta:
    text: str
    tokens: list[TokenOut]


@dataclass(frozen=True)
class Finished:
    reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    error: str | None = None


Event = Delta | Finished


class EngineStopped(Exception):
    """The engine no longer accepts work (shutting down)."""


class Generation:
    """The consumer's side of a request: an async stream of events, and cancel()."""

    def __init__(self, request: GenerationRequest, loop: asyncio.AbstractEventLoop) -> None:
        self.request = request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self._loop = loop
        self.cancelled = False

    def cancel(self) -> None:
        # Read by the engine thread at its next step; a plain flag is enough under the GIL.
        self.cancelled = True

    def _emit(self, event: Event) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening any more
            pass

    async def __aiter__(self):
        while True:
            event = await self.events.get()
            yield event
            if isinstance(event, Finished):
                return


@dataclass
class _Sequence:
    """Engine-thread state of one admitted request."""

    gen: Generation
    slot: int
    sampler: Sampler
    text: TextStream
    n_past: int  # tokens of prompt + completion already in the KV cache
    cached_tokens: int
    generated: list[int] = field(default_factory=list)
    pending: list[TokenOut] = field(default_factory=list)

    @property
    def prompt(self) -> list[int]:
        return self.gen.request.prompt

    @property
    def prefilling(self) -> bool:
        return self.n_past < len(self.prompt)

    def kv_tokens(self) -> list[int]:
        return (self.prompt + self.generated)[: self.n_past]


class BatchEngine:
    def __init__(self, model: LoadedModel, config: EngineConfig) -> None:
        self.model = model
        self.config = config
        # Every generating slot adds one token to each step, so the batch must hold at least
        # one token per slot; a smaller llama.cpp batch aborts the process (llama-server sizes
        # it the same way).
        self.batch_capacity = max(config.batch_size, config.parallel)
        self._ctx = model.new_context(
            n_ctx=config.context_size * config.parallel, n_batch=self.batch_capacity,
            n_ubatch=min(self.batch_capacity, 512), n_seq_max=config.parallel, threads=config.threads,
            kv_unified=False,
        )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self.context_per_sequence = llama_cpp.llama_n_ctx_seq(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.batch_capacity, 0, 1)
        self._decode = llama_cpp.llama_decode  # a seam: tests inject decode failures

        self._cond = threading.Condition()
        self._waiting: collections.deque[Generation] = collections.deque()
        self._slots: list[_Sequence | None] = [None] * config.parallel
        self._slot_cache: list[list[int]] = [[] for _ in range(config.parallel)]
        self._slot_released = [0] * config.parallel  # a release counter's value, for least-recently-used
        self._releases = 0
        self.completion_rate = CompletionRate()
        self._running = True
        self._thread = threading.Thread(target=self._run, name="batch-engine", daemon=True)
        self._thread.start()

    # -- called from the event loop -------------------------------------------

    def submit(self, request: GenerationRequest) -> Generation:
        # The queue is bounded before a request gets here: the server's Admission
        # (engine/overload.py) holds at most --parallel + --queue-size generation requests.
        gen = Generation(request, asyncio.get_running_loop())
        with self._cond:
            if not self._running:
                raise EngineStopped()
            self._waiting.append(gen)
            self._cond.notify()
        return gen

    @property
    def busy_slots(self) -> int:
        return sum(s is not None for s in self._slots)

    @property
    def queued(self) -> int:
        return len(self._waiting)

    def close(self) -> None:
        with self._cond:
            self._running = False
            self._cond.notify()
        self._thread.join()
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)

    # -- engine thread --------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._running and not self._waiting and self.busy_slots == 0:
                    self._cond.wait()
                if not self._running:
                    break
                admitted = self._take_waiting()
            # Admitted outside the lock: a grammar sampler can take long to build, and
            # submit() on the event loop waits for this lock.
            try:
                self._admit(admitted)
                self._drop_cancelled()
                if self.busy_slots:
                    self._step()
            except Exception:
                # A bug must not leave clients waiting forever: fail what is in flight, keep serving.
                log.exception("engine step failed; failing the requests in flight")
                for seq in self._slots:
                    if seq is not None:
                        self._finish(seq, "error", error="internal engine error", reset_cache=True)
        for seq in self._slots:
            if seq is not None:
                self._finish(seq, "cancelled")
        for gen in self._waiting:
            gen._emit(Finished("cancelled", len(gen.request.prompt), 0, 0))

    def _take_waiting(self) -> list[Generation]:
        """Pop as many waiting requests as there are free slots (called under the lock)."""
        free = self.config.parallel - self.busy_slots
        return [self._waiting.popleft() for _ in range(min(free, len(self._waiting)))]

    def _admit(self, admitted: list[Generation]) -> None:
        for gen in admitted:
            if gen.cancelled:
                gen._emit(Finished("cancelled", len(gen.request.prompt), 0, 0))
                continue
            try:
                sampler = Sampler(self.model, gen.request.sampling)
            except ValueError as exc:
                gen._emit(Finished("error", len(gen.request.prompt), 0, 0, error=str(exc)))
                continue
            free = [i for i, s in enumerate(self._slots) if s is None]
            slot = pick_slot(free, self._slot_cache, self._slot_released, gen.request.prompt)
            # Reuse the slot's cached prefix, but always evaluate at least the last
            # prompt token: its logits start the generation.
            keep = min(common_prefix(self._slot_cache[slot], gen.request.prompt), len(gen.request.prompt) - 1)
            if not llama_cpp.llama_memory_seq_rm(self._mem, slot, keep, -1):
                # Recurrent, hybrid and sliding-window memory cannot drop just a suffix; the
                # slot's state is then not the prefix's state, so start it from nothing.
                llama_cpp.llama_memory_seq_rm(self._mem, slot, -1, -1)
                self._slot_cache[slot] = []
                keep = 0
            seq = _Sequence(
                gen=gen, slot=slot, sampler=sampler, text=TextStream(gen.request.stop),
                n_past=keep, cached_tokens=keep,
            )
            with self._cond:
                self._slots[slot] = seq

    def _drop_cancelled(self) -> None:
        for seq in self._slots:
            if seq is not None and seq.gen.cancelled:
                self._finish(seq, "cancelled")

    def _step(self) -> None:
        batch = self._batch
        n = 0
        logit_rows: list[tuple[int, _Sequence]] = []
        # Per sequence: the batch row of its last token and how many tokens it has in the batch.
        # A sequence's tokens are contiguous and only its last one can carry logits.
        spans: list[tuple[_Sequence, int, int]] = []

        def add(token: int, pos: int, seq: _Sequence, logits: bool) -> None:
            nonlocal n
            batch.token[n] = token
            batch.pos[n] = pos
            batch.n_seq_id[n] = 1
            batch.seq_id[n][0] = seq.slot
            batch.logits[n] = logits
            if logits:
                logit_rows.append((n, seq))
            n += 1

        active = [s for s in self._slots if s is not None]
        # Generating sequences first: one token each keeps their streams moving.
        for seq in active:
            if not seq.prefilling:
                add(seq.generated[-1], seq.n_past, seq, True)
                spans.append((seq, n - 1, 1))
        # Then prompt chunks, within what is left of the batch.
        for seq in active:
            if not seq.prefilling:
                continue
            room = self.batch_capacity - n
            if room <= 0:
                break
            chunk = seq.prompt[seq.n_past: seq.n_past + room]
            for offset, token in enumerate(chunk):
                last = seq.n_past + offset == len(seq.prompt) - 1
                add(token, seq.n_past + offset, seq, last)
            spans.append((seq, n - 1, len(chunk)))

        start, size = 0, n
        while start < n:
            size = min(size, n - start)
            status = self._decode(self._ctx, self._view(start, size))
            if status == 1 and size > 1:
                # No room in the KV cache for this many tokens: retry with half, as
                # llama-server does, before failing anyone.
                log.warning("llama_decode found no KV room for %d tokens; retrying with %d", size, size // 2)
                size //= 2
                continue
            if status != 0:
                log.error("llama_decode failed with status %d for a batch of %d tokens", status, size)
                for seq in active:
                    if self._slots[seq.slot] is seq:  # not already finished by an earlier part
                        self._finish(seq, "error", error=f"decoding failed (llama.cpp status {status})",
                                     reset_cache=True)
                return
            end = start + size
            for seq, last_row, count in spans:
                if start <= last_row < end:
                    seq.n_past += count
            for row, seq in logit_rows:
                if start <= row < end:
                    self._sample(seq, row - start)
            start = end

    def _view(self, start: int, size: int) -> llama_cpp.llama_batch:
        """Rows [start, start + size) of the step's batch, sharing its arrays."""
        whole = self._batch
        if start == 0:
            whole.n_tokens = size
            return whole
        view = llama_cpp.llama_batch()
        view.n_tokens = size
        for name in ("token", "pos", "n_seq_id", "seq_id", "logits"):
            array = getattr(whole, name)
            address = ctypes.addressof(array.contents) + start * ctypes.sizeof(array._type_)
            setattr(view, name, ctypes.cast(address, type(array)))
        return view

    def _sample(self, seq: _Sequence, row: int) -> None:
        token = seq.sampler.sample(self._ctx, row)
        if self.model.is_end_of_generation(token):
            self._finish(seq, "stop")
            return
        logprobs = seq.sampler.logprobs(self._ctx, row, token) if seq.sampler.params.logprobs is not None else None
        seq.generated.append(token)
        seq.pending.append(TokenOut(token, logprobs))
        text = seq.text.push(self.model.token_bytes(token))
        if text:
            seq.gen._emit(Delta(text, seq.pending))
            seq.pending = []
        limit = seq.gen.request.max_tokens
        if seq.text.stopped:
            self._finish(seq, "stop")
        elif limit is not None and len(seq.generated) >= limit:
            self._finish(seq, "length")
        elif seq.n_past + 1 >= self.context_per_sequence:
            self._finish(seq, "length")

    def _finish(self, seq: _Sequence, reason: FinishReason, *, error: str | None = None, reset_cache: bool = False) -> None:
        seq.sampler.close()
        if reset_cache:
            llama_cpp.llama_memory_seq_rm(self._mem, seq.slot, 0, -1)
            self._slot_cache[seq.slot] = []
        else:
            self._slot_cache[seq.slot] = seq.kv_tokens()
        self._releases += 1
        self.completion_rate.record()
        self._slot_released[seq.slot] = self._releases
        # The slot is free before the client hears that its request ended.
        with self._cond:
            self._slots[seq.slot] = None
        tail = seq.text.flush()
        if tail or seq.pending:
            seq.gen._emit(Delta(tail, seq.pending))
        seq.gen._emit(Finished(reason, len(seq.prompt), len(seq.generated), seq.cached_tokens, error))

