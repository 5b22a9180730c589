"""The pure parts of scale from zero: which models may be held, when activity is written, what a wake writes."""

from __future__ import annotations

from typing import Any

import pytest

from localmodel_server.router.activity import Counts, report_due, report_patch
from localmodel_server.router.holding import wants_stream
from localmodel_server.router.kube_routes import route_entries, wakeable
from localmodel_server.router.scaler import wake_replicas

WEIGHTS = {"digest": "abcd1234", "source": {"url": "https://h/x.gguf"}}


def localmodel(replicas: int = 0, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "tiny", "namespace": "ns", "creationTimestamp": "2030-01-01T00:00:00Z"},
            "spec": {"servedName": "tiny-chat", "replicas": replicas}, "status": status}


@pytest.mark.parametrize(("status", "expected"), [
    ({"phase": "Ready", "weights": WEIGHTS}, True),  # scaled to zero: rolled out at 0
    ({"phase": "Loading", "weights": WEIGHTS}, True),
    ({"phase": "Downloading", "weights": WEIGHTS}, True),  # a new source downloads; the pods load the old one
    ({"phase": "Downloading"}, False),  # the first download: minutes to hours, refuse at once
    ({"phase": "Pending"}, False),
    ({"phase": "Failed", "weights": WEIGHTS}, False),
    ({"phase": "Loading", "weights": WEIGHTS,
      "conditions": [{"type": "Degraded", "status": "True", "reason": "ProgressDeadlineExceeded"}]}, False),
])
def test_which_models_are_held(status: dict[str, Any], expected: bool) -> None:
    assert wakeable(localmodel(**status)) is expected


def test_route_entries_carry_the_scale_target() -> None:
    (entry,) = route_entries([localmodel(0, phase="Ready", weights=WEIGHTS)], [])
    assert (entry.scale_ref, entry.wakeable, entry.scaled_to_zero, entry.ready) == (("ns", "tiny"), True, True, False)
    slices = [{"metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": "lm-tiny"}},
               "ports": [{"name": "http", "port": 8000}], "endpoints": [{"addresses": ["10.0.0.1"]}]}]
    (served,) = route_entries([localmodel(1, phase="Ready", weights=WEIGHTS)], slices)
    assert (served.ready, served.wakeable, served.scaled_to_zero) == (True, False, False)


@pytest.mark.parametrize(("counts", "held", "now", "due"), [
    (Counts(), 0, 100.0, False),  # never used: nothing to say
    (Counts(in_flight=1, last_request=5.0), 0, 100.0, True),  # first request: at once
    (Counts(1, 5.0, reported=(1, 0, 5.0), reported_at=95.0), 0, 100.0, False),  # busy, reported 5 s ago
    (Counts(1, 5.0, reported=(1, 0, 5.0), reported_at=89.0), 0, 100.0, True),  # busy: heartbeat
    (Counts(0, 7.0, reported=(1, 0, 5.0), reported_at=95.0), 0, 100.0, False),  # ended, but not twice in 10 s
    (Counts(0, 7.0, reported=(1, 0, 5.0), reported_at=89.0), 0, 100.0, True),  # ended
    (Counts(0, 7.0, reported=(0, 0, 7.0), reported_at=10.0), 0, 100.0, False),  # idle and said so: silent
    (Counts(1, 5.0, reported=(1, 1, 5.0), reported_at=89.0), 0, 100.0, True),  # no longer held: say so
])
def test_activity_is_written_on_change_or_as_a_heartbeat_at_most_every_interval(
    counts: Counts, held: int, now: float, due: bool
) -> None:
    assert report_due(counts, held, now, 10.0) is due


def test_the_report_is_a_merge_patch_of_this_routers_own_entry() -> None:
    assert report_patch("router-a", 2, 1, 1893456000.0, 1893456005.0) == {"status": {"activity": {"router-a": {
        "inFlight": 2, "held": 1, "lastRequestTime": "2030-01-01T00:00:00Z", "reportedAt": "2030-01-01T00:00:05Z"}}}}


def test_a_wake_writes_one_replica_only_from_zero() -> None:
    assert [wake_replicas(n) for n in (0, 1, 3)] == [1, None, None]


@pytest.mark.parametrize(("body", "stream"), [
    (b'{"model": "m", "stream": true}', True), (b'{"model": "m"}', False), (b'{"model": "m", "stream": "yes"}', False),
    (b"not json", False),
])
def test_streams_are_recognised(body: bytes, stream: bool) -> None:
    assert wants_stream(body) is stream
