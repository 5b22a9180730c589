"""The batching engine in-process, on a real llama.cpp context."""

from __future__ import annotations

import asyncio
import threading

import pytest
from llama_cpp.llama_grammar import JSON_GBNF

from localmodel_server.engine import batching
from localmodel_server.engine.batching import BatchEngine, Delta, EngineConfig, Finished, GenerationRequest
from localmodel_server.engine.model import LoadedModel
from localmodel_server.engine.sampling import SamplingParams

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def engine(chat_model):
    model = LoadedModel(chat_model)
    engine = BatchEngine(model, EngineConfig(context_size=256, parallel=2, threads=2))
    yield engine
    engine.close()
    model.close()


def generate(engine: BatchEngine, text: str, max_tokens: int = 4) -> tuple[str, Finished]:
    async def run() -> tuple[str, Finished]:
        request = GenerationRequest(engine.model.tokenize(text), SamplingParams(temperature=0), max_tokens)
        events = [event async for event in engine.submit(request)]
        return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]

    return asyncio.run(run())


def test_a_failing_step_fails_its_requests_and_the_engine_keeps_serving(engine, monkeypatch):
    reference, _ = generate(engine, "hello")
    original = BatchEngine._sample

    def broken(self, seq, row):
        monkeypatch.setattr(BatchEngine, "_sample", original)  # fail once
        raise RuntimeError("injected")

    monkeypatch.setattr(BatchEngine, "_sample", broken)
    _, failed = generate(engine, "hello")
    assert failed.reason == "error" and failed.error == "internal engine error"
    assert engine.busy_slots == 0
    # The failed slot's KV was dropped; the same prompt decodes from scratch to the same tokens.
    again, finished = generate(engine, "hello")
    assert finished.reason == "length" and again == reference


def test_max_tokens_and_prefix_reuse_are_reported(engine):
    _, first = generate(engine, "the same prompt, twice", max_tokens=3)
    _, second = generate(engine, "the same prompt, twice", max_tokens=3)
    assert first.completion_tokens == second.completion_tokens == 3
    assert second.cached_tokens == second.prompt_tokens - 1


def test_a_cold_request_leaves_the_other_slots_cache_alone(engine):
    # Both prompts start with BOS; that alone must not send the second one into the first's slot.
    a = "a first prompt about lighthouses, long enough to be worth caching"
    b = "something entirely different: a recipe for bread and salt"
    generate(engine, a)
    generate(engine, b)
    _, again = generate(engine, a)
    assert again.cached_tokens == again.prompt_tokens - 1


def test_a_cache_that_cannot_be_trimmed_is_cleared_and_the_prompt_evaluated_again(engine, monkeypatch):
    prompt = "a prompt whose slot keeps state that cannot be partly removed"
    reference, _ = generate(engine, prompt)
    real = batching.llama_cpp.llama_memory_seq_rm
    trims = []

    def recurrent_memory(mem, seq, p0, p1):
        # Like llama.cpp's recurrent memory: removing only a suffix fails and changes nothing.
        if p0 > 0:
            trims.append(p0)
            return False
        return real(mem, seq, p0, p1)

    monkeypatch.setattr(batching.llama_cpp, "llama_memory_seq_rm", recurrent_memory)
    again, finished = generate(engine, prompt)
    assert trims, "the cached prefix was never trimmed"
    assert finished.cached_tokens == 0
    assert again == reference


def test_submit_is_not_blocked_while_a_grammar_sampler_builds(engine, monkeypatch):
    building, release = threading.Event(), threading.Event()

    class SlowGrammarSampler(batching.Sampler):
        def __init__(self, model, params):
            if params.grammar is not None:
                building.set()
                release.wait(30)
            super().__init__(model, params)

    monkeypatch.setattr(batching, "Sampler", SlowGrammarSampler)
    # Unblocks the build even if submit() below hangs, so a failure cannot hang the run.
    watchdog = threading.Timer(10, release.set)
    watchdog.start()

    async def run() -> tuple[bool, list[Finished]]:
        tokens = engine.model.tokenize("json please")
        with_grammar = engine.submit(GenerationRequest(tokens, SamplingParams(temperature=0, grammar=JSON_GBNF), 4))
        await asyncio.to_thread(building.wait, 10)
        plain = engine.submit(GenerationRequest(tokens, SamplingParams(temperature=0), 4))
        submitted_while_building = not release.is_set()
        release.set()
        done = [[e async for e in gen][-1] for gen in (with_grammar, plain)]
        return submitted_while_building, done

    try:
        submitted_while_building, done = asyncio.run(run())
    finally:
        watchdog.cancel()
    assert building.is_set() and submitted_while_building
    assert [f.reason for f in done] == ["length", "length"]


def test_a_decode_without_kv_room_is_retried_with_half_the_batch(engine, monkeypatch):
    prompts = ["the first of two prompts decoded together", "and the second one, a little longer than that"]

    async def together(texts: list[str]) -> list[tuple[str, Finished]]:
        async def one(text: str) -> tuple[str, Finished]:
            request = GenerationRequest(engine.model.tokenize(text), SamplingParams(temperature=0), 6)
            events = [event async for event in engine.submit(request)]
            return "".join(e.text for e in events if isinstance(e, Delta)), events[-1]
        return await asyncio.gather(*(one(t) for t in texts))

    references = [text for text, _ in asyncio.run(together(prompts))]
    # Fill both slots with other prompts, so the next round evaluates its prompts whole.
    asyncio.run(together(["unrelated words to evict the cache", "more unrelated words to evict the other"]))
    real, sizes = engine._decode, []

    def kv_holds_four_tokens(ctx, batch):
        sizes.append(batch.n_tokens)
        return 1 if batch.n_tokens > 4 else real(ctx, batch)  # 1: llama.cpp found no KV slot

    monkeypatch.setattr(engine, "_decode", kv_holds_four_tokens)
    results = asyncio.run(together(prompts))
    assert any(size > 4 for size in sizes), "no batch was ever too large"
    assert [f.reason for _, f in results] == ["length", "length"]
    assert [text for text, _ in results] == references
