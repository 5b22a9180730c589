"""The router's Prometheus metrics, on their own registry (one per router instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Label for requests that never resolved to a served model (bad JSON, unknown
# name). Unknown names are not used as labels: clients choose them.
UNROUTED = ""

# The router adds well under a millisecond; buckets resolve that range.
_ROUTING_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0)


class RouterMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "localmodel_router_requests",
            "Requests answered, by served model and HTTP status.",
            ["model", "code"],
            registry=self.registry,
        )
        self.routing_seconds = Histogram(
            "localmodel_router_routing_seconds",
            "Time the router adds before a request reaches a backend: read, parse, route, connect.",
            ["model"],
            buckets=_ROUTING_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "localmodel_router_upstream_errors",
            "Failed backend attempts, by reason: connect, disconnect, timeout, status_502, status_503.",
            ["model", "reason"],
            registry=self.registry,
        )
        self.retries = Counter(
            "localmodel_router_retries",
            "Requests sent again to another endpoint after a failed attempt.",
            ["model"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "localmodel_router_in_flight_requests",
            "Requests being forwarded now, by served model.",
            ["model"],
            registry=self.registry,
        )
        self.route_conflicts = Gauge(
            "localmodel_router_route_conflicts",
            "Model names or aliases claimed by more than one model (the later claims are ignored).",
            registry=self.registry,
        )
        self.models = Gauge(
            "localmodel_router_models",
            "Models in the route table, by readiness.",
            ["ready"],
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._model_children: dict[str, tuple[Histogram, Gauge]] = {}

    def count_request(self, model: str, code: int) -> None:
        # labels() validates and locks on every call; the hot path reuses children.
        child = self._request_children.get((model, code))
        if child is None:
            child = self._request_children[(model, code)] = self.requests.labels(model, str(code))
        child.inc()

    def for_model(self, model: str) -> tuple[Histogram, Gauge]:
        """The routing-latency and in-flight children of one model, cached."""
        children = self._model_children.get(model)
        if children is None:
            children = self._model_children[model] = (self.routing_seconds.labels(model), self.in_flight.labels(model))
        return children

    def render(self) -> bytes:
        return generate_latest(self.registry)
