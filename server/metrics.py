"""Prometheus metrics of the model server.

Each app gets its own registry so that several servers can live in one
process (tests) without colliding on the global default registry.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "localmodel_requests", "Requests by endpoint and HTTP status.", ["endpoint", "status"], registry=r
        )
        self.latency = Histogram(
            "localmodel_request_duration_seconds", "Time from request to last byte.", ["endpoint"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "localmodel_time_to_first_token_seconds", "Time from request to the first generated token.",
            ["endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.prompt_tokens = Counter("localmodel_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter("localmodel_completion_tokens", "Tokens generated.", registry=r)
        self.cached_prompt_tokens = Counter(
            "localmodel_cached_prompt_tokens", "Prompt tokens reused from a slot's KV cache.", registry=r
        )
        self.in_flight = Gauge("localmodel_requests_in_flight", "Requests being handled.", registry=r)
        self.queue_depth = Gauge("localmodel_queue_depth", "Requests waiting for a free slot.", registry=r)
        self.busy_slots = Gauge("localmodel_busy_slots", "Slots decoding a request.", registry=r)
        self.slots = Gauge("localmodel_slots", "Configured slots.", registry=r)
        self.load_seconds = Gauge("localmodel_model_load_seconds", "Seconds the model took to load.", registry=r)
        self.ready = Gauge("localmodel_ready", "1 when the model is loaded and the server is not draining.", registry=r)

    def watch_engine(self, queued: Callable[[], int], busy: Callable[[], int]) -> None:
        """Read queue depth and busy slots from the engine at scrape time."""
        self.queue_depth.set_function(queued)
        self.busy_slots.set_function(busy)
