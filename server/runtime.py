"""The served model's lifecycle: loading, ready, draining, failed."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time

from .engine.batching import BatchEngine, EngineConfig
from .engine.embedding import Embedder
from .engine.model import LoadedModel
from .engine.overload import Admission
from .metrics import ServerMetrics
from .protocol import errors
from .settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_CONTEXT = 4096


class State(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    DRAINING = "draining"
    FAILED = "failed"


class ModelRuntime:
    def __init__(self, settings: ServerSettings, metrics: ServerMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.state = State.LOADING
        self.failure: str | None = None
        self.model: LoadedModel | None = None
        self.engine: BatchEngine | None = None
        self.embedder: Embedder | None = None
        # Places for generation requests, bounded before any work is spent on them (None until loaded).
        self.admission: Admission | None = None
        self.created = int(time.time())
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        metrics.slots.set(settings.parallel)

    async def load(self) -> None:
        """Load the model off the event loop, so /healthz and /readyz answer meanwhile."""
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._load_blocking)
        except Exception as exc:  # the process stays up to report why; readiness never passes
            self.failure = f"{type(exc).__name__}: {exc}"
            self.state = State.FAILED
            log.error("model failed to load: %s", self.failure)
            return
        self.metrics.load_seconds.set(time.perf_counter() - started)
        if self.state is State.LOADING:
            self.state = State.READY
            self.metrics.ready.set(1)
        log.info("model %s ready in %.1fs", self.settings.model_id, time.perf_counter() - started)

    def _load_blocking(self) -> None:
        s = self.settings
        model = LoadedModel(s.model_path, gpu_layers=s.gpu_layers, weight_repacking=s.weight_repacking)
        context = s.context_size or min(model.info.context_length, DEFAULT_MAX_CONTEXT)
        if model.info.embedding_only:
            self.embedder = Embedder(
                model, context_size=min(context, model.info.context_length),
                max_sequences=s.parallel, threads=s.threads,
            )
        else:
            self.engine = BatchEngine(
                model,
                EngineConfig(context_size=context, parallel=s.parallel, threads=s.threads,
                             batch_size=s.batch_size),
            )
            self.metrics.watch_engine(lambda: self.engine.queued, lambda: self.engine.busy_slots)
            self.admission = Admission(s.parallel, s.queue_size)
        self.model = model

    # -- request admission ------------------------------------------------------

    def check_model_name(self, name: str) -> None:
        if name not in self.settings.accepted_names:
            raise errors.model_not_found(name, self.settings.accepted_names)

    def require_ready(self) -> None:
        if self.state is State.READY:
            return
        if self.state is State.LOADING:
            raise errors.service_unavailable("The model is still loading; retry shortly.", retry_after=5,
                                             code="model_loading")
        if self.state is State.DRAINING:
            raise errors.service_unavailable("The server is shutting down; retry on another replica.",
                                             code="server_draining")
        raise errors.service_unavailable(f"The model failed to load: {self.failure}", retry_after=30,
                                         code="model_load_failed")

    def queue_full(self) -> errors.APIError:
        """The 503 for a request that finds every place taken, with its turn in the return schedule as Retry-After."""
        assert self.engine is not None and self.admission is not None
        completions, span = self.engine.completion_rate.observed()
        wait = self.admission.returns.wait(self.engine.queued, completions, span, random.random())
        return errors.queue_full(round(1000 * wait))

    def request_started(self) -> None:
        self.in_flight += 1
        self._idle.clear()

    def request_finished(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    # -- shutdown -----------------------------------------------------------------

    async def drain(self, timeout: float) -> bool:
        """Stop admitting requests and wait for in-flight ones; True if all finished in time."""
        if self.state is State.READY or self.state is State.LOADING:
            self.state = State.DRAINING
        self.metrics.ready.set(0)
        log.info("draining %d in-flight request(s), up to %.0fs", self.in_flight, timeout)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except TimeoutError:
            log.warning("drain timeout: %d request(s) still in flight", self.in_flight)
            return False

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()
        if self.embedder is not None:
            self.embedder.close()
        if self.model is not None:
            self.model.close()
