"""The route table: which backends answer a `model` name, and whether they can now.

Pure data and lookups; the discovery sources (static file, Kubernetes) build a
`RouteTable` and swap it in whole, so the hot path reads one immutable object
without locks.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field

from localmodel_server.protocol.errors import APIError, model_not_found, service_unavailable
from localmodel_server.protocol.models import ModelCard, ModelList

log = logging.getLogger(__name__)

# Retry-After (seconds) for a model that is known but cannot answer yet.
DEFAULT_RETRY_AFTER = 5


@dataclass(frozen=True)
class RouteEntry:
    """One servable model: its served name, aliases and the backends behind it."""

    name: str
    endpoints: tuple[str, ...] = ()  # base URLs, e.g. "http://10.0.0.7:8000"
    aliases: tuple[str, ...] = ()
    namespace: str | None = None
    # False keeps a model listed but unroutable even with endpoints (e.g. still loading).
    enabled: bool = True
    # Why the model cannot answer, for clients ("downloading 42%"); empty when ready.
    reason: str = ""
    retry_after: int = DEFAULT_RETRY_AFTER
    created: int = 0
    # (namespace, LocalModel name) for models found in the cluster: the router reports its
    # requests there and may wake the model through its scale subresource (holding.py).
    scale_ref: tuple[str, str] | None = None
    # No endpoint now, but one is coming without anyone's help but the router's: scaled to zero with
    # its weights in place, or loading. A request is then held instead of refused.
    wakeable: bool = False
    scaled_to_zero: bool = False

    @property
    def ready(self) -> bool:
        return self.enabled and bool(self.endpoints)

    @property
    def status(self) -> str:
        if self.ready:
            return "ready"
        return self.reason or "no ready endpoints"

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}/{self.name}" if self.namespace else self.name


@dataclass(frozen=True)
class RouteTable:
    """Every model and alias the router answers, resolved to exactly one entry each."""

    entries: tuple[RouteEntry, ...] = ()
    # A name claimed by two entries is given to the first; the rest are reported here.
    conflicts: tuple[str, ...] = ()
    _by_name: dict[str, RouteEntry] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, entries: Iterable[RouteEntry]) -> RouteTable:
        """Index entries by name and alias; earlier entries win a contested name."""
        by_name: dict[str, RouteEntry] = {}
        kept: list[RouteEntry] = []
        conflicts: list[str] = []
        # Served names are claimed before aliases, so an alias never hides a model.
        for entry in entries:
            owner = by_name.get(entry.name)
            if owner is not None:
                conflicts.append(f"model '{entry.name}' of {entry.qualified_name} is already served by {owner.qualified_name}")
                continue
            by_name[entry.name] = entry
            kept.append(entry)
        for entry in kept:
            for alias in entry.aliases:
                owner = by_name.get(alias)
                if owner is not None and owner is not entry:
                    conflicts.append(f"alias '{alias}' of {entry.qualified_name} is already taken by {owner.qualified_name}")
                    continue
                by_name[alias] = entry
        for conflict in conflicts:
            log.warning("route conflict: %s", conflict)
        return cls(tuple(kept), tuple(conflicts), by_name)

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def lookup(self, model: str) -> RouteEntry | None:
        return self._by_name.get(model)

    def resolve(self, model: str) -> RouteEntry:
        """The entry that serves `model`, or the API error a client should see."""
        entry = self._by_name.get(model)
        if entry is None:
            raise model_not_found(model, self._by_name)
        if not entry.ready:
            raise not_ready(model, entry)
        return entry

    def card(self, model: str) -> ModelCard | None:
        entry = self._by_name.get(model)
        if entry is None:
            return None
        return ModelCard(
            id=model,
            created=entry.created,
            root=entry.name if model != entry.name else None,
            ready=entry.ready,
            status=entry.status,
        )

    def model_list(self) -> ModelList:
        return ModelList(data=[card for name in self.names() if (card := self.card(name)) is not None])


def not_ready(model: str, entry: RouteEntry) -> APIError:
    target = f"'{model}' (served by '{entry.name}')" if model != entry.name else f"'{model}'"
    return service_unavailable(
        f"The model {target} is not ready: {entry.status}. Retry after {entry.retry_after} s.",
        retry_after=entry.retry_after,
        code="model_not_ready",
    )
