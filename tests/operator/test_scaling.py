"""keepAlive and autoscaling decisions as a pure function of the LocalModel and the clock; no cluster."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from localmodel_server.contract import parse_keep_alive

from localmodel_operator.scaling import (
    PRUNE_AFTER_S, STALE_AFTER_S, Autoscaling, RouterReport, ScalePolicy, ScaleState, decide, format_time,
    human_duration, scale_state, status_fields,
)

NOW = datetime.datetime(2030, 1, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)


def ago(seconds: float) -> datetime.datetime:
    return NOW - datetime.timedelta(seconds=seconds)


def report(in_flight: int = 0, last: float | None = None, reported: float | None = 0.0, held: int = 0) -> RouterReport:
    return RouterReport(in_flight, ago(last) if last is not None else None, ago(reported) if reported is not None else None,
                        held)


KEEP_30S = ScalePolicy(keep_alive_s=30)
AUTO = Autoscaling(min_replicas=1, max_replicas=5, target_in_flight=4, scale_down_delay_s=60)


@pytest.mark.parametrize("text, seconds", [
    ("30s", 30), ("10m", 600), ("1h", 3600), ("1h30m", 5400), ("500ms", 0.5), ("0", 0), ("-1", None),
    ("300", 300),  # a bare number is seconds, as in Ollama
])
def test_durations_use_ollamas_syntax(text: str, seconds: float | None) -> None:
    assert parse_keep_alive(text) == seconds


@pytest.mark.parametrize("text", ["", "1d", "m5", "1h-1", "5 m"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_keep_alive(text)


def test_human_durations() -> None:
    assert [human_duration(s) for s in (0, 45, 90, 3600, 3725)] == ["0s", "45s", "1m30s", "1h", "1h2m5s"]


# (case, policy, state, expected replicas, expected Event reason, expected recheck)
CASES: list[tuple[str, ScalePolicy, ScaleState, int, str, float | None]] = [
    ("no policy leaves an HPA's replicas alone", ScalePolicy(),
     ScaleState(7, {"r1": report(0, last=9999)}, loaded_since=ago(9999)), 7, "", None),
    ("keepAlive, used recently: stays, rechecks when it expires", KEEP_30S,
     ScaleState(1, {"r1": report(0, last=10, reported=10)}, loaded_since=ago(500)), 1, "", 20),
    ("keepAlive expired: to zero", KEEP_30S,
     ScaleState(2, {"r1": report(0, last=31, reported=31)}, loaded_since=ago(500)), 0, "ScaledToZero", None),
    ("never called: the keepAlive clock starts when it was loaded", KEEP_30S,
     ScaleState(1, {}, loaded_since=ago(29)), 1, "", 1),
    ("never called and loaded long ago: to zero", KEEP_30S,
     ScaleState(1, {}, loaded_since=ago(31)), 0, "ScaledToZero", None),
    ("a long request in flight keeps it loaded however old its start", KEEP_30S,
     ScaleState(1, {"r1": report(1, last=900, reported=5)}, loaded_since=ago(900)), 1, "", STALE_AFTER_S - 5),
    ("any router busy keeps it loaded", KEEP_30S,
     ScaleState(1, {"r1": report(0, last=900, reported=900), "r2": report(2, last=100, reported=3)},
                loaded_since=ago(900)), 1, "", STALE_AFTER_S - 3),
    ("a router that died busy counts as active until its last report", KEEP_30S,
     ScaleState(1, {"r1": report(1, last=900, reported=STALE_AFTER_S + 5)}, loaded_since=ago(900)), 0, "ScaledToZero", None),
    ("a stale busy report newer than keepAlive still counts as activity", ScalePolicy(keep_alive_s=120),
     ScaleState(1, {"r1": report(1, last=900, reported=STALE_AFTER_S + 5)}, loaded_since=ago(900)), 1, "", 120 - STALE_AFTER_S - 5),
    ("folded lastRequestTime counts", KEEP_30S,
     ScaleState(1, {}, last_request=ago(5), loaded_since=ago(900)), 1, "", 25),
    ("keepAlive 0: to zero as soon as nothing is in flight", ScalePolicy(keep_alive_s=0),
     ScaleState(1, {"r1": report(0, last=0.5, reported=0.5)}, loaded_since=ago(60)), 0, "ScaledToZero", None),
    ("at zero and idle: stays", KEEP_30S, ScaleState(0, {"r1": report(0, last=900, reported=900)}), 0, "", None),
    ("at zero with held requests (the router's wake failed): to one", KEEP_30S,
     ScaleState(0, {"r1": report(3, last=1, reported=1, held=3)}), 1, "ScaledFromZero", None),
    ("at zero, held requests behind a stale report: stays", KEEP_30S,
     ScaleState(0, {"r1": report(3, last=900, reported=STALE_AFTER_S + 1, held=3)}), 0, "", None),
    ("at zero right after requests that were forwarded, none held (a user's scale to 0): stays", KEEP_30S,
     ScaleState(0, {"r1": report(2, last=1, reported=3)}), 0, "", None),
    ("autoscaling: load above target scales up at once", ScalePolicy(autoscaling=AUTO),
     ScaleState(1, {"r1": report(6, reported=1), "r2": report(5, reported=1)}), 3, "ScaledUp", None),
    ("autoscaling: never past maxReplicas", ScalePolicy(autoscaling=AUTO),
     ScaleState(2, {"r1": report(100, reported=1)}), 5, "ScaledUp", None),
    ("autoscaling: under minReplicas is raised", ScalePolicy(autoscaling=Autoscaling(2, 5, 4, 60)),
     ScaleState(1, {}), 2, "ScaledUp", None),
    ("autoscaling: load at target holds", ScalePolicy(autoscaling=AUTO),
     ScaleState(2, {"r1": report(8, reported=1)}), 2, "", None),
    ("autoscaling: less load waits for scaleDownDelay", ScalePolicy(autoscaling=AUTO),
     ScaleState(3, {"r1": report(4, reported=1)}), 3, "", 60),
    ("autoscaling: less load, part of the delay gone", ScalePolicy(autoscaling=AUTO),
     ScaleState(3, {"r1": report(4, reported=1)}, scale_down_since=ago(45)), 3, "", 15),
    ("autoscaling: less load for the whole delay scales down", ScalePolicy(autoscaling=AUTO),
     ScaleState(3, {"r1": report(4, reported=1)}, scale_down_since=ago(60)), 1, "ScaledDown", None),
    ("autoscaling: above maxReplicas (a user's write) comes down at once", ScalePolicy(autoscaling=AUTO),
     ScaleState(9, {"r1": report(100, reported=1)}), 5, "ScaledDown", None),
    ("autoscaling never goes to zero without keepAlive", ScalePolicy(autoscaling=AUTO),
     ScaleState(1, {}, loaded_since=ago(99999)), 1, "", None),
    ("keepAlive and autoscaling: idle goes to zero", ScalePolicy(keep_alive_s=30, autoscaling=AUTO),
     ScaleState(3, {"r1": report(0, last=40, reported=40)}, loaded_since=ago(900)), 0, "ScaledToZero", None),
    ("keepAlive and autoscaling: from zero straight to what the held load needs", ScalePolicy(keep_alive_s=30, autoscaling=AUTO),
     ScaleState(0, {"r1": report(9, reported=1, held=9)}), 3, "ScaledFromZero", None),
    ("keepAlive and autoscaling: lower load rechecks at the earlier of both", ScalePolicy(keep_alive_s=30, autoscaling=AUTO),
     ScaleState(3, {"r1": report(0, last=10, reported=10)}, loaded_since=ago(900), scale_down_since=ago(50)), 3, "", 10),
]


@pytest.mark.parametrize("case, policy, state, replicas, reason, recheck", CASES, ids=[c[0] for c in CASES])
def test_scale_decision(case: str, policy: ScalePolicy, state: ScaleState, replicas: int, reason: str,
                        recheck: float | None) -> None:
    decision = decide(policy, state, NOW)
    assert (decision.replicas, decision.reason) == (replicas, reason)
    assert decision.recheck_after_s == pytest.approx(recheck) if recheck is not None else decision.recheck_after_s is None
    assert bool(decision.message) == bool(reason)


def test_scale_to_zero_says_why_and_that_the_weights_stay() -> None:
    decision = decide(KEEP_30S, ScaleState(1, {"r1": report(0, last=95, reported=95)}, loaded_since=ago(900)), NOW)
    assert "no request for 1m35s (keepAlive 30s)" in decision.message
    assert "the weights stay" in decision.message


def test_scale_down_since_is_kept_while_waiting_and_cleared_when_load_returns() -> None:
    policy = ScalePolicy(autoscaling=AUTO)
    waiting = decide(policy, ScaleState(3, {"r1": report(4, reported=1)}), NOW)
    assert waiting.scale_down_since == NOW
    back = decide(policy, ScaleState(3, {"r1": report(12, reported=1)}, scale_down_since=ago(30)), NOW)
    assert back.scale_down_since is None
    assert status_fields(back, {"scaleDownSince": format_time(ago(30))}) == {"scaleDownSince": None}
    assert status_fields(waiting, {}) == {"scaleDownSince": format_time(NOW)}
    assert status_fields(waiting, {"scaleDownSince": format_time(NOW)}) == {}


def test_silent_routers_are_folded_into_last_request_time_and_removed() -> None:
    reports = {"gone": report(0, last=PRUNE_AFTER_S + 100, reported=PRUNE_AFTER_S + 50), "alive": report(0, last=5, reported=5)}
    decision = decide(ScalePolicy(), ScaleState(1, reports, last_request=ago(PRUNE_AFTER_S + 500)), NOW)
    assert decision.prune == ("gone",)
    assert status_fields(decision, {}) == {
        "activity": {"gone": None}, "lastRequestTime": format_time(ago(PRUNE_AFTER_S + 100))}


def test_scale_state_reads_what_routers_and_the_operator_wrote() -> None:
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns"},
        "spec": {"replicas": 2, "keepAlive": "5m", "autoscaling": {"minReplicas": 1, "maxReplicas": 3,
                                                                  "targetInFlight": 2, "scaleDownDelay": "1m"}},
        "status": {
            "activity": {"router-a": {"inFlight": 3, "lastRequestTime": "2030-01-01T11:59:50Z",
                                      "reportedAt": "2030-01-01T11:59:58Z"}},
            "lastRequestTime": "2030-01-01T10:00:00Z",
            "scaleDownSince": "2030-01-01T11:59:00Z",
            "conditions": [{"type": "Loaded", "status": "True", "lastTransitionTime": "2030-01-01T11:00:00Z"}],
        },
    }
    state = scale_state(body, "Loaded")
    assert state.replicas == 2
    assert state.reports["router-a"] == report(3, last=10, reported=2)
    assert state.last_request == ago(7200)
    assert state.loaded_since == ago(3600)
    assert state.scale_down_since == ago(60)
    assert ScalePolicy.from_spec(body["spec"]) == ScalePolicy(300, Autoscaling(1, 3, 2, 60))
    assert ScalePolicy.from_spec({"keepAlive": "-1"}) == ScalePolicy()
