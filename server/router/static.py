"""The static route table: models and their backend URLs from a YAML/JSON file or flags.

For a router in front of servers that run anywhere but Kubernetes
(`localmodel-router --routes routes.yaml`); the router re-reads the file when it
changes. The format is documented in docs/router.md. Single-machine mode
(`localmodel up`) publishes its tables to an in-process router instead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .routes import DEFAULT_RETRY_AFTER, RouteEntry, RouteTable
from .upstream import Origin

log = logging.getLogger(__name__)


class StaticModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1)]
    aliases: list[Annotated[str, Field(min_length=1)]] = []
    endpoints: list[str] = []
    # false keeps the model listed (and answered with 503) while its endpoints cannot serve yet
    ready: bool = True
    # why the model is not ready, shown to clients: "downloading 42%", "failed: checksum mismatch"
    status: str = ""
    retryAfter: Annotated[int, Field(ge=0)] = DEFAULT_RETRY_AFTER
    created: Annotated[int, Field(ge=0)] = 0

    @field_validator("endpoints")
    @classmethod
    def _http_urls(cls, endpoints: list[str]) -> list[str]:
        for url in endpoints:
            Origin.parse(url)
        return [url.rstrip("/") for url in endpoints]

    def entry(self) -> RouteEntry:
        return RouteEntry(
            name=self.name,
            endpoints=tuple(self.endpoints),
            aliases=tuple(self.aliases),
            enabled=self.ready,
            reason=self.status,
            retry_after=self.retryAfter,
            created=self.created,
        )


class StaticRoutes(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[StaticModel] = []


class RoutesFileError(ValueError):
    """The routes file is missing or not a valid route table; says where and why."""


def parse_routes(text: str, source: str = "routes") -> RouteTable:
    try:
        data = yaml.safe_load(text)  # YAML is a superset of JSON: both formats parse here
    except yaml.YAMLError as exc:
        raise RoutesFileError(f"{source}: not valid YAML or JSON: {exc}") from exc
    try:
        routes = StaticRoutes.model_validate(data if data is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'top level'}: {err['msg'].removeprefix('Value error, ')}"
            for err in exc.errors()
        )
        raise RoutesFileError(f"{source}: {problems}") from exc
    return RouteTable.build(model.entry() for model in routes.models)


def load_routes_file(path: Path) -> RouteTable:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RoutesFileError(f"cannot read routes file {path}: {exc.strerror or exc}") from exc
    return parse_routes(text, str(path))


def parse_route_flags(flags: Iterable[str]) -> RouteTable:
    """`--route 'name[,alias…]=http://host:port[,http://host:port…]'` flags as a table."""
    models = []
    for flag in flags:
        names, sep, urls = flag.partition("=")
        name, *aliases = [n.strip() for n in names.split(",")]
        if not sep or not name or not urls:
            raise RoutesFileError(f"--route {flag!r}: expected NAME[,ALIAS...]=URL[,URL...]")
        try:
            models.append(StaticModel(name=name, aliases=aliases, endpoints=[u.strip() for u in urls.split(",")]))
        except ValidationError as exc:
            raise RoutesFileError(f"--route {flag!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}") from exc
    return RouteTable.build(model.entry() for model in models)


def reloader(path: Path, publish: Callable[[RouteTable], None]) -> Callable[[], None]:
    """A change handler that publishes the new table, or keeps the last good one on error."""

    def reload() -> None:
        try:
            table = load_routes_file(path)
        except RoutesFileError as exc:
            log.error("keeping the previous routes: %s", exc)
            return
        log.info("routes reloaded from %s: %d models", path, len(table.entries))
        publish(table)

    return reload
