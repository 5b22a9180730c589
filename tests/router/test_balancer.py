"""Least-in-flight choice, exclusion of tried endpoints, and back-off on Retry-After."""

from __future__ import annotations

import pytest

from localmodel_server.router.balancer import MAX_COOLDOWN_S, Balancer, NoEndpoint, parse_retry_after
from support.fake_clock import Clock

A, B, C = "http://a:1", "http://b:1", "http://c:1"


def test_picks_the_endpoint_with_fewest_requests_in_flight():
    balancer = Balancer()
    balancer.state(A).in_flight = 3
    balancer.state(B).in_flight = 1
    balancer.state(C).in_flight = 2
    assert balancer.pick([A, B, C]).url == B


def test_ties_are_spread_over_all_endpoints():
    balancer = Balancer()
    picked = {balancer.pick([A, B, C]).url for _ in range(6)}
    assert picked == {A, B, C}


def test_tried_endpoints_are_skipped_and_exhaustion_is_reported():
    balancer = Balancer()
    assert balancer.pick([A, B], exclude=[A]).url == B
    with pytest.raises(NoEndpoint) as caught:
        balancer.pick([A, B], exclude=[A, B])
    assert caught.value.retry_after is None


def test_cooling_endpoint_gets_no_requests_until_its_retry_after_passed():
    clock = Clock()
    balancer = Balancer(clock)
    balancer.cool_down(A, 5, "asked to wait")
    assert {balancer.pick([A, B]).url for _ in range(4)} == {B}
    with pytest.raises(NoEndpoint) as caught:
        balancer.pick([A])
    assert caught.value.retry_after == pytest.approx(5)
    assert caught.value.reason == "asked to wait"
    clock.now += 5.1
    assert balancer.pick([A]).url == A


def test_cool_down_is_capped():
    clock = Clock()
    balancer = Balancer(clock)
    balancer.cool_down(A, 86400, "long")
    clock.now += MAX_COOLDOWN_S + 0.1
    assert balancer.pick([A]).url == A


def test_forget_drops_idle_endpoints_but_keeps_busy_ones():
    balancer = Balancer()
    balancer.state(A).in_flight = 1
    balancer.cool_down(B, 30, "x")
    balancer.forget_except({C})
    assert balancer.state(A).in_flight == 1
    assert balancer.state(B).cooldown_until == 0.0  # forgotten, so fresh


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), (" 0 ", 0.0), ("-1", None), ("soon", None), ("", None), (None, None),
     ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0)],
)
def test_parse_retry_after(header, seconds):
    now = 1445412480.0  # 07:28:00 GMT that day
    assert parse_retry_after(header, now=lambda: now) == seconds
