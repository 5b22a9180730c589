"""How many replicas a LocalModel should run: keepAlive and autoscaling, as a pure function.

Rules this module keeps:
- Without spec.keepAlive and spec.autoscaling it never changes spec.replicas, so a
  user's HorizontalPodAutoscaler or KEDA ScaledObject keeps writing /scale alone.
- It scales to zero only when no router reports a request in flight (or held),
  and the latest activity (a request starting or ending, a busy router's last
  report, the moment the model was loaded) is at least keepAlive ago.
- Every input is read from the LocalModel (status.activity, written by the
  routers; status.scaleDownSince and the Loaded condition, written by the
  operator), so a restarted operator or router decides the same.
- Waking a model from zero is the router's job (it holds the request); the
  operator wakes one too when a router reports held requests, in case the
  router's own write failed. Requests merely in flight never wake it: a report
  written before a user's scale to zero may still count some.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localmodel_server.contract import parse_keep_alive

# A busy router rewrites its entry every few seconds (the router's --activity-interval, 10 s by
# default); an entry older than this no longer counts its in-flight requests.
STALE_AFTER_S = 60.0
# Entries of routers that have been silent this long are folded into status.lastRequestTime and removed,
# so that router pods coming and going do not grow status.activity without bound.
PRUNE_AFTER_S = 3600.0


def human_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs or not (hours or minutes) else ""]
    return "".join(parts)


def parse_time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int = 1
    max_replicas: int = 4
    target_in_flight: int = 4
    scale_down_delay_s: float = 300.0


@dataclass(frozen=True)
class ScalePolicy:
    """spec.keepAlive and spec.autoscaling; both None leaves spec.replicas to its owner."""

    keep_alive_s: float | None = None
    autoscaling: Autoscaling | None = None

    @property
    def manages_replicas(self) -> bool:
        return self.keep_alive_s is not None or self.autoscaling is not None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> ScalePolicy:
        keep_alive = spec.get("keepAlive")
        auto = spec.get("autoscaling")
        autoscaling = None
        if auto is not None:
            autoscaling = Autoscaling(
                min_replicas=int(auto.get("minReplicas", 1)),
                max_replicas=int(auto.get("maxReplicas", 4)),
                target_in_flight=int(auto.get("targetInFlight", 4)),
                scale_down_delay_s=parse_keep_alive(str(auto.get("scaleDownDelay", "5m"))) or 0.0,
            )
        return cls(parse_keep_alive(keep_alive) if keep_alive else None, autoscaling)


@dataclass(frozen=True)
class RouterReport:
    """One entry of status.activity."""

    in_flight: int = 0
    last_request: datetime.datetime | None = None
    reported_at: datetime.datetime | None = None
    held: int = 0  # of in_flight, the requests waiting for the model to load

    @classmethod
    def from_status(cls, entry: Mapping[str, Any]) -> RouterReport:
        return cls(int(entry.get("inFlight") or 0), parse_time(entry.get("lastRequestTime")),
                   parse_time(entry.get("reportedAt")), int(entry.get("held") or 0))


@dataclass(frozen=True)
class ScaleState:
    """What the decision reads, all of it from the LocalModel."""

    replicas: int  # spec.replicas
    reports: Mapping[str, RouterReport]
    last_request: datetime.datetime | None = None  # status.lastRequestTime (folded stale entries)
    loaded_since: datetime.datetime | None = None  # when the Loaded condition last turned True
    scale_down_since: datetime.datetime | None = None


@dataclass(frozen=True)
class ScaleDecision:
    replicas: int
    reason: str = ""  # an Event reason when replicas change
    message: str = ""
    recheck_after_s: float | None = None  # when the decision may change with no new input
    scale_down_since: datetime.datetime | None = None
    prune: tuple[str, ...] = ()  # status.activity entries to fold and remove
    last_request: datetime.datetime | None = None  # status.lastRequestTime after folding

    @property
    def changes(self) -> bool:
        return bool(self.reason)


def in_flight(reports: Mapping[str, RouterReport], now: datetime.datetime) -> int:
    """Requests the routers hold or forward, counting only entries recent enough to trust."""
    return sum(r.in_flight for r in _fresh(reports, now))


def held(reports: Mapping[str, RouterReport], now: datetime.datetime) -> int:
    """Requests the routers hold for the model to load, counting only entries recent enough to trust."""
    return sum(r.held for r in _fresh(reports, now))


def _fresh(reports: Mapping[str, RouterReport], now: datetime.datetime) -> list[RouterReport]:
    return [r for r in reports.values() if r.reported_at and _age(r.reported_at, now) <= STALE_AFTER_S]


def last_activity(state: ScaleState) -> datetime.datetime | None:
    moments = [state.last_request, state.loaded_since]
    for report in state.reports.values():
        moments.append(report.last_request)
        if report.in_flight:
            moments.append(report.reported_at)  # busy until at least then
    known = [moment for moment in moments if moment is not None]
    return max(known) if known else None


def _age(moment: datetime.datetime, now: datetime.datetime) -> float:
    return (now - moment).total_seconds()


def _prune(state: ScaleState, now: datetime.datetime) -> tuple[tuple[str, ...], datetime.datetime | None]:
    gone = tuple(sorted(name for name, r in state.reports.items()
                        if r.reported_at is None or _age(r.reported_at, now) > PRUNE_AFTER_S))
    folded = [state.last_request, *(state.reports[name].last_request for name in gone)]
    known = [moment for moment in folded if moment is not None]
    return gone, max(known) if known else None


def decide(policy: ScalePolicy, state: ScaleState, now: datetime.datetime) -> ScaleDecision:
    """The replicas the LocalModel should run now, why, and when to look again."""
    prune, folded = _prune(state, now)
    base = ScaleDecision(state.replicas, prune=prune, last_request=folded, scale_down_since=state.scale_down_since)
    if not policy.manages_replicas:
        return ScaleDecision(state.replicas, prune=prune, last_request=folded)
    busy = in_flight(state.reports, now)
    auto = policy.autoscaling
    want = state.replicas
    if auto is not None and (state.replicas > 0 or busy > 0):
        want = min(max(math.ceil(busy / auto.target_in_flight), auto.min_replicas), auto.max_replicas)

    if state.replicas == 0:
        # Only held requests wake it: requests forwarded just before a scale to zero still
        # count as in flight until their router's next report, and must not undo it.
        waiting = held(state.reports, now)
        if waiting == 0:
            return ScaleDecision(0, prune=prune, last_request=folded)
        target = max(want, 1)
        return _scaled(base, target, "ScaledFromZero",
                       f"{_requests(waiting)} wait at the routers: scaled from 0 to {target}")

    if policy.keep_alive_s is not None and busy == 0:
        active = last_activity(state)
        idle = _age(active, now) if active is not None else 0.0
        if active is not None and idle >= policy.keep_alive_s:
            return _scaled(base, 0, "ScaledToZero",
                           f"no request for {human_duration(idle)} (keepAlive {human_duration(policy.keep_alive_s)}): "
                           f"scaled from {state.replicas} to 0; the claim and the weights stay, "
                           "the next request loads the model again")
        # Without a known activity time (a model just created), the next reconcile records Loaded first.
        base = dataclasses.replace(base, recheck_after_s=policy.keep_alive_s - idle if active else 1.0)
    elif policy.keep_alive_s is not None:
        # A router that dies while busy leaves its count behind; look again once that entry is stale.
        base = dataclasses.replace(base, recheck_after_s=_until_stale(state.reports, now))

    if auto is None or want == state.replicas:
        return dataclasses.replace(base, scale_down_since=None)
    load = f"{_requests(busy)} in flight, targetInFlight {auto.target_in_flight}"
    if want > state.replicas:
        return _scaled(base, want, "ScaledUp", f"{load}: scaled from {state.replicas} to {want}")
    if state.replicas > auto.max_replicas:
        return _scaled(base, want, "ScaledDown", f"autoscaling.maxReplicas is {auto.max_replicas}: scaled from {state.replicas}")
    since = state.scale_down_since or now
    waited = _age(since, now)
    if waited >= auto.scale_down_delay_s:
        return _scaled(base, want, "ScaledDown", f"{load} for {human_duration(waited)} "
                       f"(scaleDownDelay {human_duration(auto.scale_down_delay_s)}): scaled from {state.replicas} to {want}")
    recheck = auto.scale_down_delay_s - waited
    if base.recheck_after_s is not None:
        recheck = min(recheck, base.recheck_after_s)
    return dataclasses.replace(base, scale_down_since=since, recheck_after_s=recheck)


def _until_stale(reports: Mapping[str, RouterReport], now: datetime.datetime) -> float | None:
    ages = [_age(r.reported_at, now) for r in reports.values() if r.in_flight and r.reported_at]
    fresh = [STALE_AFTER_S - age for age in ages if age <= STALE_AFTER_S]
    return max(min(fresh), 1.0) if fresh else None


def _scaled(base: ScaleDecision, replicas: int, reason: str, message: str) -> ScaleDecision:
    return ScaleDecision(replicas, reason, message, None, None, base.prune, base.last_request)


def _requests(count: int) -> str:
    return "1 request" if count == 1 else f"{count} requests"


def scale_state(body: Mapping[str, Any], loaded_condition: str) -> ScaleState:
    """The decision's inputs, read from a LocalModel object as the apiserver returns it."""
    spec, status = body.get("spec") or {}, body.get("status") or {}
    loaded_since = None
    for condition in status.get("conditions") or ():
        if condition.get("type") == loaded_condition and condition.get("status") == "True":
            loaded_since = parse_time(condition.get("lastTransitionTime"))
    return ScaleState(
        replicas=int(spec.get("replicas", 1)),
        reports={name: RouterReport.from_status(entry or {}) for name, entry in (status.get("activity") or {}).items()},
        last_request=parse_time(status.get("lastRequestTime")),
        loaded_since=loaded_since,
        scale_down_since=parse_time(status.get("scaleDownSince")),
    )


def status_fields(decision: ScaleDecision, status: Mapping[str, Any]) -> dict[str, Any]:
    """The merge patch of the status fields the decision owns; empty when nothing changes."""
    patch: dict[str, Any] = {}
    since = format_time(decision.scale_down_since) if decision.scale_down_since else None
    if status.get("scaleDownSince") != since:
        patch["scaleDownSince"] = since
    if decision.prune:
        patch["activity"] = {name: None for name in decision.prune}
        last = format_time(decision.last_request) if decision.last_request else None
        if last and status.get("lastRequestTime") != last:
            patch["lastRequestTime"] = last
    return patch
